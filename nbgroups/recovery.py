"""Fault handling for the runner: dead workers and timeouts.

loky fails every in-flight batch when one worker dies and then kills the
others. The executor records which workers had died before that; each batch's
monitor file says which call its worker was running. From the two,
:meth:`Recovery._salvage` fails exactly the call that died with its worker and
puts the rest of the batch back in the queue. :meth:`Recovery._check_timeouts`
kills the worker of a call past its ``timeout``; the same path then fails it
with :class:`~nbgroups.errors.TaskTimeout`.
"""

from __future__ import annotations

import signal
import time

from . import monitor
from .errors import TaskTimeout, WorkerDied
from .jobs import FINAL, Batch, Job, outcome_of
from .serialize import dumps_exception, format_exception


class Recovery:
    """Mixed into :class:`~nbgroups.runner.Runner`: what happens when a pool breaks."""

    def _salvage(self, batch: Batch, exc: BaseException) -> list[tuple[Job, tuple]]:
        """A batch whose pool broke: fail the call that died with its worker, re-queue the rest.

        loky fails every in-flight batch when one worker dies, then kills the
        other workers. The executor noted which workers had died *before* that
        (:meth:`Executor.dead_workers`) and each batch's monitor file says which
        call its worker was running, so: a call whose worker died on its own
        fails with :class:`WorkerDied` naming the exit code or signal (retries
        apply); a call killed for its timeout fails with :class:`TaskTimeout`;
        every other call of the batch (finished but not yet returned, or not
        started) is re-queued, and its cut-short run does not count as an
        attempt. When the backend cannot tell which worker died, the running
        call is a *suspect*: re-run alone, it fails only if its worker dies again.
        """
        stamp = monitor.read(batch.monitor) if batch.monitor else None
        if stamp is not None and stamp.batch != batch.id:
            stamp = None  # the file's previous batch: this one had not begun
        running = stamp.index if stamp is not None else None
        pid = stamp.pid if stamp is not None else None
        executor = self._executor
        dead = executor.dead_workers(batch.pool) if executor is not None else None
        cause = batch.cause
        if cause is None and running is not None:
            if dead:
                if pid in dead and (batch.pool, pid) not in executor.killed:
                    cause = WorkerDied("WorkerDied", f"the worker process (pid {pid}) running "
                                       f"this task died: {self._exit_reason(dead[pid])}")
            elif batch.jobs[running].suspect:
                cause = WorkerDied("WorkerDied", f"the worker process (pid {pid}) running this "
                                   f"task died twice: {self._exit_reason(exc)}")
        failed = []
        with self._lock:
            for i, job in reversed(list(enumerate(batch.jobs))):
                if job.state in FINAL:  # cancelled meanwhile: nothing to salvage
                    continue
                if i == running and cause is not None:
                    tb = format_exception(cause)
                    failed.append((job, outcome_of(job, "failure", stamp.started, time.time(), None,
                                                   dumps_exception(cause, tb), tb)))
                    continue
                job.attempt -= 1  # this run was cut short: it does not count
                job.suspect = job.suspect or (i == running and not dead)
                self._ready.appendleft(job)
        return failed

    @staticmethod
    def _exit_reason(code: int | BaseException) -> str:
        """``'killed by signal SIGKILL (9)'``, ``'exited with code 3'``, or loky's words."""
        if isinstance(code, int):
            if code >= 0:
                return f"it exited with code {code}"
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "an unknown signal"
            hint = {
                signal.SIGKILL: " (sent by another process or by the kernel's out-of-memory "
                                "killer)",
                signal.SIGSEGV: " (a segmentation fault, e.g. in C code)",
            }.get(-code, "")
            return f"it was killed by signal {name} ({-code}){hint}"
        lines = [line.strip() for line in str(code).strip().splitlines() if line.strip()]
        detail = [line for line in lines if "exit code" in line.lower()]
        return (detail or lines or [type(code).__name__])[-1]

    def _recover(self) -> None:
        self.restarts += 1
        if self._executor is not None:
            self._executor.restart()

    def _check_timeouts(self) -> None:
        if self._executor is None or not self._executor.monitored:
            return
        now = time.time()
        for batch in list(self._inflight.values()):
            # A call with a timeout is dispatched alone or last in its batch.
            if batch.cause is not None or not (batch.jobs[0].options.timeout
                                               or batch.jobs[-1].options.timeout):
                continue
            stamp = monitor.read(batch.monitor)
            if stamp is None or stamp.batch != batch.id or stamp.index >= len(batch.jobs):
                continue
            limit = batch.jobs[stamp.index].options.timeout
            if limit and now - stamp.started > limit:
                batch.cause = TaskTimeout(
                    "TaskTimeout", f"the task ran longer than its timeout of {limit:g} s; "
                    "its worker was replaced")
                self._executor.kill_worker(stamp.pid)
