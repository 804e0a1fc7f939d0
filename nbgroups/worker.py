"""Worker side: run a batch of calls and report how each one ended. Never raises.

A batch arrives as one cloudpickled payload ``(batch_id, funcs, calls)``:

* ``funcs``: ``[(display name, pickled callable or None)]`` — None means the
  name is a dotted path resolved here (``'math.modf'``);
* ``calls``: ``[(task id, func index, args, kwargs, iterable, attempts)]`` —
  for an ``async_iter`` chunk ``iterable`` is true and ``args`` is the list of
  items; ``attempts`` is the run's number, echoed back.

It returns one row per call, in order, already in the store's outcome layout
(built by :mod:`nbgroups.outcome`): ``result`` is the pickled return value
(for a chunk, the pickled list of the items' results, exceptions in place of
failures) and ``error`` the pickled exception. The runner stores these rows
as they come: no per-call rebuilding in the kernel. Every failure — an exception, an unpicklable
result, a dotted path that does not resolve — becomes data.

``monitor`` (optional) is a file the worker stamps before each call with
``(batch id, call index, pid, start time)``: if the process dies, the runner
reads it to learn which call killed the worker and which calls of the batch
never ran.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from . import monitor as monitor_file
from . import outcome
from .errors import ArgumentTypeError, TaskError, UnresolvedPath
from .serialize import dumps_result, loads

_func_cache: dict[str | bytes, Any] = {}  # callables of recent batches, loaded once


def init_worker() -> None:
    """Pool initializer: ignore the kernel's SIGINT (Jupyter interrupts the whole
    process group; a worker must neither die nor print a traceback for it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resolve(path: str) -> Any:
    """Import ``'package.module.attr'`` (attributes may be nested)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    if len(parts) == 1:
        import builtins

        return getattr(builtins, path)
    raise UnresolvedPath(f"no module found for {path!r}")


def _load_func(name: str, blob: bytes | None) -> Any:
    key = name if blob is None else blob  # a dotted path, or the pickled callable
    func = _func_cache.get(key)
    if func is not None:
        return func
    if blob is None:
        try:
            func = resolve(name)
        except (ImportError, AttributeError, UnresolvedPath) as exc:
            raise UnresolvedPath(f"cannot resolve dotted path {name!r}: {exc}") from None
        if not callable(func):
            raise ArgumentTypeError(
                f"dotted path {name!r} names a {type(func).__name__}, not a callable")
    else:
        func = loads(blob)
    if len(_func_cache) > 64:
        _func_cache.clear()
    _func_cache[key] = func
    return func


def run_one(call: tuple, funcs: list, loaded: dict, passthrough: tuple = ()) -> tuple:
    """One call of a batch (``loaded``: the batch's callables loaded so far)."""
    key, fidx, args, kwargs, iterable, attempts = call
    try:
        func = loaded.get(fidx)
        if func is None:
            func = loaded[fidx] = _load_func(*funcs[fidx])
    except BaseException as exc:
        return outcome.failure(key, attempts, None, exc)
    if iterable:
        return run_items(key, attempts, func, args, passthrough)
    return run_call(key, attempts, func, args, kwargs, passthrough)


def run_call(key: str, attempts: int, func: Callable[..., Any], args: tuple,
             kwargs: dict | None, passthrough: tuple = ()) -> tuple:
    """One call: its outcome tuple (the result pickled, or the failure)."""
    started = time.time()
    try:
        value = func(*args, **(kwargs or {}))
    except passthrough:
        raise
    except BaseException as exc:  # a task's own SystemExit is a failure too
        return outcome.failure(key, attempts, started, exc)
    try:
        blob = dumps_result(value)
    except BaseException as exc:  # whatever pickling the result raises
        return outcome.failure(key, attempts, started, exc)
    return outcome.success(key, attempts, started, blob)


def run_items(key: str, attempts: int, func: Callable[..., Any], items: list,
              passthrough: tuple = ()) -> tuple:
    """An ``async_iter`` chunk: results in input order, exceptions in place."""
    started = time.time()
    results: list = []
    first: BaseException | None = None
    for item in items:
        try:
            results.append(func(*item) if isinstance(item, tuple) else func(item))
        except passthrough:
            raise
        except BaseException as exc:
            if first is None:
                first = exc
            else:
                exc.__traceback__ = None
            results.append(exc)
    try:
        blob = dumps_result(results)  # the C pickler, else cloudpickle (notebook classes)
    except TaskError:  # some item's result cannot be pickled at all: fail just those
        fixed = []
        for value in results:
            try:
                dumps_result(value)
                fixed.append(value)
            except TaskError as exc:
                if first is None:
                    first = exc
                fixed.append(exc)
        blob = dumps_result(fixed)
    if first is None:
        return outcome.success(key, attempts, started, blob)
    return outcome.failure(key, attempts, started, first, result=blob)


def run_batch(payload: bytes, monitor: str | None = None, inline: bool = False) -> list[tuple]:
    """Run every call of a batch; one outcome tuple per call, in order.

    ``inline`` (the sync backend): a KeyboardInterrupt is the user's Ctrl-C,
    not the task's failure, and propagates. Pool workers ignore SIGINT, so
    there a KeyboardInterrupt can only be the task's own.
    """
    passthrough = (KeyboardInterrupt,) if inline else ()
    batch_id, funcs, calls = loads(payload)
    loaded: dict[int, Any] = {}
    out = []
    fd = monitor_file.worker_fd(monitor) if monitor else None
    pid = os.getpid()
    for i, call in enumerate(calls):
        if fd is not None and monitor_file.stamp_and_check(fd, batch_id, i, pid):
            now = time.time()
            out += [outcome.cancelled(key, attempts, now, now)
                    for key, _, _, _, _, attempts in calls[i:]]
            break
        out.append(run_one(call, funcs, loaded, passthrough))
    return out
