"""Inline runs: the ``sync`` option and backend run calls in the submitting thread.

The same worker code as a pool (:class:`~nbgroups.executors.sync.SyncExecutor`
calls :func:`nbgroups.worker.run_batch`), the same outcome rows and the same
completion path, one call at a time. A Ctrl-C inside a call stops the cell:
that call fails, the ones after it are cancelled (and stay resumable).
"""

from __future__ import annotations

from collections.abc import Callable

from .completion import Completer
from .control import Control
from .errors import SerializationError
from .executors.sync import SyncExecutor
from .jobs import FINAL, Job
from .live import LiveTasks
from .outcome import FAILURE, error_of, result_of, state_of, with_result
from .serialize import dumps, loads_exception


class InlineRunner:
    """Runs jobs here and now, retries included, and records them."""

    def __init__(self, live: LiveTasks, completer: Completer, control: Control,
                 options: tuple | None = None) -> None:
        self.options = options  # the worker options of a batch (capture, log level)
        self.value_dir: Callable[[], str | None] = lambda: None  # stored values (the runner's)
        self.live = live
        self.completer = completer
        self.control = control
        self._executor = SyncExecutor(1)

    def run(self, jobs: list[Job], raise_errors: bool) -> None:
        """Run ``jobs`` (already counted as running) one after the other;
        ``raise_errors``: a failed call raises its exception here."""
        self.live.track(j for j in jobs if j.state not in FINAL)
        for n, job in enumerate(jobs):
            if job.state in FINAL:  # failed already (an argument that does not pickle)
                if raise_errors:
                    raise SerializationError(
                        "an argument of this call cannot be pickled; it was not run")
                continue
            try:
                while True:
                    job.attempt += 1
                    call = (job.id, 0, job.items if job.items is not None else job.args,
                            job.kwargs, job.items is not None, job.attempt + job.runs_before)
                    options = None if self.options is None else \
                        (*self.options, self.value_dir())
                    payload = dumps((0, [job.func], [call], options))
                    (out,) = self._executor.submit(payload, None).result()
                    if state_of(out) == FAILURE and job.attempt <= job.options.retries:
                        continue
                    break
            except KeyboardInterrupt:
                # Ctrl-C / kernel interrupt inside an inline task stops the cell:
                # this task failed, the ones after it are cancelled (resumable).
                self.control.interrupted(job, jobs[n + 1:])
                raise
            if job.items is not None and result_of(out) is not None:
                # same shape as a pooled async_iter (a list of chunks): a failed
                # iter task's result is then the items' list, not its first error
                out = with_result(out, [result_of(out)])
            self.completer.finish([(job, out)])
            if raise_errors and state_of(out) == FAILURE:
                raise loads_exception(error_of(out))
