"""Dispatch: the ready queue cut into batches and sent to the executor.

Batches are sized from the measured duration of the function's recent calls
(:class:`BatchSizer`: ~TARGET_BATCH_SECONDS of work, like joblib's
auto-batching, but every call keeps its own task) with two batches per worker
in flight; until a function is measured, and while its results are large, a
batch is one call and one batch per worker is in flight (finished results wait
in the kernel until stored: this bounds their memory). An ``async_iter`` task
is cut into chunks first. Each batch is pickled once, with the ids and run
numbers its outcomes come back with, and gets a monitor file its worker stamps
before each call (:mod:`nbgroups.monitor`; read by :mod:`nbgroups.recovery`
when a worker dies). The :class:`Dispatcher` owns the ready queue, the batches
in flight and the executor.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from . import forward, outcome, shutdown
from .config import Settings
from .errors import SerializationError
from .executors import Executor, make_executor
from .jobs import CANCELLED, FINAL, QUEUED, Batch, IterState, Job, Outbox, failed, runs_of
from .live import LiveTasks
from .monitor import MonitorFiles
from .outcome import Row, result_of, started_of, stopped_of
from .serialize import dumps, dumps_call_data, dumps_plain, plain
from .store import LARGE_RESULT
from .values import digests_of_calls, digests_of_funcs

TARGET_BATCH_SECONDS = 0.05
MAX_BATCH = 4096
ITER_CHUNK_MAX = 20_000


class FuncStats(NamedTuple):
    """What recent calls of a function measured (moving averages)."""

    seconds: float  # per call
    result_bytes: int  # pickled result size (the largest of a sample)


class BatchSizer:
    """Learns each function's speed and result size; sizes its batches from them."""

    def __init__(self) -> None:
        self._stats: dict[str, FuncStats] = {}

    def stats(self, name: str) -> FuncStats | None:
        """What was measured for function ``name``, or None (not yet)."""
        return self._stats.get(name)

    def measured(self) -> dict[str, FuncStats]:
        """Every function measured so far, by name."""
        return dict(self._stats)

    def learn(self, name: str, outs: list[Row]) -> None:
        """A batch of ``name`` came back: update its moving averages."""
        started, stopped = started_of(outs[0]), stopped_of(outs[-1])
        if started is None or stopped is None:
            return
        # the calls of a batch ran one after the other in one worker
        per = max(stopped - started, 0.0) / len(outs)
        step = max(1, len(outs) // 64)  # result sizes: a sample is enough
        size = max((len(r) for r in map(result_of, outs[::step]) if type(r) is bytes),
                   default=0)
        old = self._stats.get(name)
        self._stats[name] = FuncStats(per, size) if old is None else FuncStats(
            0.7 * old.seconds + 0.3 * per, max(size, int(0.7 * old.result_bytes + 0.3 * size)))

    @staticmethod
    def large(stats: FuncStats | None) -> bool:
        """Unmeasured or large results: one call per batch, one batch per worker."""
        return stats is None or stats.result_bytes >= LARGE_RESULT

    def size(self, stats: FuncStats | None, ready: int, workers: int) -> int:
        """Calls per batch: one until measured, then ~TARGET_BATCH_SECONDS of
        work, but never so many that a worker is left without a batch."""
        if stats is None or stats.result_bytes >= LARGE_RESULT:
            return 1
        fair = math.ceil(ready / (2 * workers))
        want = int(TARGET_BATCH_SECONDS / max(stats.seconds, 1e-6))
        return max(1, min(MAX_BATCH, fair, want))


class Dispatcher:
    """The ready queue, the batches in flight, and the executor they go to."""

    def __init__(self, settings: Settings, lock: threading.RLock, live: LiveTasks,
                 outbox: Outbox) -> None:
        self.settings = settings
        self.lock = lock
        self.live = live
        self.outbox = outbox
        self.sizer = BatchSizer()
        self.executor: Executor | None = None
        self._executor_lock = threading.Lock()
        self.monitors = MonitorFiles()
        self._ready: collections.deque[Job] = collections.deque()
        self._inflight: dict[int, Batch] = {}
        self._batch_ids = itertools.count(1)
        self.stopped = False
        #: where workers read stored values (large arguments) from: the runner's
        self.value_dir: Callable[[], str | None] = lambda: None

    # ------------------------------------------------------------ the queue
    def enqueue(self, jobs: Iterable[Job]) -> None:
        """Queue jobs at the back (an ``async_iter`` task as its chunks)."""
        with self.lock:
            ready = self._ready
            for job in jobs:
                if job.items is None:
                    ready.append(job)
                else:
                    self._enqueue_chunks(job)

    def retry(self, job: Job) -> None:
        """A failed run with retries left: queued again, at the back."""
        with self.lock:
            self._ready.append(job)

    def put_back(self, job: Job) -> None:
        """A run cut short (its pool broke): queued again, at the front."""
        with self.lock:
            self._ready.appendleft(job)

    def _enqueue_chunks(self, job: Job) -> None:
        items = job.items or []
        n = len(items)
        size = max(1, min(ITER_CHUNK_MAX, math.ceil(n / (4 * self.workers()))))
        starts = range(0, n, size) if n else range(0)
        job.chunks = IterState(results=[None] * len(starts), remaining=len(starts))
        for ci, start in enumerate(starts):
            chunk = Job(job.id, job.func, items[start:start + size], None, job.options,
                        job.prefix)
            chunk.items = chunk.args
            chunk.parent = (job, ci)
            chunk.gen = job.gen
            self._ready.append(chunk)
        if not starts:  # an empty iterable: done at once, with []
            now = time.time()
            self.outbox.finished([(job, outcome.row(job.id, outcome.SUCCESS, runs_of(job),
                                                    now, now, dumps_plain([])))])

    def take_queued(self, wanted: Callable[[Job], bool]) -> list[Job]:
        """Remove the queued tasks ``wanted(task)`` picks (chunks by their task);
        the tasks."""
        found: dict[int, Job] = {}  # by id(): a list membership test made this O(n^2)
        with self.lock:
            keep: collections.deque[Job] = collections.deque()
            for job in self._ready:
                top = job.parent[0] if job.parent else job
                if top.state is QUEUED and wanted(top):
                    found.setdefault(id(top), top)
                    continue
                keep.append(job)
            self._ready = keep
        return list(found.values())

    # ------------------------------------------------------------ in flight
    def in_flight(self) -> list[Batch]:
        """The batches sent and not yet back."""
        return list(self._inflight.values())

    def returned(self, batch: Batch, reuse_monitor: bool) -> None:
        """``batch`` came back: out of flight; its monitor file free again if its
        worker is done with it whole (not broken, not flagged), else removed."""
        self._inflight.pop(batch.id, None)
        if self.settings.live_output:  # its calls' last output, before the file is reused
            forward.HUB.harvest(batch)
        if batch.monitor:
            if reuse_monitor and not batch.flagged:
                self.monitors.give_back(batch.monitor)
            else:
                self.monitors.drop(batch.monitor)

    def busy(self) -> bool:
        """Whether calls wait in the queue or run."""
        return bool(self._ready or self._inflight)

    def timing(self) -> bool:
        """Whether a batch in flight holds a call with a timeout."""
        return any(b.jobs[0].options.timeout or b.jobs[-1].options.timeout
                   for b in list(self._inflight.values()))

    def workers(self) -> int:
        """How many calls run at once: the executor knows best (dask: the
        cluster's threads, which may grow)."""
        if self.settings.backend == "sync":
            return 1
        ex = self.executor
        return max(1, ex.workers if ex is not None else self.settings.workers)

    # ------------------------------------------------------------ sending
    def dispatch(self) -> None:
        """Send batches while workers have room."""
        if not self._ready or self.stopped:
            return
        self.ensure_executor()
        sizer = self.sizer
        while self._ready:
            head = self._ready[0].func[0]
            stats = sizer.stats(head)
            # Two batches per worker keep workers busy. Until a function's results
            # are measured, and while they are large, one per worker: finished
            # results wait in this process until stored, this bounds their memory.
            if len(self._inflight) >= self.workers() * (1 if sizer.large(stats) else 2):
                return
            with self.lock:
                ready = self._ready
                size = sizer.size(stats, len(ready), self.workers())
                jobs: list[Job] = []
                while ready and len(jobs) < size and ready[0].func[0] == head:
                    job = ready.popleft()
                    parent = job.parent
                    if job.state is CANCELLED or (parent and parent[0].state is CANCELLED):
                        continue
                    jobs.append(job)
                    if parent is not None or job.options.timeout or job.suspect:
                        break  # chunks, calls with a timeout and suspects go alone
                if not jobs:
                    continue
                self.live.start(j if j.parent is None else j.parent[0] for j in jobs)
                for j in jobs:
                    j.attempt += 1
            self._send(jobs)

    def ensure_executor(self) -> Executor:
        """The executor, made on first use (by the runner thread, or by a resume
        that asks a Dask cluster what a gone kernel left running there)."""
        with self._executor_lock:
            if self.executor is None:
                self.executor = make_executor(self.settings)
                # atexit runs last-registered first: loky registered its own handler
                # when imported, so ours goes after it to run before it (the pool
                # must still accept the close, not print "cannot schedule" tracebacks)
                atexit.unregister(shutdown.close_all)
                atexit.register(shutdown.close_all)
            return self.executor

    def resend_split(self, batch: Batch, reason: str) -> list[tuple[Job, Row]]:
        """The worker could not unpickle ``batch`` (``reason``): send its calls
        again, each pickled on its own, so that only the calls whose arguments
        cannot be loaded there fail (as the same run: no attempt is counted).
        A split batch that still cannot be loaded fails whole (returned)."""
        jobs = [j for j in batch.jobs if j.state not in FINAL]
        if batch.split:
            err = SerializationError(f"this batch could not be loaded in the worker "
                                     f"({reason}); it was not run")
            return [(j, failed(j, err)) for j in jobs]
        if jobs:
            self._send(jobs, split=True)
        return []

    def _send(self, jobs: list[Job], split: bool = False) -> None:
        executor = self.executor
        assert executor is not None  # dispatch() made it
        funcs = list(dict.fromkeys(j.func for j in jobs))
        index = {f: i for i, f in enumerate(funcs)}
        calls = [  # the id and run number come back in the outcome: stored as they are
            (j.id, index[j.func], j.args, j.kwargs, j.items is not None, j.attempt + j.runs_before)
            for j in jobs
        ]
        bid = next(self._batch_ids)
        monitor = self.monitors.take(bid) if executor.monitored else None
        batch = Batch(bid, jobs, monitor, time.time(), split=split)
        try:
            where = self.value_dir()
            # output capture, log level, where stored values are, the kernel's
            # working directory (a notebook's os.chdir reaches the tasks)
            options = (*self.settings.worker_options(), where,
                       _cwd() if executor.follows_cwd else None)
            # cloudpickle: args may be notebook objects
            payload = dumps((bid, funcs, [(c[0], dumps(c), c[-1]) for c in calls], options,
                             True)) if split else dumps_call_data(
                (bid, funcs, calls, options), plain(calls, 64 + 8 * len(calls)))
        except Exception as exc:  # stored, but not sendable: fail them, not the runner
            err = SerializationError(f"this task's call cannot be pickled to be sent to a "
                                     f"worker ({type(exc).__name__}: {exc}); it was not run")
            self.outbox.finished([(j, failed(j, err)) for j in jobs])
            return
        self._inflight[bid] = batch
        batch.pool = executor.generation
        _block_sigint()
        batch.future = _submit(executor, payload, monitor, where, jobs)
        batch.future.add_done_callback(lambda f, b=batch: self.outbox.batch_done(b))
        if shutdown.hooks_registered() < 2:
            shutdown.hook_exit()  # again, now that loky's pool has registered its own hook

    # ------------------------------------------------------------ closing
    def close(self, pool: bool) -> None:
        """Stop sending; ``pool``: shut the executor down too. The monitor files
        go once nothing is in flight."""
        self.stopped = True
        if pool and self.executor is not None:
            self.executor.shutdown()
        if not self._inflight:
            self.monitors.remove_all()


def _submit(executor: Executor, payload: bytes, monitor: str | None, where: str | None,
            jobs: list[Job]) -> Any:
    """``executor.submit``; an executor that ships stored values itself (Dask)
    is told which ones the batch takes (:mod:`nbgroups.values`)."""
    if where is not None and executor.ships_values:
        needed = digests_of_calls((j.args if j.items is None else j.items, j.kwargs)
                                  for j in jobs) | digests_of_funcs({j.func for j in jobs})
        if needed:
            return executor.submit_values(payload, monitor, (where, needed))
    return executor.submit(payload, monitor)


def _cwd() -> str | None:
    """The working directory, or None when it was removed."""
    try:
        return os.getcwd()
    except OSError:
        return None


def _block_sigint() -> None:
    """Block SIGINT in the runner thread, just before the executor may spawn.

    Jupyter's interrupt sends SIGINT to the kernel's whole process group. Blocked
    here, it stays blocked in the threads loky starts from this one and in the
    workers they fork and exec: a worker still importing never sees it (loky#477);
    the kernel's main thread still gets Ctrl-C. Done before every submit because
    starting loky's resource tracker unblocks SIGINT in the calling thread.
    """
    if _SIGMASK:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


_SIGMASK = hasattr(signal, "pthread_sigmask")
