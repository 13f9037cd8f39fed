-- Schema v4: one row version per attempt (see the PostgreSQL file). An attempt's record
-- in onceq_attempts is written once, when the attempt ends; while it runs, the job row
-- holds it, and a job row keeps `worker`, its last holder. No table changes here (SQLite
-- rewrites an index entry only when its column changes, so the key index stays whole):
-- the version makes an older onceq refuse the file.
SELECT 1;
