"""The public face: django-q's task-group API, with DESIGN.md's fixes.

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

    Keywords: ``store`` (directory), ``workers``, ``backend`` (``'loky'``,
    ``'thread'``, ``'sync'``, ``'dask'``), ``progress`` (``'auto'``,
    ``'widget'``, ``'text'``, ``False``), defaults for ``timeout``,
    ``retries``, ``cached``, ``reuse``, and ``cache_ttl``, ``address``,
    ``client`` (Dask), ``capture`` (each task's output kept, default True) and
    ``log_level`` (the lowest logging level captured, ``'INFO'``). Each has an
    environment variable ``NBGROUPS_<NAME>``.
    Tasks already running finish on the previous runner.

    >>> configure(backend="sync", store=str(tmp_store)).backend
    'sync'
    """
    return SESSION.configure(**changes)
