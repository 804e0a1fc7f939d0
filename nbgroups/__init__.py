"""nbgroups: parallel task groups for Jupyter notebooks.

Submit calls from a notebook (``async_task``, ``async_iter``, ``sweep``), let a
loky process pool run them, find every result again in a durable store keyed
by group (``result_group``, ``fetch_group``, ``count_group``...), and watch each
group's progress live in the cell. ``%load_ext nbgroups`` adds magics.
``Executor`` and ``as_completed`` serve code written for ``concurrent.futures``,
``aresult_group`` and its twins are awaitable, and ``import nbgroups.joblib_backend``
registers the joblib backend ``'nbgroups'`` (docs/futures.md).

``import nbgroups`` stays light: IPython and ipywidgets load only when a
progress view or the extension is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ArgumentTypeError,
    ConfigurationError,
    NbgroupsError,
    NbgroupsWarning,
    ReuseWarning,
    SerializationError,
    SignatureError,
    StoreError,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    WorkerDied,
)

if TYPE_CHECKING:  # what the names below resolve to, for editors and type checkers
    from .aio import afetch, afetch_group, aresult, aresult_group
    from .api import (
        AsyncTask,
        Task,
        async_iter,
        async_task,
        cancel_group,
        configure,
        count_group,
        debug,
        delete_group,
        fetch,
        fetch_group,
        group_counts,
        list_groups,
        result,
        result_group,
        resume_group,
        retry_group,
        settings,
        sweep,
    )
    from .completed import as_completed
    from .futures import Executor
    from .records import GroupCounts, State, TaskList
    from .reporting import report

# The API loads on first use, not with the package: every pool worker imports
# ``nbgroups.worker``, hence this file, and a worker needs none of the API
# (its import cost ~60 ms of the first result on a cold kernel).
_LAZY = {
    **dict.fromkeys(
        ["AsyncTask", "Task", "async_iter", "async_task", "cancel_group", "configure",
         "count_group", "debug", "delete_group", "fetch", "fetch_group", "group_counts",
         "list_groups", "result", "result_group", "resume_group", "retry_group",
         "settings", "sweep"], "api"),
    **dict.fromkeys(["GroupCounts", "State", "TaskList"], "records"),
    "report": "reporting",
    "Executor": "futures",
    "as_completed": "completed",
    **dict.fromkeys(["afetch", "afetch_group", "aresult", "aresult_group"], "aio"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbgroups' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    # submitting
    "AsyncTask",
    "async_iter",
    "async_task",
    "sweep",
    # reading
    "Task",
    "TaskList",
    "count_group",
    "fetch",
    "fetch_group",
    "group_counts",
    "list_groups",
    "result",
    "result_group",
    # looking inside
    "debug",
    "report",
    # concurrent.futures and asyncio
    "Executor",
    "afetch",
    "afetch_group",
    "aresult",
    "aresult_group",
    "as_completed",
    # managing
    "cancel_group",
    "delete_group",
    "resume_group",
    "retry_group",
    # settings and display
    "configure",
    "progress",
    "settings",
    # values and errors
    "ArgumentTypeError",
    "ConfigurationError",
    "GroupCounts",
    "NbgroupsError",
    "NbgroupsWarning",
    "ReuseWarning",
    "SerializationError",
    "SignatureError",
    "State",
    "StoreError",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "WorkerDied",
]


def progress(group_id: str, **kwargs: Any):
    """Display (or return) the live progress view of a group."""
    from .display import progress as _progress

    return _progress(group_id, **kwargs)


def load_ipython_extension(ipython) -> None:
    """``%load_ext nbgroups``: magics and automatic progress display."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
