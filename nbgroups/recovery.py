"""Fault handling for the runner: dead workers and timeouts.

loky fails every in-flight batch when one worker dies and then kills the
others. The executor records which workers had died before that; each batch's
monitor file says which call its worker was running. From the two,
:meth:`FaultHandler.salvage` fails exactly the call that died with its worker
and puts the rest of the batch back in the queue.
:meth:`FaultHandler.check_timeouts` kills the worker of a call past its
``timeout``; the same path then fails it with :class:`~nbgroups.errors.TaskTimeout`.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

from . import monitor
from .dispatch import Dispatcher
from .errors import TaskTimeout, WorkerDied
from .jobs import FINAL, Batch, Job, failed
from .outcome import Row, with_info


class FaultHandler:
    """Salvages the batches of a broken pool, restarts it, times calls out."""

    def __init__(self, lock: threading.RLock, dispatcher: Dispatcher) -> None:
        self.lock = lock
        self.dispatcher = dispatcher
        self.restarts = 0  # pools replaced after a worker died

    def salvage(self, batch: Batch, exc: BaseException) -> list[tuple[Job, Row]]:
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
        running = stamp.call if stamp is not None else None
        executor = self.dispatcher.executor
        dead = executor.dead_workers(batch.pool) if executor is not None else None
        cause = batch.cause
        if self.dispatcher.stopped:
            cause = None  # the kernel or interpreter is stopping: not the tasks' fault
        elif cause is None and stamp is not None:
            pid = stamp.pid
            if dead:
                # SIGTERM is how a shutdown stops processes (ipykernel at Restart,
                # systemd, docker stop): not the task's fault, it runs again
                if pid in dead and dead[pid] != -signal.SIGTERM and executor is not None and \
                        (batch.pool, pid) not in executor.killed:
                    cause = WorkerDied("WorkerDied", f"the worker process (pid {pid}) running "
                                       f"this task died: {exit_reason(dead[pid])}")
            elif batch.jobs[stamp.call].suspect:
                cause = WorkerDied("WorkerDied", f"the worker process (pid {pid}) running this "
                                   f"task died twice: {exit_reason(exc)}")
        lost = []
        with self.lock:
            for i, job in reversed(list(enumerate(batch.jobs))):
                if job.state in FINAL:  # cancelled meanwhile: nothing to salvage
                    continue
                if i == running and cause is not None and stamp is not None:
                    died = failed(job, cause, stamp.started)
                    if executor is not None and executor.name != "dask":  # a pid, not a token
                        died = with_info(died, (None, None,
                                                f"{socket.gethostname()}:{stamp.pid}", None))
                    lost.append((job, died))
                    continue
                job.attempt -= 1  # this run was cut short: it does not count
                job.suspect = job.suspect or (i == running and not dead)
                self.dispatcher.put_back(job)
        return lost

    def recover(self) -> None:
        """The current pool broke: replace it."""
        self.restarts += 1
        if self.dispatcher.executor is not None:
            self.dispatcher.executor.restart()

    def check_timeouts(self) -> None:
        """Kill the worker of a call past its timeout (it then fails with TaskTimeout)."""
        executor = self.dispatcher.executor
        if executor is None or not executor.monitored:
            return
        now = time.time()
        for batch in self.dispatcher.in_flight():
            # A call with a timeout is dispatched alone or last in its batch.
            if batch.cause is not None or batch.monitor is None or not (
                    batch.jobs[0].options.timeout or batch.jobs[-1].options.timeout):
                continue
            stamp = monitor.read(batch.monitor)
            if stamp is None or stamp.batch != batch.id or stamp.call >= len(batch.jobs):
                continue
            limit = batch.jobs[stamp.call].options.timeout
            if limit and now - stamp.started > limit:
                batch.cause = TaskTimeout(
                    "TaskTimeout", f"the task ran longer than its timeout of {limit:g} s; "
                    "its worker was replaced")
                executor.kill_worker(stamp.pid)


def exit_reason(code: int | BaseException) -> str:
    """``'killed by signal SIGKILL (9)'``, ``'exited with code 3'``, or loky's words."""
    if isinstance(code, int):
        if code >= 0:
            return f"it exited with code {code}"
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"it was killed by an unknown signal ({-code})"
        hint = {
            signal.SIGKILL: " (sent by another process or by the kernel's out-of-memory "
                            "killer)",
            signal.SIGSEGV: " (a segmentation fault, e.g. in C code)",
        }.get(sig, "")
        return f"it was killed by signal {sig.name} ({-code}){hint}"
    lines = [line.strip() for line in str(code).strip().splitlines() if line.strip()]
    detail = [line for line in lines if "exit code" in line.lower()]
    return (detail or lines or [type(code).__name__])[-1]
