"""The worker-side modules: one app per system, each handler writing to the ledger.

Worker processes import these as `apps.<system>_app` with benchmarks/peers as their
working directory (and on PYTHONPATH); the harness imports them to enqueue.
"""
