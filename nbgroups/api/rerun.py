"""``debug()``: a stored task's call run again here, in the kernel, so that its
exception is raised in the notebook and ``%debug`` / pdb work on it (like
dask's ``recreate_error_locally``)."""

from __future__ import annotations

import types
from typing import Any

from .. import values
from ..errors import ArgumentTypeError, ConfigurationError
from ..records import TaskRecord
from ..tracebacks import with_origins
from ..worker import resolve
from .read import fetch
from .session import SESSION


def debug(task_or_id: TaskRecord | str, cached: bool | int = False) -> Any:
    """Run a task's call again, here and now, with the same arguments.

    ``task_or_id`` is a task record, a task id or a task name. The call runs in
    this kernel's thread, nothing is stored, and what it raises is raised
    here: run ``%debug`` in the next cell (or wrap the call in
    ``pdb.runcall``) to step through it, with the source of functions defined
    in the notebook's cells. Returns what the call returns (for an
    ``async_iter`` task, the list of its items' results).

    >>> import nbgroups
    >>> try:
    ...     nbgroups.debug(42)  # not a task: the error names what is accepted
    ... except TypeError as exc:
    ...     print(type(exc).__name__)
    ArgumentTypeError
    """
    if isinstance(task_or_id, TaskRecord):
        tid = task_or_id.id
    elif isinstance(task_or_id, str):
        task = fetch(task_or_id, cached=cached)
        if task is None:
            raise ConfigurationError(f"debug(): task_or_id {task_or_id!r} names no stored task "
                                     "(a task id, a task name or a task record is accepted)")
        tid = task.id
    else:
        raise ArgumentTypeError(f"debug(): task_or_id must be a task record, a task id or a "
                                f"task name (str), got {type(task_or_id).__name__}")
    found = SESSION.runner().store_for(SESSION.layer(cached)).call_of(tid)
    if found is None:
        raise ConfigurationError(f"debug(): the task {tid!r} is no longer stored")
    name, blob, args, kwargs, iterable = found
    if args is None and kwargs is None and not iterable:
        raise ConfigurationError(f"debug(): the arguments of task {tid!r} were not kept "
                                 "(keep_args=False), so its call cannot be made again")
    store = SESSION.runner().store
    src = None if store.values is None else values.source(store.values.directory)
    if src is not None:  # large arguments stored by digest: loaded, read-only
        if iterable:
            args = values.resolve_items(args, src)
        else:
            args, kwargs = values.resolve_call(args or (), kwargs, src)
    # (a function's large captured values, stored by digest, are loaded from the store)
    func = resolve(name) if blob is None else _with_sources(values.load_func(blob, src))
    if iterable:
        return [func(*item) if isinstance(item, tuple) else func(item) for item in args]
    return func(*(args or ()), **(kwargs or {}))


def _with_sources(func: Any) -> Any:
    """A function unpickled here, its code named after the cells it came from
    (cloudpickle names it ``<dynamic-code>``): pdb then shows its source."""
    if isinstance(func, types.FunctionType):
        func.__code__ = with_origins(func.__code__)
    return func
