"""nbgroups: parallel task groups for Jupyter notebooks.

Submit calls from a notebook (``async_task``, ``async_iter``, ``sweep``), let a
loky process pool run them, find every result again in a durable store keyed
by group (``result_group``, ``fetch_group``, ``count_group``...), and watch each
group's progress live in the cell. ``%load_ext nbgroups`` adds magics.
``Executor`` and ``as_completed`` serve code written for ``concurrent.futures``,
``aresult_group`` and its twins are awaitable, and ``import nbgroups.joblib_backend``
registers the joblib backend ``'nbgroups'`` (docs/guide/futures.md).

``import nbgroups`` stays light: IPython and ipywidgets load only when a
progress view or the extension is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ArgumentTypeError,
    ConfigurationError,
    ExecutorShutdown,
    NbgroupsError,
    NbgroupsWarning,
    OrphanedTasks,
    ReuseWarning,
    SerializationError,
    SignatureError,
    StoreError,
    TaskCancelled,
    TaskError,
    TaskTimeout,
    UnknownTasks,
    ValueMissing,
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
    loaded = importlib.import_module(f".{module}", __name__)
    if module == "api" and not _script_decided:
        loaded.SESSION.on_submit(_script_progress)  # once: on_submit ignores a repeat
    value = getattr(loaded, name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


_script_decided = False  # _script_progress looked at this process once


def _script_progress(group: str | None, ttl: int | None) -> None:
    """A script whose stderr is a terminal shows the text progress of each group it
    submits to, as ``%load_ext nbgroups`` does in a notebook (the README's "a text
    line on stderr where there is no widget frontend"). Not in an interactive
    session (its prompt would be drawn over), nor where IPython runs (the extension
    decides there), nor on a log file or pipe unless ``progress='text'``."""
    from . import api

    global _script_decided
    # decided once, at the first submission; off again if a later lazy lookup
    # of an api name registered it again (it then cost two imports per call)
    api.SESSION.off_submit(_script_progress)
    if _script_decided:
        return
    _script_decided = True

    import sys

    mode = api.settings().progress
    if mode not in ("auto", "text") or hasattr(sys, "ps1") or sys.flags.interactive:
        return
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        return
    stderr = sys.stderr
    try:
        tty = stderr is not None and stderr.isatty()
    except ValueError:  # closed
        tty = False
    if not tty and mode != "text":
        return
    from .display import state

    auto = state().auto
    auto.enable(None)
    auto(group, ttl)


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
    "ExecutorShutdown",
    "GroupCounts",
    "NbgroupsError",
    "NbgroupsWarning",
    "OrphanedTasks",
    "ReuseWarning",
    "SerializationError",
    "SignatureError",
    "State",
    "StoreError",
    "TaskCancelled",
    "TaskError",
    "TaskTimeout",
    "UnknownTasks",
    "ValueMissing",
    "WorkerDied",
]


def progress(group_id: str, **kwargs: Any):
    """Show the live progress view of a group in the cell, or return it.

    The view is an ipywidgets widget in a notebook (a bar, done/failed/running/
    queued counts, elapsed time and ETA, the failures with their tracebacks,
    Cancel and Retry-failed buttons), a text line on stderr elsewhere.

    Args:
        group_id: the group.
        display: ``False`` returns the view instead of displaying it; a returned
            view displays itself when it is a cell's value.
        mode: ``'widget'``, ``'text'`` or ``'auto'`` (default: the ``progress``
            setting).
        cached: the group of the cache layer.
        stream: the text view's stream (default ``sys.stderr``).

    Returns:
        ``None``, or the view with ``display=False``.

    Raises:
        ArgumentTypeError: ``group_id`` is not a string.

    Example:
        >>> import io
        >>> import nbgroups
        >>> view = nbgroups.progress('doc-progress', display=False, mode='text',
        ...                          stream=io.StringIO())
        >>> view.group
        'doc-progress'
    """
    from .display import progress as _progress

    return _progress(group_id, **kwargs)


def load_ipython_extension(ipython) -> None:
    """``%load_ext nbgroups``: magics and automatic progress display."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
