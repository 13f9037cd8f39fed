"""Every error onceq raises on purpose, so callers can catch one base class.

Each message is one line that names the problem; the CLI prints it as is.
"""

from __future__ import annotations


class OnceqError(Exception):
    """Base class of every error onceq raises on purpose."""


class ConfigError(OnceqError):
    """The store URL or a setting is wrong, or the store cannot be reached."""


class StoreUnavailable(OnceqError):
    """The database could not be reached or is too busy: worth trying again later.
    Nothing the call would have written was committed."""


class OutcomeUnknown(StoreUnavailable):
    """The connection was lost while the database committed (or not): the answer never
    came. Before the store runs anything else it makes sure that transaction is over, one
    way or the other, so what it reads next tells what committed; onceq's own writes can
    be sent again safely (a re-sent completion answers "already recorded")."""


class SchemaError(OnceqError):
    """The database schema is missing, or newer than this version of onceq."""


class PayloadError(OnceqError, ValueError):
    """A payload or result is not JSON, or does not fit the handler's signature."""


class UnknownTask(OnceqError, LookupError):
    """A task name that the app does not register."""


class JobNotFound(OnceqError, LookupError):
    """No job has this id."""


class RunNotFound(OnceqError, LookupError):
    """No workflow run has this id."""


class InvalidTransition(OnceqError):
    """An operator action that the job's current status does not allow."""


class WorkflowError(OnceqError, ValueError):
    """A workflow definition is invalid (checked before anything is enqueued)."""


class JobTimeout(OnceqError, TimeoutError):
    """A handler ran past its task's timeout."""


class LeaseLost(OnceqError):
    """The worker's lease on a job was taken away (expired and rescued, or cancelled)."""


class BatchError(OnceqError, ValueError):
    """A batch file, its repository or its agent is not usable (checked before anything
    is created)."""
