"""Dispatch: the runner's ready queue cut into batches and sent to the executor.

A mixin of :class:`~nbgroups.runner.Runner`, like :mod:`nbgroups.completion`.
Batches are sized from the measured duration of the function's recent calls
(~TARGET_BATCH_SECONDS of work, like joblib's auto-batching, but every call
keeps its own task) with two batches per worker in flight; until a function
is measured, and while its results are large, a batch is one call and one
batch per worker is in flight (finished results wait in the kernel until
stored: this bounds their memory). An ``async_iter`` task is cut into chunks
first. Each batch is pickled once, with the ids and run
numbers its outcomes come back with, and gets a monitor file its worker
stamps before each call (:mod:`nbgroups.recovery` reads it when a worker dies).
"""

from __future__ import annotations

import atexit
import math
import signal
import time

from . import shutdown
from .errors import SerializationError
from .executors import make_executor
from .jobs import CANCELLED, QUEUED, RUNNING, Batch, IterState, Job, outcome_of
from .serialize import dumps, dumps_exception, dumps_plain, format_exception
from .store import LARGE_RESULT

TARGET_BATCH_SECONDS = 0.05
MAX_BATCH = 4096
ITER_CHUNK_MAX = 20_000


class Dispatch:
    """Mixed into :class:`~nbgroups.runner.Runner`: the ready queue to the executor."""

    def _enqueue(self, job: Job) -> None:
        if job.items is None:
            self._ready.append(job)
            return
        n = len(job.items)
        size = max(1, min(ITER_CHUNK_MAX, math.ceil(n / (4 * self._workers()))))
        starts = range(0, n, size) if n else []
        job.chunks = IterState(results=[None] * len(starts), remaining=len(starts))
        for ci, start in enumerate(starts):
            chunk = Job(job.id, job.func, job.items[start:start + size], None, job.options,
                        job.prefix)
            chunk.items = chunk.args
            chunk.parent = (job, ci)
            chunk.gen = job.gen
            self._ready.append(chunk)
        if not starts:  # an empty iterable: done at once, with []
            now = time.time()
            self._done.append((None, [(job, outcome_of(job, "success", now, now,
                                                       dumps_plain([])))]))

    def _workers(self) -> int:
        if self.settings.backend == "sync":
            return 1
        # The executor knows best (dask: the cluster's threads, which may grow).
        ex = self._executor
        return max(1, ex.workers if ex is not None else self.settings.workers)

    def _batch_size(self, stats: list | None) -> int:
        """Calls per batch for a function with these measured ``[seconds per call,
        result bytes]``: one until measured, then ~TARGET_BATCH_SECONDS of work,
        but never so many that a worker is left without a batch."""
        if stats is None or stats[1] >= LARGE_RESULT:
            return 1
        fair = math.ceil(len(self._ready) / (2 * self._workers()))
        want = int(TARGET_BATCH_SECONDS / max(stats[0], 1e-6))
        return max(1, min(MAX_BATCH, fair, want))

    def _dispatch(self) -> None:
        if not self._ready or self._closed:
            return
        if self._executor is None:
            self._executor = make_executor(self.settings)
            # atexit runs last-registered first: loky registered its own handler
            # when imported, so ours goes after it to run before it (the pool
            # must still accept the close, not print "cannot schedule" tracebacks)
            atexit.unregister(shutdown.close_all)
            atexit.register(shutdown.close_all)
        while self._ready:
            head = self._ready[0].func[0]
            stats = self._stats.get(head)
            # Two batches per worker keep workers busy. Until a function's results
            # are measured, and while they are large, one per worker: finished
            # results wait in this process until stored, this bounds their memory.
            large = stats is None or stats[1] >= LARGE_RESULT
            if len(self._inflight) >= self._workers() * (1 if large else 2):
                return
            with self._lock:
                size = self._batch_size(stats)
                jobs = []
                ready = self._ready
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
                options = None
                for j in jobs:
                    top = j if j.parent is None else j.parent[0]
                    if top.state is QUEUED:
                        top.state = RUNNING
                        if top.options is not options:
                            options = top.options
                            live = self._live[(options.ttl is not None, options.group)]
                        live[0] -= 1
                        live[1] += 1
                    j.attempt += 1
            self._send(jobs)

    def _send(self, jobs: list[Job]) -> None:
        funcs = list(dict.fromkeys(j.func for j in jobs))
        index = {f: i for i, f in enumerate(funcs)}
        calls = [  # the id and run number come back in the outcome: stored as they are
            (j.id, index[j.func], j.args, j.kwargs, j.items is not None, j.attempt + j.runs_before)
            for j in jobs
        ]
        bid = next(self._batch_ids)
        monitor = None
        if self._executor.monitored:
            monitor = self._monitors.take(bid)
        batch = Batch(bid, jobs, monitor, time.time())
        try:
            payload = dumps((bid, funcs, calls))  # cloudpickle: args may be notebook objects
        except Exception as exc:  # stored, but not sendable: fail them, not the runner
            err = SerializationError(f"this task's call cannot be pickled to be sent to a "
                                     f"worker ({type(exc).__name__}: {exc}); it was not run")
            tb = format_exception(err)
            now = time.time()
            self._done.append((None, [(j, outcome_of(j, "failure", now, now, None,
                                                     dumps_exception(err, tb), tb))
                                      for j in jobs]))
            return
        self._inflight[bid] = batch
        batch.pool = self._executor.generation
        _block_sigint()
        batch.future = self._executor.submit(payload, monitor)
        batch.future.add_done_callback(lambda f, b=batch: self._on_done(b))
        if shutdown.hooks_registered() < 2:
            shutdown.hook_exit()  # again, now that loky's pool has registered its own hook


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
