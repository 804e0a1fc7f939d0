"""The loky backend (the default): a process pool, restarted when a worker dies."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
from typing import Any

from .. import pool_compat, worker
from .base import Executor


class LokyExecutor(Executor):
    """A loky process pool (cloudpickle, robust start method), restarted when broken."""

    name = "loky"
    monitored = True
    cancels_queued = True
    follows_cwd = True

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = self._new_pool()
        self._deaths: dict[int, dict[int, int]] = {}

    def _new_pool(self) -> Any:
        # the kernel's pid, given: a worker that starts after the kernel died must
        # not take its new parent (init, pid 1) for the kernel
        return pool_compat.new_pool(self.workers, worker.init_worker, (os.getpid(),))

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
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

    def _note_deaths(self, future: cf.Future, pool: Any, gen: int) -> None:
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

    def worker_pids(self) -> list[int]:
        processes = getattr(self._pool, "_processes", None) or {}
        return list(processes)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, kill_workers=True)

