"""Group control for the runner: cancel, run stored tasks again, Ctrl-C inline.

``cancel`` takes a group's tasks back before they start; ``resubmit`` runs
stored tasks again under their ids (``retry_group``, ``resume_group``, a failed
call re-submitted with ``reuse=True``). While a re-run is on its way its
previous final state is not counted (:meth:`nbgroups.live.LiveTasks.reruns`),
so progress views show it as queued or running. Also here: which process
owns a page (:func:`process_id`, :func:`owner_alive`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Collection

from . import monitor, names, outcome
from .completion import Completer, Finished, Notify
from .dispatch import Dispatcher
from .errors import TaskError
from .jobs import FINAL, Batch, Job, Options, failed
from .live import LiveTasks
from .pages import PageWriter
from .records import State
from .stores import Stores


def process_id() -> str:
    """``host:pid:start``: this process, as the owner recorded with its pages."""
    return f"{socket.gethostname()}:{os.getpid()}:{monitor.process_start(os.getpid())}"


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
    return monitor.running(int(pid_text), start)  # a zombie (killed, not reaped) is gone


def owner_local(owner: str | None) -> bool:
    """Whether a page's owner ran on this host (then :func:`owner_alive` knows)."""
    return owner is not None and owner.partition(":")[0] == socket.gethostname()


class Control:
    """Cancel a group's unstarted tasks; run stored tasks again."""

    def __init__(self, lock: threading.RLock, live: LiveTasks, dispatcher: Dispatcher,
                 completer: Completer, stores: Stores, writer: PageWriter,
                 notify: Notify) -> None:
        self.lock = lock
        self.live = live
        self.dispatcher = dispatcher
        self.completer = completer
        self.stores = stores
        self.writer = writer
        self.notify = notify

    def cancel(self, group: str | None, cached: bool, ids: Collection[str] | None = None) -> int:
        """Cancel this process's tasks of ``group`` that have not started: those
        waiting here, and batches the pool has not yet passed to a worker.
        ``ids``: instead, the tasks of these ids, whatever their group (the
        futures' ``cancel()``); a batch already handed to the pool is then taken
        back only if it holds nothing else. (The caller flushed first.)"""
        now = time.time()

        def wanted(j: Job) -> bool:
            if ids is not None:
                return j.id in ids
            return j.options.group == group and j.options.cached == cached

        with self.lock:
            found = {id(j): j for j in self.dispatcher.take_queued(wanted)}
            # Batches handed to the pool but not begun: cancelled if the pool
            # has not passed them to a worker yet (loky's queue holds a few).
            executor = self.dispatcher.executor
            takes_back = executor is not None and executor.cancels_queued
            for batch in self.dispatcher.in_flight() if takes_back else ():
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
            self.live.settle([(job, State.CANCELLED) for job in cancelled])
        if cancelled:
            self.notify(self.record_cancelled(cancelled, now))
        return len(cancelled)

    @staticmethod
    def _stop_unstarted(batch: Batch) -> list[Job]:
        """The calls of a batch a worker has (or will have) that have not begun:
        the cancel flag in the batch's monitor file makes its worker skip them
        (flag first, then the stamp read: the list is exact)."""
        assert batch.monitor is not None
        batch.flagged = True
        if not monitor.flag_cancel(batch.monitor):
            return []
        stamp = monitor.read(batch.monitor)
        first = stamp.call + 1 if stamp is not None and stamp.batch == batch.id else 0
        return [j for j in batch.jobs[first:] if j.state not in FINAL]

    def record_cancelled(self, jobs: list[Job], now: float) -> list[Finished]:
        """Write 'cancelled' outcomes, each with its own layer and TTL; returns
        the ``(job, outcome)`` pairs written."""
        layers: dict[int | None, dict[tuple, tuple[list, list]]] = {}
        pairs: list[Finished] = []
        for j in jobs:
            rows, prevs = layers.setdefault(j.options.ttl, {}).setdefault(
                (j.options.group, j.gen), ([], []))
            row = outcome.cancelled(j.id, 0, None, now)
            rows.append(row)
            pairs.append((j, row))
            if j.prev:
                prevs.append(j.prev)
        for ttl, groups in layers.items():
            self.stores.layer(ttl).write_outcomes(
                [(group, gen, rows, prevs) for (group, gen), (rows, prevs) in groups.items()],
                ttl=ttl)
        return pairs

    def rerun_jobs(self, entries: list, options: Options | None = None) -> list[Job]:
        """Jobs for stored tasks to run again, same ids: ``(SpecPage, Call,
        previous state[, runs so far])`` (runs so far: ``attempt_count`` goes on
        counting); tracked and counted as queued.

        With the options they were submitted with (hook included), or with
        ``options`` (a re-submission by ``reuse``: the current call's timeout,
        retries, hook). Skips tasks this runner still holds (so a resume runs
        each once).
        """
        jobs = []
        with self.lock:
            for page, call, prev, *runs_before in entries:
                tid = names.task_id(page.prefix, call.index)
                if self.live.holds(tid):
                    continue
                opts = page.options
                job_options = Options(
                    group=page.group, ttl=opts.get("ttl"),
                    timeout=opts["timeout"] if options is None else options.timeout,
                    retries=opts["retries"] if options is None else options.retries,
                    save=opts["save"] if options is None else options.save,
                    hook=self.writer.hook_of(page.prefix, opts.get("hook"))
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
                self.live.rerun(job)
        return jobs

    def interrupted(self, job: Job, rest: list[Job]) -> None:
        """Ctrl-C inside an inline task: it failed, the ones after it are cancelled."""
        err = TaskError("KeyboardInterrupt", "interrupted while running inline (sync)")
        now = time.time()
        self.completer.finish([(job, failed(job, err, now))])
        if rest:
            self.live.settle([(j, State.CANCELLED) for j in rest])
            self.notify(self.record_cancelled(rest, now))
