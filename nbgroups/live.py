"""The tasks this runner holds, and their live counts, with explicit transitions.

A task is *tracked* from the flush that stored its page (or its re-run) until
its final state; meanwhile it is counted as queued, then running, per group
and layer. Every move goes through one method here::

    tracked ──▶ queued ──start──▶ running ──settle──▶ success / failure / cancelled
                     └──────────────────settle──────────────▲

A re-run of a stored task (``retry_group``, ``resume_group``) also notes the
final state it replaces, so counts do not show it finished while it runs
again (:meth:`LiveTasks.reruns`). Callers hold the runner's lock (passed in):
the runner's other objects change jobs under the same lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from . import monitor
from .jobs import QUEUED, RUNNING, STORED_STATES, Batch, Job, Options
from .records import State

Where = tuple[bool, str | None]  # (in the cache layer, group)


class LiveTasks:
    """Tracked jobs by id, ``[queued, running]`` per (layer, group), re-runs."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self._jobs: dict[str, Job] = {}
        self._counts: dict[Where, list[int]] = {}
        self._reruns: dict[tuple[bool, str | None, str], int] = {}

    # ------------------------------------------------------------ transitions
    def track(self, jobs: Iterable[Job]) -> None:
        """Their page is stored: the jobs are held and counted here (queued, or
        running inline) until they settle. A job tracked already is not counted again."""
        options: Options | None = None
        live: list[int] = []
        with self.lock:
            tracked = self._jobs
            for j in jobs:
                if j.id in tracked:
                    continue
                tracked[j.id] = j
                if j.options is not options:
                    options = j.options
                    live = self._counts.setdefault((options.cached, options.group), [0, 0])
                live[0 if j.state is QUEUED else 1] += 1

    def rerun(self, job: Job) -> None:
        """A stored task runs again under its id: tracked, queued, its previous
        final state (``job.prev``) not counted meanwhile."""
        options = job.options
        with self.lock:
            self._jobs[job.id] = job
            if job.prev:
                key = (options.cached, options.group, job.prev)
                self._reruns[key] = self._reruns.get(key, 0) + 1
            self._counts.setdefault((options.cached, options.group), [0, 0])[0] += 1

    def start(self, jobs: Iterable[Job]) -> None:
        """Queued -> running (a job already running, e.g. a chunk's parent, stays)."""
        options: Options | None = None
        live: list[int] = []
        with self.lock:
            for job in jobs:
                if job.state is QUEUED:
                    job.state = RUNNING
                    if job.options is not options:
                        options = job.options
                        live = self._counts[(options.cached, options.group)]
                    live[0] -= 1
                    live[1] += 1

    def settle(self, ended: Iterable[tuple[Job, State]]) -> None:
        """Jobs that ended (or were cancelled), each with its final state:
        uncounted, untracked. Runs once per completed batch over every call."""
        options: Options | None = None
        live: list[int] | None = None
        tracked = self._jobs
        with self.lock:
            for job, state in ended:
                if job.options is not options:
                    options = job.options
                    live = self._counts.get((options.cached, options.group))
                if live is not None:
                    live[0 if job.state is QUEUED else 1] -= 1
                job.state = state
                tracked.pop(job.id, None)
                if job.prev:
                    self._end_rerun(job)

    def _end_rerun(self, job: Job) -> None:
        key = (job.options.cached, job.options.group, job.prev or "")
        left = self._reruns.get(key, 0) - 1
        if left > 0:
            self._reruns[key] = left
        else:
            self._reruns.pop(key, None)

    # ------------------------------------------------------------ reading
    def counts(self, where: Where) -> tuple[int, int]:
        """``(queued, running)`` of ``where`` now."""
        with self.lock:
            q, r = self._counts.get(where, (0, 0))
            return max(q, 0), max(r, 0)

    def all_counts(self) -> dict[Where, tuple[int, int]]:
        """``(queued, running)`` of every (layer, group) seen."""
        with self.lock:
            return {w: (max(q, 0), max(r, 0)) for w, (q, r) in self._counts.items()}

    def reruns(self, where: Where) -> dict[str, int]:
        """Re-runs on their way per previous final state (``'success'``, ...)."""
        cached, group = where
        with self.lock:
            return {p: self._reruns.get((cached, group, p), 0) for p in STORED_STATES}

    def holds(self, task_id: str) -> bool:
        """Whether the task is tracked (queued or running, its page stored)."""
        return task_id in self._jobs

    def jobs(self) -> list[Job]:
        """Every tracked job."""
        with self.lock:
            return list(self._jobs.values())

    def ids(self) -> set[str]:
        """Ids of every tracked task."""
        with self.lock:
            return set(self._jobs)

    def running_ids(self) -> set[str]:
        """Ids of the tracked tasks handed to the executor."""
        with self.lock:
            return {tid for tid, j in self._jobs.items() if j.state is State.RUNNING}

    def __bool__(self) -> bool:
        return bool(self._jobs)


def running_now(batches: Iterable[Batch], where: Where) -> int | None:
    """How many of ``where``'s tasks a worker runs now, or None if it cannot be told
    (a batch in flight without a monitor file: thread backend)."""
    jobs = running_jobs(batches, where)
    return None if jobs is None else len(jobs)


def running_jobs(batches: Iterable[Batch], where: Where) -> list[Job] | None:
    """``where``'s tasks a worker runs now, or None if it cannot be told
    (a batch in flight without a monitor file: thread backend).

    Calls go to workers in batches, several per worker. A worker stamps its batch's
    monitor file before each call, so the newest stamp of each worker names the call
    it runs; an older batch's stamp still names its last call until the batch is
    collected, and the rest of a batch is sent, not begun."""
    cached, group = where
    newest: dict[int, tuple[float, Job]] = {}  # worker pid -> its newest stamp's call
    for batch in batches:
        if batch.monitor is None:
            return None
        stamp = monitor.read(batch.monitor)
        if stamp is not None and stamp.batch == batch.id and stamp.call < len(batch.jobs):
            seen = newest.get(stamp.pid)
            if seen is None or stamp.started > seen[0]:
                newest[stamp.pid] = (stamp.started, batch.jobs[stamp.call])
    running = {id(u): u for u in (_counted(j) for _, j in newest.values())
               if _of(u, cached, group)}
    return list(running.values())


def _counted(job: Job) -> Job:
    """The job :meth:`LiveTasks.start` counted for ``job`` (an async_iter chunk's parent)."""
    return job if job.parent is None else job.parent[0]


def _of(job: Job, cached: bool, group: str | None) -> bool:
    return job.state is RUNNING and job.options.cached == cached and job.options.group == group
