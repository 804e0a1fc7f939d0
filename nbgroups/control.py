"""Group control for the runner: cancel, run stored tasks again, Ctrl-C inline.

``cancel`` takes a group's tasks back before they start; ``resubmit`` runs
stored tasks again under their ids (``retry_group``, ``resume_group``, a failed
call re-submitted with ``reuse=True``). While a re-run is on its way its
previous final state is not counted (:attr:`Control._reruns`), so progress
views show it as queued or running.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Collection

from . import names
from .errors import TaskError
from .jobs import FINAL, Batch, Job, Options, outcome_of
from .records import State
from .serialize import dumps_exception, format_exception
from .worker import CANCEL_AT, read_monitor


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' if unknown:
    with the pid it names a process, not a pid that was reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_id() -> str:
    """``host:pid:start``: this process, as the owner recorded with its pages."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that submitted a page still runs (so its unfinished
    tasks are its own, not orphans). A process on another host cannot be seen:
    counted as gone, so resume_group there is the user's call."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return not start or _start_time(pid) == start


class Control:
    """Mixed into :class:`~nbgroups.runner.Runner`: cancel and re-run."""

    def cancel(self, group: str | None, ttl: int | None = None,
               ids: Collection[str] | None = None) -> int:
        """Cancel this process's tasks of ``group`` that have not started: those
        waiting here, and batches the pool has not yet passed to a worker.
        ``ids``: instead, the tasks of these ids, whatever their group (the
        futures' ``cancel()``); a batch already handed to the pool is then taken
        back only if it holds nothing else."""
        self.flush()
        now = time.time()
        found: dict[int, Job] = {}  # by id(): a list membership test made this O(n^2)

        def wanted(j: Job) -> bool:
            if ids is not None:
                return j.id in ids
            return j.options.group == group and j.options.cached == (ttl is not None)

        with self._lock:
            keep = collections.deque()
            for job in self._ready:
                top = job.parent[0] if job.parent else job
                if top.state is State.QUEUED and wanted(top):
                    found.setdefault(id(top), top)
                    continue
                keep.append(job)
            self._ready = keep
            # Batches handed to the pool but not begun: cancelled if the pool
            # has not passed them to a worker yet (loky's queue holds a few).
            takes_back = self._executor is not None and self._executor.cancels_queued
            for batch in list(self._inflight.values()) if takes_back else ():
                if batch.future is None or any(
                        j.parent is not None or j.state is not State.RUNNING or not wanted(j)
                        for j in batch.jobs):
                    continue
                if batch.future.cancel():
                    batch.cancelled = True
                    for j in batch.jobs:
                        found.setdefault(id(j), j)
                elif batch.monitor:
                    for j in self._stop_unstarted(batch):
                        found.setdefault(id(j), j)
            cancelled = list(found.values())
            for job in cancelled:
                was = job.state
                job.state = State.CANCELLED
                live = self._live[(job.options.cached, job.options.group)]
                live[0 if was is State.QUEUED else 1] -= 1
                self._active.pop(job.id, None)
                self._end_rerun(job)
        if cancelled:
            self._notify(self._record_cancelled(cancelled, now))
        return len(cancelled)

    def _stop_unstarted(self, batch: Batch) -> list[Job]:
        """The calls of a batch a worker has (or will have) that have not begun:
        a flag in the batch's monitor file makes its worker skip them. Flag
        first, then the stamp: a call stamped after this read sees the flag, so
        the list is exact."""
        batch.flagged = True
        try:
            fd = os.open(batch.monitor, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, b"\x01", CANCEL_AT)
            finally:
                os.close(fd)
        except OSError:
            return []
        stamp = read_monitor(batch.monitor)
        first = stamp[1] + 1 if stamp and stamp[0] == batch.id else 0
        return [j for j in batch.jobs[first:] if j.state not in FINAL]

    def _record_cancelled(self, jobs: list[Job], now: float) -> list[tuple[Job, tuple]]:
        """Write 'cancelled' outcomes, each with its own layer and TTL; returns
        the ``(job, outcome)`` pairs written."""
        layers: dict[int | None, dict[tuple, tuple[list, list]]] = {}
        pairs = []
        for j in jobs:
            rows, prevs = layers.setdefault(j.options.ttl, {}).setdefault(
                (j.options.group, j.gen), ([], []))
            row = (j.id, "cancelled", 0, None, now, None, None, None)
            rows.append(row)
            pairs.append((j, row))
            if j.prev:
                prevs.append(j.prev)
        for ttl, groups in layers.items():
            self.store_for(ttl).write_outcomes(
                [(group, gen, rows, prevs) for (group, gen), (rows, prevs) in groups.items()],
                ttl=ttl)
        return pairs

    def resubmit(self, entries: list, ttl: int | None = None,
                 options: Options | None = None) -> int:
        """Run stored tasks again, same ids: ``(SpecPage, Call, previous state[,
        runs so far])`` (runs so far: ``attempt_count`` goes on counting).

        With the options they were submitted with (hook included), or with
        ``options`` (a re-submission by ``reuse``: the current call's timeout,
        retries, hook). Skips tasks this runner is still running (so a resume
        runs each once).
        """
        jobs = []
        with self._lock:
            for page, call, prev, *runs_before in entries:
                tid = names.task_id(page.prefix, call.index)
                if tid in self._active:
                    continue
                opts = page.options
                job_options = Options(
                    group=page.group, ttl=opts.get("ttl"),
                    timeout=opts["timeout"] if options is None else options.timeout,
                    retries=opts["retries"] if options is None else options.retries,
                    save=opts["save"] if options is None else options.save,
                    # this kernel's own hook object if it submitted the page (a copy
                    # restored from the store would mutate copies of notebook state)
                    hook=self._page_hooks.get(page.prefix, opts.get("hook"))
                    if options is None else options.hook,
                    task_name=call.task_name,
                )
                job = Job(tid, page.funcs[call.func], call.args, call.kwargs, job_options,
                          page.prefix, call.task_name, prev=prev)
                job.runs_before = runs_before[0] if runs_before else 0
                if call.iterable:
                    job.items = call.args
                job.gen = page.gen
                job.submitted = page.created
                jobs.append(job)
                self._active[tid] = job
                if prev:
                    key = (job_options.cached, job_options.group, prev)
                    self._reruns[key] = self._reruns.get(key, 0) + 1
                live = self._live.setdefault((job_options.cached, job_options.group), [0, 0])
                live[0] += 1
        if not jobs:
            return 0
        if self.settings.backend == "sync":
            with self._lock:
                for j in jobs:
                    j.state = State.RUNNING
                    live = self._live[(j.options.cached, j.options.group)]
                    live[0] -= 1
                    live[1] += 1
            self._run_inline(jobs, False)
            return len(jobs)
        with self._lock:
            for j in jobs:
                self._enqueue(j)
        self._ensure_thread()
        self._wake.set()
        return len(jobs)

    def _end_rerun(self, job: Job) -> None:
        if job.prev:
            key = (job.options.cached, job.options.group, job.prev)
            left = self._reruns.get(key, 0) - 1
            if left > 0:
                self._reruns[key] = left
            else:
                self._reruns.pop(key, None)

    def _interrupted(self, job: Job, rest: list[Job]) -> None:
        err = TaskError("KeyboardInterrupt", "interrupted while running inline (sync)")
        tb = format_exception(err)
        now = time.time()
        self._finish([(job, outcome_of(job, "failure", now, now, None, dumps_exception(err, tb),
                                       tb))])
        if rest:
            with self._lock:
                for j in rest:
                    j.state = State.CANCELLED
                    self._live[(j.options.cached, j.options.group)][1] -= 1
                    self._active.pop(j.id, None)
            self._notify(self._record_cancelled(rest, now))
