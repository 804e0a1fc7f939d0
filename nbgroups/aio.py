"""Awaitable twins of the waits: ``aresult``, ``afetch``, ``aresult_group``, ``afetch_group``.

Named as Django names its async methods, with the same arguments as
:func:`nbgroups.result` and friends. In a notebook, ``await`` them at the top
level of a cell::

    results = await nbgroups.aresult_group('grid', wait=-1)

A blocking wait (``result_group(..., wait=-1)``) holds the kernel's event loop,
so messages from widgets queue behind the cell: the progress view's Cancel and
Retry buttons do nothing until it returns. An awaited wait leaves the loop
free: ipykernel (>= 7) hands widget messages to their handlers while an async
cell awaits, so the buttons work (docs/guide/futures.md).

Arguments are checked at the call, before anything is awaited. The wait itself
sleeps on the runner's change notifications (:meth:`Runner.add_listener`,
called from the runner thread, passed to the loop with
``call_soon_threadsafe``), with the same slow poll as the blocking waits for
tasks fed by another process; every check goes through :meth:`Runner.wait`
with no time left, so a store failure raises here as it does there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from . import api
from .api.read import group_waiter, task_waiter
from .arguments import check_bool, check_count, check_group, wait_seconds
from .errors import ArgumentTypeError
from .runner import POLL_SECONDS, Runner

__all__ = ["afetch", "afetch_group", "aresult", "aresult_group"]


def afetch(task_id: str, wait: int = 0, cached: bool = False,
           mmap: bool = False) -> Coroutine[Any, Any, Any]:
    """Awaitable :func:`fetch`: the task record, waiting without holding the event loop.

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish (``-1``: no limit).
        cached: read the cache layer instead of the task store.
        mmap: large ndarray results memory-mapped, read-only (see :func:`result_group`).

    Returns:
        A coroutine whose value is the :class:`Task`, or ``None`` for an
        unknown id or name.

    Raises:
        ArgumentTypeError: ``task_id`` is not a string, ``wait`` not a number.
        ConfigurationError: ``wait`` below ``-1``.

    Example:
        >>> import asyncio
        >>> from nbgroups import afetch, async_task
        >>> tid = async_task('math.floor', 2.5, group='doc-afetch')
        >>> task = asyncio.run(afetch(tid, wait=-1))
        >>> task.result, task.success
        (2, True)
    """
    if not isinstance(task_id, str):
        raise ArgumentTypeError(f"task_id must be a task id or name (str), got {task_id!r}")
    timeout = wait_seconds(wait)
    check_bool("mmap", mmap)
    api.SESSION.layer(cached)
    return _afetch(task_id, wait, timeout, cached, mmap)


async def _afetch(task_id: str, wait: Any, timeout: float | None, cached: Any,
                  mmap: bool = False):
    if wait == 0:
        return api.fetch(task_id, cached=cached, mmap=mmap)
    r = api.runner()
    r.flush()
    finished, box = task_waiter(r, task_id, api.SESSION.layer(cached))
    if await _until(r, finished, timeout):
        if mmap and box[0] is not None:  # read again, mapped
            return api.fetch(box[0].id, cached=cached, mmap=True)
        return box[0]  # the record waited on (by name: not a newer task of that name)
    # not finished in time: its record as it stands
    return api.fetch(box[0].id if box[0] is not None else task_id, cached=cached, mmap=mmap)


def aresult(task_id: str, wait: int = 0, cached: bool = False,
            mmap: bool = False) -> Coroutine[Any, Any, Any]:
    """Awaitable :func:`result`: the result, waiting without holding the event loop.

    The arguments are checked at the call, before anything is awaited. In a
    notebook cell, ``await aresult(tid, wait=-1)``.

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish (``-1``: no limit).
        cached: read the cache layer instead of the task store.
        mmap: large ndarray results memory-mapped, read-only (see :func:`result_group`).

    Returns:
        A coroutine whose value is the result (a failed task's: its exception),
        or ``None`` when the task is unknown or not finished within ``wait``.

    Raises:
        ArgumentTypeError: ``task_id`` is not a string, ``wait`` not a number.
        ConfigurationError: ``wait`` below ``-1``.

    Example:
        >>> import asyncio
        >>> from nbgroups import aresult, async_task
        >>> tid = async_task(divmod, 7, 2, group='doc-aresult')
        >>> asyncio.run(aresult(tid, wait=-1))
        (3, 1)
    """
    fetching = afetch(task_id, wait=wait, cached=cached, mmap=mmap)

    async def value() -> Any:
        task = await fetching
        return task.result if task is not None and task.state.finished else None
    return value()


def aresult_group(group_id: str, failures: bool = False, wait: int = 0,
                  count: int | None = None, cached: bool = False, mmap: bool = False
                  ) -> Coroutine[Any, Any, list | None]:
    """Awaitable :func:`result_group`: the group's results in submission order.

    While it waits, the kernel keeps serving widget messages: the progress
    view's Cancel and Retry buttons work.

    Args:
        group_id: the group.
        failures: include failed tasks (their entry is their exception).
        wait: milliseconds to wait (``-1``: no limit).
        count: wait for at least this many finished tasks.
        cached: read the group of the cache layer.
        mmap: large ndarray results memory-mapped, read-only (see :func:`result_group`).

    Returns:
        A coroutine whose value is the list of results, or ``None`` if the
        group is unknown.

    Raises:
        ArgumentTypeError: as :func:`result_group`, at the call.
        ConfigurationError: as :func:`result_group`, at the call.

    Example:
        >>> import asyncio
        >>> from nbgroups import aresult_group, sweep
        >>> asyncio.run(aresult_group(sweep(pow, 'doc-aresult-group', base=[2], exp=[3, 4]),
        ...                           wait=-1))
        [8, 16]
    """
    check_bool("mmap", mmap)
    waiting = _group_wait(group_id, failures, wait, count, cached)

    async def read() -> list | None:
        await waiting
        return api.result_group(group_id, failures=failures, cached=cached, mmap=mmap)
    return read()


def afetch_group(group_id: str, failures: bool = True, wait: int = 0,
                 count: int | None = None, cached: bool = False,
                 mmap: bool = False) -> Coroutine[Any, Any, Any]:
    """Awaitable :func:`fetch_group`: the group's task records in submission order.

    Args:
        group_id: the group.
        failures: include failed tasks (``False`` leaves them out).
        wait: milliseconds to wait (``-1``: no limit).
        count: wait for at least this many finished tasks.
        cached: read the group of the cache layer.
        mmap: large ndarray results memory-mapped, read-only (see :func:`result_group`).

    Returns:
        A coroutine whose value is a :class:`TaskList`, or ``None`` if the group
        is unknown.

    Raises:
        ArgumentTypeError: as :func:`fetch_group`, at the call.
        ConfigurationError: as :func:`fetch_group`, at the call.

    Example:
        >>> import asyncio
        >>> from nbgroups import afetch_group, sweep
        >>> group = sweep(pow, 'doc-afetch-group', base=[-1, 2], exp=[2])
        >>> [t.result for t in asyncio.run(afetch_group(group, wait=-1))]
        [1, 4]
    """
    check_bool("mmap", mmap)
    waiting = _group_wait(group_id, failures, wait, count, cached)

    async def read() -> Any:
        await waiting
        return api.fetch_group(group_id, failures=failures, cached=cached, mmap=mmap)
    return read()


def _group_wait(group_id: str, failures: Any, wait: Any, count: Any, cached: Any
                ) -> Coroutine[Any, Any, None]:
    """Check a group read's arguments now; the wait it asks for, as a coroutine."""
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    timeout = wait_seconds(wait)
    check_count(count)
    ttl = api.SESSION.layer(cached)

    async def waiting() -> None:
        r = api.runner()
        predicate, seconds = group_waiter(r, group_id, wait, count, ttl, timeout)
        if predicate is not None:
            r.flush()
            await _until(r, predicate, seconds)
    return waiting()


async def _until(r: Runner, predicate: Callable[[], bool], timeout: float | None) -> bool:
    """``Runner.wait`` for a coroutine: True once ``predicate()`` holds, False when
    ``timeout`` seconds passed; the loop runs other work meanwhile."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:  # runner thread
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(changed.set)

    deadline = None if timeout is None else time.monotonic() + timeout
    r.add_listener(wake)
    try:
        while True:
            changed.clear()
            if r.wait(predicate, 0):  # one check, raising a store failure as every wait does
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(),
                                       POLL_SECONDS if left is None else min(POLL_SECONDS, left))
    finally:
        r.remove_listener(wake)
