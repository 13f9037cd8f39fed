"""Workers: claim jobs for free slots, run them, keep their leases, record outcomes."""

from onceq.worker.dispatcher import Worker

__all__ = ["Worker"]
