"""The sync backend: a batch runs inline, in the calling thread, through the worker's code."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from .. import worker
from .base import Executor


class SyncExecutor(Executor):
    """Runs a batch inline, in the calling thread, through the same worker code."""

    name = "sync"

    @classmethod
    def from_settings(cls, settings: Any) -> SyncExecutor:
        """One worker: the calling thread."""
        return cls(1)

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(worker.run_batch(payload, None, inline=True))
        return future
