"""What a worker does besides running jobs, for a store that runs for months: periodic
tasks (periodic.py, cron.py), retention (retention.py) and SQLite upkeep (upkeep.py),
each a service with `run_once(now)`, run together on one thread (ticker.py)."""
