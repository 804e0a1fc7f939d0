"""``as_completed``: a group's (or some tasks') records as they end, for ``for`` and ``async for``.

::

    runner ──finish listener (runner thread)──▶ ready records ──▶ __next__ / __anext__
    store  ──read every POLL_SECONDS──────────▶ (tasks this kernel does not run)

The records of tasks this kernel runs come from the runner's finish listener
(:meth:`~nbgroups.runner.Runner.add_finish_listener`) as they end, with no
store read; tasks fed by another process (another kernel on the same store, or
orphaned ones) are read from the store every :data:`POLL_SECONDS`. A ``for``
waits on a condition, an ``async for`` on an :class:`asyncio.Event` set from
the runner thread with ``call_soon_threadsafe``: the event loop stays free.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from . import api, names
from .arguments import check_group
from .control import owner_alive
from .errors import ArgumentTypeError, OrphanedTasks, UnknownTasks
from .jobs import Job
from .records import State
from .runner import Runner

__all__ = ["as_completed", "read_record", "remaining"]

POLL_SECONDS = 0.25  # tasks this kernel does not run: read from the store this often


def read_record(runner: Runner, task_id: str):
    """The task's record: this runner's recent memory, else the durable store."""
    hit = runner.recent(task_id, None, api.Task)
    if hit is not None:
        return hit
    runner.flush()
    return runner.store.task(task_id, api.Task)


def remaining(end: float | None) -> float | None:
    """Seconds left until the monotonic time ``end`` (None: no limit), at least 0."""
    return None if end is None else max(0.0, end - time.monotonic())


def as_completed(group_or_ids: str | Iterable[str], timeout: float | None = None
                 ) -> _Completed:
    """The :class:`Task` records of a group (or of task ids), as they finish.

    Successes, failures and cancelled tasks are all yielded, each once, in the
    order they end (those already ended first). Works with ``for`` and
    ``async for``.

    Args:
        group_or_ids: a group name (its tasks submitted so far) or an iterable of
            task ids (or of objects with a ``task_id``/``id``: futures, records).
        timeout: seconds from this call; ``None``: no limit.

    Returns:
        An iterator (and async iterator) of :class:`Task`.

    Raises:
        ArgumentTypeError: ``timeout`` is not ``None`` or seconds >= 0, or
            ``group_or_ids`` is neither a group name nor an iterable of ids.
        UnknownTasks: ids the store does not know and this kernel is not running.
        OrphanedTasks: unfinished tasks whose kernel is gone (not running here,
            their owner process dead): ``nbgroups.resume_group(group)`` runs them
            again, then call ``as_completed`` once more.
        TimeoutError: iterating, when the next record is not there in time.

    Example:
        >>> from nbgroups import as_completed, sweep
        >>> group = sweep(pow, 'doc-completed', base=[2, 3], exp=[2])
        >>> sorted(t.result for t in as_completed(group))
        [4, 9]
    """
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, int | float) or timeout < 0):
        raise ArgumentTypeError(f"timeout must be None or seconds >= 0, got {timeout!r}")
    runner = api.runner()
    group: str | None = None
    if isinstance(group_or_ids, str):
        check_group(group_or_ids, "group_or_ids")
        group = group_or_ids
        runner.flush()
        ids = [names.task_id(p.prefix, c.index)
               for p, c, _ in runner.store.group_entries(group) or ()]
    elif isinstance(group_or_ids, Iterable) and not isinstance(group_or_ids, bytes):
        ids = [_id_of(x) for x in group_or_ids]
    else:
        raise ArgumentTypeError(
            f"group_or_ids must be a group name or an iterable of task ids, got {group_or_ids!r}")
    return _Completed(runner, ids, timeout, group)


def _id_of(x: Any) -> str:
    tid = x if isinstance(x, str) else getattr(x, "task_id", None) or getattr(x, "id", None)
    if not isinstance(tid, str) or not names.looks_like_id(tid):
        raise ArgumentTypeError(f"as_completed() takes task ids (32 hex digits), got {x!r}")
    return tid


class _Completed:
    """The iterator :func:`as_completed` returns, for ``for`` and ``async for``."""

    def __init__(self, runner: Runner, ids: list[str], timeout: float | None,
                 group: str | None) -> None:
        self._runner = runner
        self._group = group  # group mode: polls read the group's entries
        self._end = None if timeout is None else time.monotonic() + timeout
        self._total = len(dict.fromkeys(ids))
        self._ready: collections.deque = collections.deque()
        # entered through its lock, never `with self._cond` (see nbgroups.signalsafe):
        # the runner thread's listener takes it too
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._loop_event: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._waiting = dict.fromkeys(ids)  # not yet yielded, in order
        self._foreign: list[str] = []  # not run by this kernel: polled
        self._polled = 0.0
        self._closed = False
        ref = weakref.ref(self)

        def listener(pairs, ref=ref, runner=runner):
            me = ref()
            if me is None:
                runner.remove_finish_listener(listener)
            else:
                me._finished(pairs)
        self._listener = listener
        runner.add_finish_listener(listener)
        # after the listener: nothing slips between (a copy: the listener, on the
        # runner thread, takes finished ids out of _waiting meanwhile)
        with self._lock:
            waiting = list(self._waiting)
        self._foreign = [tid for tid in waiting if not runner.pending(tid)]
        entries = self._read() if self._foreign else {}
        try:
            self._check_foreign(entries)
        except BaseException:
            self.close()
            raise
        self._poll(entries)

    def _check_foreign(self, entries: dict) -> None:
        """Raise for the tasks nobody will ever finish: unknown ids, orphans."""
        if not self._foreign:
            return
        runner = self._runner
        unknown = [t for t in self._foreign if t not in entries and not runner.pending(t)]
        if unknown:
            raise UnknownTasks(
                f"as_completed(): {len(unknown)} task id(s) unknown to the store and not "
                f"running in this kernel: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else ""))
        alive: dict[str | None, bool] = {}
        orphans: dict[str, str | None] = {}  # task id -> its group label
        for tid in self._foreign:
            page, _, label, o = entries[tid]
            if o is not None and State(o.state).final:
                continue
            owner = page.options.get("owner")
            if owner not in alive:
                alive[owner] = owner != runner.owner and owner_alive(owner)
            if not alive[owner] and not runner.pending(tid):
                orphans[tid] = label
        if orphans:
            groups = sorted({g for g in orphans.values() if g is not None})
            raise OrphanedTasks(
                f"as_completed(): {len(orphans)} task(s) never finished and the kernel that "
                f"ran them is gone ({', '.join(list(orphans)[:5])}"
                + (" ..." if len(orphans) > 5 else "")
                + "): run them again with "
                + (", ".join(f"nbgroups.resume_group({g!r})" for g in groups)
                   or "nbgroups.resume_group(<their group>)")
                + ", then call as_completed() again")

    def _read(self) -> dict:
        """The stored entries of the polled tasks: one store read (flushed first)."""
        store = self._runner.store
        self._runner.flush()
        if self._group is not None:
            foreign = set(self._foreign)
            out = {}
            for p, c, o in store.group_entries(self._group) or ():
                tid = names.task_id(p.prefix, c.index)
                if tid in foreign:
                    out[tid] = (p, c, self._group, o)
            return out
        return store.task_entries(self._foreign)

    # -- fed by the runner thread and by polling
    def _finished(self, pairs: list[tuple[Job, tuple]]) -> None:
        waiting = self._waiting
        got = [(job, o) for job, o in pairs if job.id in waiting]
        if got:
            self._take([self._runner.record_of(job, o, api.Task) for job, o in got])

    def _take(self, records: list) -> None:
        with self._lock:
            for rec in records:
                if self._waiting.pop(rec.id, 0) is None:  # once each
                    self._ready.append(rec)
            self._cond.notify_all()
        le = self._loop_event
        if le is not None:
            loop, event = le
            loop.call_soon_threadsafe(event.set)

    def _poll(self, entries: dict | None = None) -> None:
        """Read the store for the tasks this kernel does not run (one read; none
        when given the ``entries`` just read)."""
        self._polled = time.monotonic()
        self._foreign = [t for t in self._foreign if t in self._waiting]
        if not self._foreign:
            return
        if entries is None:
            entries = self._read()
        store = self._runner.store
        done, left = [], []
        for tid in self._foreign:
            entry = entries.get(tid)
            if entry is not None and entry[3] is not None and State(entry[3].state).final:
                page, call, label, o = entry
                done.append(store.entry_record(page, call, o, label, api.Task))
            elif self._runner.pending(tid):
                continue  # resumed here meanwhile: the listener will see it
            else:
                left.append(tid)
        self._foreign = left
        if done:
            self._take(done)

    def _next_ready(self):
        """A record, None to wait more, or StopIteration when all were yielded."""
        if self._ready:
            return self._ready.popleft()
        if not self._waiting:
            self.close()
            raise StopIteration
        if self._foreign and time.monotonic() - self._polled >= POLL_SECONDS:
            self._poll()
            if self._ready:
                return self._ready.popleft()
        return None

    def _wait_time(self) -> float | None:
        left = remaining(self._end)
        if left is not None and left <= 0:
            self.close()
            raise concurrent.futures.TimeoutError(
                f"{len(self._waiting)} (of {self._total}) tasks did not finish in time")
        if self._foreign:
            return POLL_SECONDS if left is None else min(POLL_SECONDS, left)
        return left

    # -- for
    def __iter__(self) -> _Completed:
        return self

    def __next__(self):
        while True:
            with self._lock:
                rec = self._next_ready()
                if rec is not None:
                    return rec
                self._cond.wait(self._wait_time())

    # -- async for
    def __aiter__(self) -> _Completed:
        return self

    async def __anext__(self):
        if self._loop_event is None:
            self._loop_event = (asyncio.get_running_loop(), asyncio.Event())
        event = self._loop_event[1]
        while True:
            with self._lock:
                event.clear()
                try:
                    rec = self._next_ready()
                except StopIteration:
                    raise StopAsyncIteration from None
                if rec is not None:
                    return rec
                wait = self._wait_time()
            with contextlib.suppress(asyncio.TimeoutError):  # poll, or time out next turn
                await asyncio.wait_for(event.wait(), wait)

    def close(self) -> None:
        """Stop listening (done by itself at the end, on timeout, or when dropped)."""
        if not self._closed:
            self._closed = True
            self._runner.remove_finish_listener(self._listener)

    def __len__(self) -> int:
        """How many records are still to come."""
        return len(self._waiting) + len(self._ready)
