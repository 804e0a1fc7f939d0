"""Completion: what happens when runs come back.

The executor's done-callback only puts the batch in the :class:`~nbgroups.jobs.Outbox`
and wakes the runner thread; there :meth:`Completer.collect` takes every batch
that came back since the last look (a broken one goes to the
:class:`~nbgroups.recovery.FaultHandler`), lets the batch sizer learn the
function's speed and result size, and :meth:`Completer.finish` records them:
failed runs with retries left go back to the queue, ``async_iter`` chunks are
merged into their task, and the outcome rows (in the store's layout, from the
worker) are written in one transaction per layer. Only then do the jobs take
their final state, waiters wake and hooks run (:meth:`Completer._settle`). A
failed write keeps the outcomes in memory and retries them on the runner's
next turns.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, NamedTuple, Protocol

from . import names
from .dispatch import Dispatcher
from .jobs import FINAL, STATE_OF, Job, Outbox, runs_of
from .live import LiveTasks
from .outcome import (
    CANCELLED,
    FAILURE,
    SUCCESS,
    Row,
    error_of,
    frames_of,
    info_of,
    merged_info,
    result_of,
    row,
    started_of,
    state_of,
    traceback_of,
    view,
    without_result,
)
from .records import State, TaskRecord
from .recovery import FaultHandler
from .store import LARGE_RESULT, build_record
from .store.layout import failure_value, result_value
from .stores import Stores
from .values import shown_call

log = logging.getLogger("nbgroups")

RECENT_MAX = 1024  # finished jobs kept with their outcome: result(id) without a store read

Finished = tuple[Job, Row]  # a run that ended, with its outcome row


class Notify(Protocol):
    """:meth:`Runner._notify`: wake waiters and listeners; ``finished``: the runs
    that just took a final state (stored already), for the finish listeners."""

    def __call__(self, finished: list[Finished] | None = None, /) -> None: ...


def record_of(job: Job, o: Row | None, cls: type = TaskRecord) -> TaskRecord:
    """The record of a finished job from its outcome row, without a store read.

    Its arguments as records show them (snapshots kept as pickles rebuilt, stored
    values mapped: :func:`nbgroups.values.shown_call`) are made once per job, on
    its first read, and shared by its later records, as its snapshot was before."""
    shown = job.shown
    if shown is None:
        args = None if job.items is not None or job.options.ttl is not None else job.args
        kwargs = None if job.options.ttl is not None else job.kwargs
        items = job.items
        args, kwargs = shown_call(args, kwargs)
        if items is not None:
            items = shown_call(items, None)[0]
        shown = job.shown = (args, kwargs, items)
    return build_record(
        job.id, job.task_name or names.name_of(job.id), job.func[0], shown[0], shown[1],
        None if o is None else view(o), job.options.group, job.submitted, cls,
        items=shown[2], saved=job.options.save,
    )


class Settled(NamedTuple):
    """What :func:`nbgroups.result` needs of a task this runner finished lately:
    its id, state and result, without building its whole record (its arguments
    shown, its name, its traceback rendered: ~15 µs of a warm round trip)."""

    id: str
    state: State
    result: Any


def settled_of(job: Job, o: Row) -> Settled:
    """The :class:`Settled` of a finished job from its outcome row."""
    v = view(o)
    state = State(v.state)
    if state is State.SUCCESS:
        value = result_value(v)
    elif state is State.CANCELLED:
        value = None
    else:
        value = failure_value(v)
    return Settled(job.id, state, value)


class Completer:
    """Collects what came back, stores outcomes, settles jobs, calls hooks."""

    def __init__(self, lock: threading.RLock, live: LiveTasks, stores: Stores,
                 dispatcher: Dispatcher, faults: FaultHandler, outbox: Outbox,
                 notify: Notify) -> None:
        self.lock = lock
        self.live = live
        self.stores = stores
        self.dispatcher = dispatcher
        self.faults = faults
        self.outbox = outbox
        self.notify = notify
        #: the class of the records handed to hooks (the api sets its Task)
        self.record_class: type = TaskRecord
        self.store_error: BaseException | None = None
        self._unstored: list[Finished] = []  # finished, their write failed
        # The last finished jobs with their outcomes (already in the store):
        # result(id) right after a task finished needs no store read.
        self._recent: collections.OrderedDict[str, Finished] = collections.OrderedDict()

    # ------------------------------------------------------------ reading
    def recent(self, task_id: str) -> Finished | None:
        """``(job, outcome)`` of a task finished lately (in the store already), or None."""
        return self._recent.get(task_id)

    def unstored(self) -> bool:
        """Whether finished runs wait for their outcome write to be retried."""
        return bool(self._unstored)

    # ------------------------------------------------------------ collecting
    def collect(self) -> None:
        """Take everything that came back since the last look, and record it."""
        finished: list[Finished] = []
        broken = False
        executor = self.dispatcher.executor
        while True:
            entry = self.outbox.take()
            if entry is None:
                break
            batch, ready = entry
            if batch is None:
                finished += ready
                continue
            future, batch.future = batch.future, None
            # (future -> done callback -> batch -> future is a cycle: broken
            # here, the results go as soon as they are stored, not at the
            # next garbage collection; 20 x 50 MB results: 1 GB otherwise.)
            if batch.cancelled:  # by cancel(): its jobs are recorded already
                self.dispatcher.returned(batch, reuse_monitor=False)
                continue
            try:
                outs = future.result()
            except BaseException as exc:
                # Only a break of the current pool restarts it: batches of a pool
                # already replaced come back broken too, and must not cost the
                # fresh pool its workers.
                if executor is not None and executor.is_broken(exc) and \
                        batch.pool == executor.generation:
                    broken = True
                finished += self.faults.salvage(batch, exc)  # reads the monitor file
                self.dispatcher.returned(batch, reuse_monitor=False)
                continue
            del future
            self.dispatcher.returned(batch, reuse_monitor=True)
            if type(outs) is str:  # the worker could not unpickle it: each call alone
                finished += self.dispatcher.resend_split(batch, outs)
                continue
            self.dispatcher.sizer.learn(batch.jobs[0].func[0], outs)
            pairs = zip(batch.jobs, outs, strict=True)  # one outcome per call, in order
            if batch.stopping:  # the calls the worker skipped were not cancelled: not begun
                finished += [(j, o) for j, o in pairs if state_of(o) != CANCELLED]
            else:
                finished += pairs
        if broken and not self.dispatcher.stopped:  # stopping: no new pool
            self.faults.recover()
        if finished or self._unstored:
            self.finish(finished)

    def finish(self, finished: list[Finished]) -> None:
        """Record finished runs: retries re-queued, iter chunks merged, outcomes stored.

        ``finished``: ``(job, outcome)`` pairs, outcomes in the store's layout
        (the worker builds them). Runs once per completed batch over every call
        in it, so the loops do per-call work only and store the outcome rows
        as they are; what depends on the options is looked up once per run of
        calls sharing them.
        """
        final: list[Finished] = []
        append = final.append
        with self.lock:
            for pair in finished:
                job, out = pair
                if state_of(out) == FAILURE and 0 < job.attempt <= job.options.retries:
                    self.dispatcher.retry(job)
                    continue
                if job.parent is not None:
                    merged = self._merge_chunk(job, out)
                    if merged is None:
                        continue
                    pair = merged
                    job = pair[0]
                if job.state not in FINAL:
                    append(pair)
        if self._unstored:  # runs whose outcome write failed earlier: tried again first
            final, self._unstored = self._unstored + final, []
        if not final:
            return
        by_layer: dict[int | None, dict[tuple, tuple[list, list]]] = {}
        options, gen = None, 0
        rows: list[Row] = []
        prevs: list[str] = []
        save = True
        for job, o in final:
            if job.options is not options or job.gen != gen:
                options, gen = job.options, job.gen
                groups = by_layer.get(options.ttl)
                if groups is None:
                    groups = by_layer[options.ttl] = {}
                rows, prevs = groups.setdefault((options.group, gen), ([], []))
                save = options.save
            rows.append(o if save else without_result(o))  # save=False: hooks still see it
            if job.prev:
                prevs.append(job.prev)
        try:
            for ttl, groups in by_layer.items():
                self.stores.layer(ttl).write_outcomes(
                    [(group, gen, rows, prevs) for (group, gen), (rows, prevs) in groups.items()],
                    ttl=ttl)
        except Exception as exc:
            # Not counted as finished until stored: kept here, written again on
            # the runner's next turns; waiters are told (Runner.wait raises).
            self._unstored = final
            self.store_error = exc
            self.notify()
            log.error("nbgroups: %d finished task(s) could not be stored (%s); retrying",
                      len(final), exc)
            return
        self.store_error = None
        del by_layer, rows  # large results are released as soon as they are stored
        if self._settle(final):
            del final
            release_memory()

    @staticmethod
    def _merge_chunk(job: Job, out: Row) -> Finished | None:
        """An ``async_iter`` chunk ended: ``(its task, the task's outcome)`` once
        every chunk did, else None."""
        assert job.parent is not None
        started = started_of(out)
        top, ci = job.parent
        it = top.chunks
        assert it is not None  # set when the task was cut into chunks
        it.results[ci] = result_of(out)
        it.started = started if it.started is None else min(it.started, started)
        if state_of(out) == FAILURE and not it.failed:
            it.failed, it.error, it.traceback = True, error_of(out), traceback_of(out)
            it.frames = frames_of(out)
        it.infos[ci] = info_of(out)
        it.remaining -= 1
        top.attempt = max(top.attempt, job.attempt)
        if it.remaining:
            return None
        return top, row(top.id, FAILURE if it.failed else SUCCESS, runs_of(top), it.started,
                        time.time(), it.results, it.error, it.traceback,
                        merged_info([it.infos[i] for i in sorted(it.infos)]), it.frames)

    def _settle(self, final: list[Finished]) -> bool:
        """Stored: the jobs take their final state, waiters and hooks are told.
        Returns whether a large result went by (then memory is worth releasing)."""
        hooks = []
        recent = self._recent
        release = False
        keep_from = len(final) - RECENT_MAX  # only the last ones could stay in `recent`
        options = None
        keep, hook = True, None
        with self.lock:
            self.live.settle([(job, STATE_OF[state_of(o)]) for job, o in final])
            for n, (job, o) in enumerate(final):
                if job.options is not options:
                    options = job.options
                    keep, hook = options.save, options.hook
                blob = result_of(o)
                if type(blob) is bytes and len(blob) >= LARGE_RESULT:
                    release = True  # large results are read from the store
                elif n >= keep_from and keep:
                    recent[job.id] = (job, o)
                if hook is not None:
                    hooks.append((job, o))
            while len(recent) > RECENT_MAX:
                recent.popitem(last=False)
        self.notify(final)
        for job, o in hooks:
            self._call_hook(job, o)
        return release

    def _call_hook(self, job: Job, o: Row) -> None:
        hook: Any = job.options.hook
        try:
            if isinstance(hook, str):
                from .worker import resolve

                hook = resolve(hook)
            hook(record_of(job, o, self.record_class))
        except BaseException:  # even SystemExit: a hook must not stop the runner
            log.exception("nbgroups: hook %r failed for task %s", job.options.hook, job.id)


def release_memory() -> None:
    """Give freed memory back to the OS after large results were stored.

    loky receives results in growing buffers on its own thread; glibc keeps
    the freed pages in that thread's arena, so without this a sweep of 50 MB
    results grows the kernel by every result it ever received (measured: 20 x
    50 MB -> 1 GB kept; after malloc_trim, none). Costs ~0.1 ms.
    """
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc() if os.name == "posix" else None
