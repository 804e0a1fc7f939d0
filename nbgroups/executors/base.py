"""The executor contract: where a batch of calls runs.

A backend takes a pickled batch and returns a ``concurrent.futures.Future``
of :func:`nbgroups.worker.run_batch`'s outcome list. The runner needs nothing
else from it: ``submit``, ``shutdown``, and for process pools the worker pids
(to replace a worker whose task timed out) and ``broken`` detection.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any


class Executor:
    """Base class: run ``worker.run_batch(payload, monitor)`` somewhere."""

    name = "base"
    #: True when a dead worker can be told apart (monitor files are written).
    monitored = False
    #: True when a batch's future still cancels only while no worker has it
    #: (loky marks a future running when it hands the batch to a worker).
    cancels_queued = False
    #: True when workers cannot read the store's value files (Dask): the runner
    #: then sends the batches that take some through :meth:`submit_values`.
    ships_values = False
    #: True when workers are processes of this machine: each batch then carries
    #: the kernel's working directory, and its worker runs the calls there.
    follows_cwd = False

    def __init__(self, workers: int) -> None:
        self._workers = workers
        #: Bumped by :meth:`restart`: a batch remembers the pool it was sent to.
        self.generation = 0
        #: ``(generation, pid)`` of workers killed on purpose (timeouts): their
        #: death is not the task's. Keyed by pool, since pids get reused.
        self.killed: set[tuple[int, int]] = set()

    @property
    def workers(self) -> int:
        """How many calls run at once (the runner sizes batches with it)."""
        return self._workers

    @classmethod
    def from_settings(cls, settings: Any) -> Executor:
        """The executor for :class:`~nbgroups.config.Settings` (its ``workers``)."""
        return cls(settings.workers)

    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        """Run ``worker.run_batch(payload, monitor)``; a future of its outcome list."""
        raise NotImplementedError

    def submit_values(self, payload: bytes, monitor: str | None,
                      values: tuple[str, set[str]]) -> cf.Future:
        """:meth:`submit` a batch whose calls take stored values: ``(the store's
        value directory, their digests)`` (:mod:`nbgroups.values`). Only backends
        with :attr:`ships_values` get it; by default, a plain submit."""
        return self.submit(payload, monitor)

    def is_broken(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from a batch future) means the pool itself broke."""
        return False

    def restart(self) -> None:
        """Replace a broken pool with a fresh one."""

    def kill_worker(self, pid: int) -> None:
        """Stop a worker process (timeouts); the pool then reports itself broken."""

    def dead_workers(self, generation: int) -> dict[int, int] | None:
        """``{pid: exit code}`` of the workers whose death broke pool ``generation``.

        None when unknown (the pool did not break, or the backend cannot tell).
        """
        return None

    def end_orphans(self, ids: set[str], wait: float) -> set[str]:
        """Before a resume: let the calls of ``ids`` that a gone kernel left running
        on this executor's workers end (at most ``wait`` seconds, then stop them).
        Returns the ids still running. A pool of the kernel's own children has
        none to wait for (a dead kernel's workers exit by themselves:
        :func:`nbgroups.worker.init_worker`; see :func:`nbgroups.monitor.clean_orphans`)."""
        return set()

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes now (empty if they are not processes)."""
        return []

    def shutdown(self) -> None:
        """Stop the workers without waiting for running calls."""
