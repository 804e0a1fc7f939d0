"""The thread backend: a thread pool in the kernel's process."""

from __future__ import annotations

import concurrent.futures as cf

from .. import worker
from .base import Executor


class ThreadExecutor(Executor):
    """A thread pool: for I/O-bound calls, or callables that must share memory."""

    name = "thread"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="nbgroups-worker")

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        return self._pool.submit(worker.run_batch, payload, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
