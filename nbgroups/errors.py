"""The one error tree of nbgroups.

Every error nbgroups raises derives from :class:`NbgroupsError` and mixes in
the built-in exception that fits, so ``except ValueError`` still works for
callers who do not know nbgroups.
"""

from __future__ import annotations


class NbgroupsError(Exception):
    """Base class of every nbgroups error."""


class ConfigurationError(NbgroupsError, ValueError):
    """An argument, a setting or a submission option has a value nbgroups does not accept."""


class ArgumentTypeError(NbgroupsError, TypeError):
    """An argument, a setting or a submission option has a type nbgroups does not accept."""


class UnresolvedPath(NbgroupsError, LookupError):
    """A dotted path (``'package.module.attr'``) names nothing importable (the
    task that named it fails with this, in its worker)."""


class RunnerClosed(NbgroupsError, RuntimeError):
    """A submission reached a runner that was closed."""


class UnknownTasks(NbgroupsError, LookupError):
    """Task ids were given that the store does not know (and no kernel here runs)."""


class OrphanedTasks(NbgroupsError, RuntimeError):
    """Unfinished tasks whose kernel is gone: nobody will finish them until
    ``nbgroups.resume_group`` runs them again."""


class ExecutorShutdown(NbgroupsError, RuntimeError):
    """A call was submitted to an :class:`~nbgroups.Executor` after its ``shutdown()``."""


class StoreError(NbgroupsError, OSError):
    """The store directory cannot be used (not writable, corrupt database, ...)."""


class SerializationError(NbgroupsError, TypeError):
    """A callable or an argument cannot be pickled to be sent to a worker."""


class SignatureError(NbgroupsError, ValueError):
    """A stored entry failed HMAC verification; it was not unpickled."""


class TaskError(NbgroupsError):
    """A task failed and its own exception could not be carried back.

    Holds the original exception's type name, message and traceback text, so
    that a failure is readable even when the exception object does not pickle
    or cannot be rebuilt in this process.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self):
        return (type(self), (self.type_name, self.message, self.traceback))


class TaskTimeout(TaskError, TimeoutError):
    """A task ran longer than its ``timeout`` and its worker was replaced."""

    def __init__(self, type_name: str = "TaskTimeout", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


class WorkerDied(TaskError):
    """The worker process running a task died (signal, ``os._exit``, OOM kill)."""

    def __init__(self, type_name: str = "WorkerDied", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


class TaskCancelled(TaskError):
    """A task was cancelled before it started."""

    def __init__(self, type_name: str = "TaskCancelled", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


# ---------------------------------------------------------------- warnings
# Warnings are not errors, but they are nbgroups' too: one place to find (and
# filter) everything nbgroups may say.
class NbgroupsWarning(UserWarning):
    """Base class of every nbgroups warning."""


class ReuseWarning(NbgroupsWarning):
    """A call could not be keyed for ``reuse=True``; it ran as usual."""
