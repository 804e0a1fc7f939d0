"""The public face: django-q's task-group API, with the fixes of docs/contract.md.

Split by concern, one module each, imports going down the list:

- :mod:`.session`: one kernel's state (settings, runner, submission defaults,
  options memo, listeners) in :data:`SESSION`, and the seams of the edge;
- :mod:`.submit`: ``async_task``, ``async_iter``, ``sweep``;
- :mod:`.manage`: ``delete_group``, ``cancel_group``, ``retry_group``, ``resume_group``;
- :mod:`.read`: ``Task``, ``fetch``, ``result``, ``result_group``, ``fetch_group``,
  ``count_group``, ``group_counts``, ``list_groups``;
- :mod:`.handle`: ``AsyncTask``;
- :mod:`.rerun`: ``debug`` (a stored call run again in the kernel).

Everything validates its arguments at the call (before anything is stored),
then talks to the kernel's :class:`~nbgroups.runner.Runner` (to submit and to
wait) and to the store (to read). This module only gathers the names.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from .handle import AsyncTask
from .manage import cancel_group, delete_group, resume_group, retry_group
from .read import (
    Task,
    count_group,
    failed_tasks,
    fetch,
    fetch_group,
    group_counts,
    list_groups,
    result,
    result_group,
)
from .rerun import debug
from .session import SESSION, Session
from .submit import async_iter, async_task, sweep

__all__ = [
    "SESSION", "AsyncTask", "Session", "Task", "async_iter", "async_task", "cancel_group",
    "configure", "count_group", "debug", "default_group", "delete_group", "failed_tasks",
    "fetch",
    "fetch_group", "group_counts", "list_groups", "reset", "result", "result_group",
    "resume_group", "retry_group", "runner", "settings", "sweep",
]

SESSION.record_class = Task  # hooks get the api's Task, with its group helpers

# The session's methods as the module's functions (bound once: SESSION is never replaced).
settings = SESSION.settings
runner = SESSION.runner
default_group = SESSION.default_group
reset = SESSION.reset


def configure(**changes: Any) -> Settings:
    """Change this kernel's settings; returns the settings now in force.

    Tasks already running finish on the previous runner. A setting not given
    keeps its value; each has an environment variable ``NBGROUPS_<NAME>``,
    read once, when the first settings of the process are made.

    Args:
        store: directory of the durable store (default ``./.nbgroups``).
        workers: worker processes (or threads); default: the number of CPUs.
        backend: ``'loky'`` (processes, the default), ``'thread'``, ``'sync'``
            (inline) or ``'dask'``.
        progress: ``'auto'`` (a widget in a notebook, a text line elsewhere),
            ``'widget'``, ``'text'`` or ``False``.
        timeout: default per-task timeout in seconds (``None``: no limit).
        retries: default number of re-runs of a failed task.
        cached: default of the ``cached`` option.
        cache_ttl: seconds a ``cached=True`` result lives (default 3600).
        reuse: default of the ``reuse`` option.
        address: the Dask scheduler's address (``backend='dask'``).
        client: a ``distributed.Client`` to use instead of ``address``.
        capture: keep each task's stdout, stderr, logging and warnings
            (``Task.stdout``, ``Task.stderr``; default True).
        log_level: the lowest logging level captured (default ``'INFO'``).
        live_output: also show running tasks' output in their group's progress
            view as they write it, rate-limited (default False).
        large_value: bytes (default 1 MiB): an argument holding a buffer this
            large (an array, a DataFrame's columns) is stored once in the
            store by content digest and memory-mapped, read-only, by the
            workers, instead of being pickled with every call; ``None`` turns
            that off.

    Returns:
        The new settings (a frozen dataclass; :func:`settings` returns it too).

    Raises:
        ArgumentTypeError: an unknown setting, or a value of the wrong type.
        ConfigurationError: a value out of range, ``backend='dask'`` without
            distributed installed, or a scheduler that cannot be reached.
        StoreError: the store directory cannot be used.

    Example:
        >>> import nbgroups
        >>> nbgroups.configure(workers=2).workers
        2
        >>> nbgroups.configure(backend='threads')
        Traceback (most recent call last):
        ...
        nbgroups.errors.ConfigurationError: backend must be one of [...], got 'threads'
    """
    return SESSION.configure(**changes)
