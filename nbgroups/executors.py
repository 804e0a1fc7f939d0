"""Executor backends: where a batch of calls runs.

Each backend takes a pickled batch and returns a ``concurrent.futures.Future``
of :func:`nbgroups.worker.run_batch`'s outcome list. The runner needs nothing
else from them: ``submit``, ``shutdown``, and for process pools the worker
pids (to replace a worker whose task timed out) and ``broken`` detection.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal

from . import worker


class Executor:
    """Base class: run ``worker.run_batch(payload, monitor)`` somewhere."""

    name = "base"
    #: True when a dead worker can be told apart (monitor files are written).
    monitored = False

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        raise NotImplementedError

    def is_broken(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from a batch future) means the pool itself broke."""
        return False

    def restart(self) -> None:
        """Replace a broken pool with a fresh one."""

    def kill_worker(self, pid: int) -> None:
        """Stop a worker process (timeouts); the pool then reports itself broken."""

    def shutdown(self) -> None:
        """Stop the workers without waiting for running calls."""


class SyncExecutor(Executor):
    """Runs a batch inline, in the calling thread, through the same worker code."""

    name = "sync"

    def submit(self, payload, monitor):
        future: cf.Future = cf.Future()
        future.set_result(worker.run_batch(payload, None))
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

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = self._new_pool()

    def _new_pool(self):
        from loky import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, initializer=worker.init_worker)

    def submit(self, payload, monitor):
        return self._pool.submit(worker.run_batch, payload, monitor)

    def is_broken(self, exc: BaseException) -> bool:
        from loky.process_executor import BrokenProcessPool, ShutdownExecutorError

        return isinstance(exc, BrokenProcessPool | ShutdownExecutorError)

    def restart(self) -> None:
        old = self._pool
        self._pool = self._new_pool()
        old.shutdown(wait=False, kill_workers=True)

    def kill_worker(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, kill_workers=True)


def make_executor(settings) -> Executor:
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
