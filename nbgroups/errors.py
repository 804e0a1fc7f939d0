"""The one error tree of nbgroups.

Every error nbgroups raises derives from :class:`NbgroupsError` and mixes in
the built-in exception that fits, so ``except ValueError`` still works for
callers who do not know nbgroups.
"""

from __future__ import annotations


class NbgroupsError(Exception):
    """Base class of every nbgroups error.

    Each subclass also derives from the built-in exception that fits
    (``ValueError``, ``TypeError``, ``OSError``, ``TimeoutError``), so
    ``except ValueError`` works for callers who do not know nbgroups.

    Example:
        >>> import nbgroups
        >>> try:
        ...     nbgroups.result_group('doc-errors', wait=-5)
        ... except nbgroups.NbgroupsError as exc:
        ...     print(type(exc).__name__, '-', exc)
        ConfigurationError - wait must be >= 0 milliseconds, or -1 to wait without limit, got -5
    """


class ConfigurationError(NbgroupsError, ValueError):
    """An argument, a setting or a submission option has a value nbgroups does not
    accept. Also a ``ValueError``.

    Example:
        >>> from nbgroups import async_task
        >>> async_task('math.floor', 1.5, retries=-1)
        Traceback (most recent call last):
        ...
        nbgroups.errors.ConfigurationError: retries must be an int >= 0, got -1
    """


class ArgumentTypeError(NbgroupsError, TypeError):
    """An argument, a setting or a submission option has a type nbgroups does not
    accept. Also a ``TypeError``.

    Example:
        >>> from nbgroups import count_group
        >>> count_group(42)
        Traceback (most recent call last):
        ...
        nbgroups.errors.ArgumentTypeError: group_id must be a non-empty str, got int 42
    """


class UnresolvedPath(NbgroupsError, LookupError):
    """A dotted path (``'package.module.attr'``) names nothing importable (the
    task that named it fails with this, in its worker)."""


class RunnerClosed(NbgroupsError, RuntimeError):
    """A submission reached a runner that was closed."""


class UnknownTasks(NbgroupsError, LookupError):
    """Task ids were given that the store does not know (and no kernel here runs).
    Also a ``LookupError``.

    Example:
        >>> from nbgroups import UnknownTasks, as_completed
        >>> try:
        ...     as_completed(['0' * 32])
        ... except UnknownTasks:
        ...     print('unknown')
        unknown
    """


class OrphanedTasks(NbgroupsError, RuntimeError):
    """Unfinished tasks whose kernel is gone: nobody will finish them until
    ``nbgroups.resume_group`` runs them again. Also a ``RuntimeError``.

    Example:
        >>> from nbgroups import OrphanedTasks, NbgroupsError
        >>> issubclass(OrphanedTasks, NbgroupsError) and issubclass(OrphanedTasks, RuntimeError)
        True
    """


class ExecutorShutdown(NbgroupsError, RuntimeError):
    """A call was submitted to an :class:`~nbgroups.Executor` after its ``shutdown()``.
    Also a ``RuntimeError``, as ``concurrent.futures`` raises there.

    Example:
        >>> from nbgroups import Executor, ExecutorShutdown
        >>> ex = Executor(group='doc-shutdown')
        >>> ex.shutdown()
        >>> try:
        ...     ex.submit(abs, -1)
        ... except ExecutorShutdown:
        ...     print('refused')
        refused
    """


class StoreError(NbgroupsError, OSError):
    """The store directory cannot be used (not writable, a file, a corrupt
    database, ...). Also an ``OSError``.

    Example:
        >>> import nbgroups, tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     nbgroups.configure(store=f.name)
        Traceback (most recent call last):
        ...
        nbgroups.errors.StoreError: cannot use store directory '...': it is a file, ...
    """


class ValueMissing(StoreError, FileNotFoundError):
    """A large argument stored once in the store (``large_value``) is missing
    there: its file was removed outside nbgroups. The tasks that take it fail
    with this error, naming the value and the file; nothing else is affected.
    Also a ``FileNotFoundError``.

    Example:
        >>> import nbgroups
        >>> issubclass(nbgroups.ValueMissing, nbgroups.StoreError)
        True
    """


class SerializationError(NbgroupsError, TypeError):
    """A callable or an argument cannot be pickled to be sent to a worker. Also a
    ``TypeError``.

    A callable that cannot be pickled raises it at the call, and nothing is
    stored; an argument that cannot be pickled fails its own task (whose result
    is this error) and nothing else.

    Example:
        >>> import threading
        >>> from nbgroups import async_task
        >>> lock = threading.Lock()
        >>> async_task(lambda: lock.locked())
        Traceback (most recent call last):
        ...
        nbgroups.errors.SerializationError: func ... cannot be pickled to be sent to a worker ...
    """


class SignatureError(NbgroupsError, ValueError):
    """A stored entry failed HMAC verification; it was not unpickled. Also a
    ``ValueError``.

    Raised by any read that meets a planted or tampered entry, or one written
    with another key (``~/.config/nbgroups/secret.key`` or ``NBGROUPS_SECRET``):
    nbgroups refuses such a store rather than skip entries silently.

    Example:
        >>> import nbgroups
        >>> issubclass(nbgroups.SignatureError, ValueError)
        True
    """


class TaskError(NbgroupsError):
    """A task failed and its own exception could not be carried back.

    Holds the original exception's type name, message and traceback text, so
    that a failure is readable even when the exception object does not pickle
    or cannot be rebuilt in this process. The base of :class:`TaskTimeout`,
    :class:`WorkerDied` and :class:`TaskCancelled`.

    Args:
        type_name: the original exception's class name.
        message: its message.
        traceback: the traceback text, from the worker.

    Example:
        >>> from nbgroups import TaskError
        >>> err = TaskError('KeyError', "'alpha'")
        >>> str(err), err.type_name
        ("KeyError: 'alpha'", 'KeyError')
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self):
        return (type(self), (self.type_name, self.message, self.traceback))


class TaskTimeout(TaskError, TimeoutError):
    """A task ran longer than its ``timeout`` and its worker was replaced. Also a
    ``TimeoutError``; it is the failed task's result.

    Example:
        >>> import time
        >>> from nbgroups import async_task, result
        >>> print(result(async_task(time.sleep, 10, timeout=0.5), wait=-1))
        TaskTimeout: the task ran longer than its timeout of 0.5 s; its worker was replaced
    """

    def __init__(self, type_name: str = "TaskTimeout", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


class WorkerDied(TaskError):
    """The worker process running a task died (a signal, ``os._exit``, the
    out-of-memory killer); the failed task's result. Only that task fails: the
    rest of its group runs on a fresh pool.

    Example:
        >>> from nbgroups import async_task, result
        >>> print(result(async_task('os._exit', 3), wait=-1))
        WorkerDied: the worker process (pid ...) running this task died: it exited with code 3
    """

    def __init__(self, type_name: str = "WorkerDied", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


class TaskCancelled(TaskError):
    """The error type of a cancelled task.

    Reserved: :func:`cancel_group` records a cancelled task with the state
    ``cancelled`` and the result ``None``; nbgroups does not raise this class
    today.

    Example:
        >>> from nbgroups import TaskCancelled, TaskError
        >>> issubclass(TaskCancelled, TaskError)
        True
    """

    def __init__(self, type_name: str = "TaskCancelled", message: str = "", traceback: str = ""):
        super().__init__(type_name, message, traceback)


# ---------------------------------------------------------------- warnings
# Warnings are not errors, but they are nbgroups' too: one place to find (and
# filter) everything nbgroups may say.
class NbgroupsWarning(UserWarning):
    """Base class of every nbgroups warning: filter them all with it.

    Example:
        >>> import nbgroups
        >>> issubclass(nbgroups.ReuseWarning, nbgroups.NbgroupsWarning)
        True
    """


class ReuseWarning(NbgroupsWarning):
    """A call could not be keyed for ``reuse=True`` (an argument that is a lock, an
    open file, a generator...); it ran as usual, without reuse. Issued once per
    reason.

    Example:
        >>> import warnings
        >>> import nbgroups
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter('ignore', nbgroups.ReuseWarning)
    """
