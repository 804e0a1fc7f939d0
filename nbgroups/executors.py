"""Executor backends: where a batch of calls runs.

Each backend takes a pickled batch and returns a ``concurrent.futures.Future``
of :func:`nbgroups.worker.run_batch`'s outcome list. The runner needs nothing
else from them: ``submit``, ``shutdown``, and for process pools the worker
pids (to replace a worker whose task timed out) and ``broken`` detection.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal

from . import pool_compat, worker


class Executor:
    """Base class: run ``worker.run_batch(payload, monitor)`` somewhere."""

    name = "base"
    #: True when a dead worker can be told apart (monitor files are written).
    monitored = False
    #: True when a batch's future still cancels only while no worker has it
    #: (loky marks a future running when it hands the batch to a worker).
    cancels_queued = False

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        """Run ``worker.run_batch(payload, monitor)``; a future of its outcome list."""
        raise NotImplementedError

    def is_broken(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from a batch future) means the pool itself broke."""
        return False

    def restart(self) -> None:
        """Replace a broken pool with a fresh one."""

    def kill_worker(self, pid: int) -> None:
        """Stop a worker process (timeouts); the pool then reports itself broken."""

    #: Bumped by :meth:`restart`: a batch remembers the pool it was sent to.
    generation = 0
    #: ``(generation, pid)`` of workers killed on purpose (timeouts): their
    #: death is not the task's. Keyed by pool, since pids get reused.
    killed: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()

    def dead_workers(self, generation: int) -> dict[int, int] | None:
        """``{pid: exit code}`` of the workers whose death broke pool ``generation``.

        None when unknown (the pool did not break, or the backend cannot tell).
        """
        return None

    def shutdown(self) -> None:
        """Stop the workers without waiting for running calls."""


class SyncExecutor(Executor):
    """Runs a batch inline, in the calling thread, through the same worker code."""

    name = "sync"

    def submit(self, payload, monitor):
        future: cf.Future = cf.Future()
        future.set_result(worker.run_batch(payload, None, inline=True))
        return future


class ThreadExecutor(Executor):
    """A thread pool: for I/O-bound calls, or callables that must share memory."""

    name = "thread"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="nbgroups-worker")

    def submit(self, payload, monitor):
        return self._pool.submit(worker.run_batch, payload, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LokyExecutor(Executor):
    """A loky process pool (cloudpickle, robust start method), restarted when broken."""

    name = "loky"
    monitored = True
    cancels_queued = True

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = self._new_pool()
        self.generation = 0
        self.killed = set()
        self._deaths: dict[int, dict[int, int]] = {}

    def _new_pool(self):
        return pool_compat.new_pool(self.workers, worker.init_worker)

    def submit(self, payload, monitor):
        BrokenProcessPool, ShutdownExecutorError = pool_compat.pool_errors()

        pool, gen = self._pool, self.generation
        try:
            future = pool.submit(worker.run_batch, payload, monitor)
        except (BrokenProcessPool, ShutdownExecutorError) as exc:
            # The pool broke after the runner last looked: the batch comes back
            # as broken and is re-queued, like every other batch of this pool.
            future = cf.Future()
            future.set_exception(exc)
            return future
        # Registered before the runner's callback, so it runs first: loky fails
        # every pending future *before* it kills the surviving workers
        # (terminate_broken), so at this moment only the worker(s) that really
        # died have an exit code. This is what lets the runner fail exactly the
        # call that was running in a dead worker, and re-run the others.
        future.add_done_callback(lambda f: self._note_deaths(f, pool, gen))
        return future

    def _note_deaths(self, future: cf.Future, pool, gen: int) -> None:
        BrokenProcessPool = pool_compat.pool_errors()[0]

        if gen in self._deaths or future.cancelled():
            return
        if not isinstance(future.exception(), BrokenProcessPool):
            return  # e.g. our own shutdown of an old pool: nobody died on their own
        processes = getattr(pool, "_processes", None) or {}
        dead = {}
        for pid, proc in list(processes.items()):
            code = proc.exitcode
            if code is not None:
                dead[pid] = code
        self._deaths[gen] = dead
        for old in [g for g in self._deaths if g < gen - 8]:
            del self._deaths[old]

    def dead_workers(self, generation: int) -> dict[int, int] | None:
        return self._deaths.get(generation)

    def is_broken(self, exc: BaseException) -> bool:
        return isinstance(exc, pool_compat.pool_errors())

    def restart(self) -> None:
        old = self._pool
        self._pool = self._new_pool()
        self.generation += 1
        old.shutdown(wait=False, kill_workers=True)

    def kill_worker(self, pid: int) -> None:
        self.killed.add((self.generation, pid))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, kill_workers=True)


def make_executor(settings) -> Executor:
    """The executor backend named by ``settings.backend``."""
    if settings.backend == "loky":
        return LokyExecutor(settings.workers)
    if settings.backend == "thread":
        return ThreadExecutor(settings.workers)
    if settings.backend == "sync":
        return SyncExecutor(1)
    if settings.backend == "dask":
        from .dask_backend import DaskExecutor

        return DaskExecutor(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")
