"""Values: task records as users see them, group counts, and the stored layouts.

Records outlive library upgrades, so every stored layout carries
:data:`SCHEMA_VERSION`. The stored forms are plain tuples (fast to pickle by
the ten thousand); the classes here are what the store hands back.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from .outcome import Outcome

SCHEMA_VERSION = 2  # 2: outcome rows carry output, worker, memory and traceback frames

__all__ = ["Outcome"]  # re-exported: it lives with its builders, in nbgroups.outcome


class State(str, enum.Enum):
    """Where a task is: queued, running, or one of the final states (success,
    failure, cancelled). A ``str`` enum: ``State.SUCCESS == 'success'``.

    ``finished`` is true for success and failure; ``final`` also for cancelled.

    Example:
        >>> from nbgroups import State
        >>> State.SUCCESS.finished, State.CANCELLED.finished, State.CANCELLED.final
        (True, False, True)
        >>> State('queued') is State.QUEUED
        True
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Success or failure: the task ran to an outcome."""
        return self in (State.SUCCESS, State.FAILURE)

    @property
    def final(self) -> bool:
        """Success, failure or cancelled: the task will not change by itself."""
        return self in (State.SUCCESS, State.FAILURE, State.CANCELLED)


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored: what was called, with what, and how it ended.

    ``success`` is ``True``/``False`` once the task finished, ``None`` while it
    is queued or running and for a cancelled task. ``result`` is the return
    value, or the exception for a failed task. ``saved`` is False for a task
    submitted with ``save=False``: its outcome is kept (state, times, the
    exception of a failure), its return value is not, so ``result`` is None
    without meaning that the call returned None.

    ``stdout`` and ``stderr`` are what the call printed (the last 64 K
    characters of each, a line saying how much was cut first); logging
    records and warnings are in ``stderr``, in order with what was written
    there. ``worker`` is ``'host:pid'`` of the process that ran it, ``memory``
    that process's peak resident memory in bytes when the call ended;
    ``submitted``, ``started`` and ``stopped`` are Unix times. Tasks stored by
    nbgroups before these were recorded have them None.
    """

    id: str
    name: str
    func: str
    args: tuple | None
    kwargs: dict | None
    result: Any
    group: str | None
    started: float | None
    stopped: float | None
    success: bool | None
    attempt_count: int
    traceback: str | None
    state: State = State.QUEUED
    submitted: float | None = None
    saved: bool = True
    schema: int = field(default=SCHEMA_VERSION, repr=False)
    stdout: str | None = field(default=None, repr=False)
    stderr: str | None = field(default=None, repr=False)
    worker: str | None = None
    memory: int | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        # Each value on one short line: a record shown in a cell must not print a
        # DataFrame argument whole, nor a traceback.
        from .triage import brief

        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            v = getattr(self, f.name)
            if f.name in ("started", "stopped", "submitted") and v is not None:
                text = _local_time(v)
            elif f.name in ("args", "kwargs", "result", "traceback"):
                text = brief(v)
            else:
                text = repr(v)
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def time_taken(self) -> float | None:
        """Seconds the task ran (queue time excluded), or None if it has not finished."""
        if self.started is None or self.stopped is None:
            return None
        return self.stopped - self.started

    @property
    def call(self) -> str:
        """The call as it was made, values shortened: ``'simulate(k=0.0, dt=0.01)'``."""
        from .triage import call_text

        return call_text(self.func, self.args, self.kwargs)

    @property
    def error(self) -> str | None:
        """The exception line of a failed task (``'ValueError: bad x'``); for an
        ``async_iter`` task, of its first failed item."""
        if self.success is not False:
            return None
        exc = self.result
        if isinstance(exc, list):  # async_iter: the items' results, exceptions in place
            exc = next((e for e in exc if isinstance(e, BaseException)), exc)
        if isinstance(exc, BaseException):
            type_name = getattr(exc, "type_name", None) or type(exc).__name__
            message = getattr(exc, "message", None) if hasattr(exc, "type_name") else str(exc)
            return f"{type_name}: {message}" if message else type_name
        return str(exc)


RUN_COLUMNS = ("stdout", "stderr", "worker", "memory", "submitted", "started", "stopped")


class TaskList(list):
    """A list of tasks with django-queryset-like helpers: :meth:`filter`,
    :meth:`exclude`, :meth:`values`, :meth:`to_dataframe`.

    Example:
        >>> from nbgroups import fetch_group, sweep
        >>> tasks = fetch_group(sweep(pow, 'doc-list-of-tasks', base=[2, 0], exp=[-1]), wait=-1)
        >>> [t.kwargs for t in tasks.filter(success=True)]
        [{'base': 2, 'exp': -1}]
        >>> tasks.exclude(success=True)[0].error
        'ZeroDivisionError: 0.0 cannot be raised to a negative power'
    """

    def filter(self, **fields: Any) -> TaskList:
        """Tasks whose attributes equal every given value: ``filter(success=True)``."""
        return TaskList(t for t in self if all(getattr(t, k) == v for k, v in fields.items()))

    def exclude(self, **fields: Any) -> TaskList:
        """Tasks left after removing those matching every given value."""
        return TaskList(t for t in self if not all(getattr(t, k) == v for k, v in fields.items()))

    def failures(self):
        """The failed tasks grouped by cause: exception type and message with numbers
        and quoted values folded (``ValueError: k must be > …  x 5``), largest group
        first, each with its tasks and their calls (:class:`nbgroups.triage.Failures`;
        in a notebook, an expandable list with tracebacks and output)."""
        from .triage import group_failures

        return group_failures(self)

    def timeline(self):
        """A Gantt of these tasks per worker over time, coloured by outcome: an
        inline SVG a notebook displays (:class:`nbgroups.timeline.Timeline`)."""
        from .timeline import Timeline

        return Timeline(self)

    def to_chrome_trace(self, path) -> str:
        """Write these tasks' runs as a Chrome trace JSON file (open it in
        https://ui.perfetto.dev or chrome://tracing); returns the path."""
        from .timeline import chrome_trace

        return chrome_trace(self, path)

    def values(self, *fields: str) -> list[dict[str, Any]]:
        """One dict per task with the named attributes (all record fields by default)."""
        names = fields or tuple(TaskRecord.__dataclass_fields__)
        return [{n: getattr(t, n) for n in names if n != "schema"} for t in self]

    def to_dataframe(self):
        """A pandas DataFrame: one row per task. The columns a reader looks at come
        first: one per keyword parameter, then ``result`` (dict results expanded into
        columns), ``success``, ``error``, ``time_taken``, ``attempt_count``,
        ``state``; the task's ``id``, ``name`` and ``group``; last, what was seen of
        its run: ``stdout``, ``stderr``, ``worker``, ``memory``, ``submitted``,
        ``started``, ``stopped`` (see :class:`TaskRecord`; the three times as
        pandas timestamps in UTC, ``NaT`` where there is none).

        Dict results are expanded when every successful result is a dict (one
        column per key, ``result.KEY`` where a key is also a parameter's name);
        otherwise ``result`` holds the value. A failed task's result columns
        are empty: its exception is in ``error``. Task columns (``id``,
        ``name``, ``group``, ``state``) give way to parameters of the same
        name, then appear as ``task.id`` and so on.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        fixed = ("success", "error", "time_taken", "attempt_count")
        task_columns = ("state", "id", "name", "group", *RUN_COLUMNS)
        done = [t.result for t in self if t.success]
        expand = bool(done) and all(isinstance(r, dict) for r in done)
        rows = []
        for t in self:
            params: dict[str, Any] = {}
            if t.args is not None and len(t.args) == 1 and not t.kwargs:
                params["arg"] = t.args[0]
            elif t.args:
                params["args"] = t.args
            params.update(t.kwargs or {})
            row: dict[str, Any] = {k if k not in fixed else f"param.{k}": v
                                   for k, v in params.items()}
            if expand:
                for k, v in (t.result.items() if t.success else ()):
                    row[k if k not in row and k not in fixed and k not in task_columns
                        else f"result.{k}"] = v
            else:
                row["result" if "result" not in row else "result.value"] = (
                    t.result if t.success else None)
            row.update(success=t.success, error=t.error, time_taken=t.time_taken(),
                       attempt_count=t.attempt_count)
            for k, v in (("state", t.state.value), ("id", t.id), ("name", t.name),
                         ("group", t.group), *((k, getattr(t, k)) for k in RUN_COLUMNS)):
                row[k if k not in params else f"task.{k}"] = v
            rows.append(row)
        if not rows:
            return pd.DataFrame(columns=["result", *fixed, *task_columns])
        df = pd.DataFrame(rows)
        for k in ("submitted", "started", "stopped"):  # Unix times, shown as dates (UTC)
            col = k if k in df.columns and f"task.{k}" not in df.columns else f"task.{k}"
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df


@dataclass(frozen=True, repr=False)
class GroupCounts:
    """Counts of one group, from :func:`group_counts`. ``done`` counts successes.

    Fields: ``group``, ``submitted``, ``done``, ``failed``, ``cancelled``,
    ``running``, ``queued``, ``reused`` (calls of ``reuse=True`` submissions
    that found a task already done), ``first_submitted``, ``last_finished``
    (Unix times or ``None``; the repr shows them as local date and time and
    the run's length). ``finished`` is ``done + failed``; ``settled``
    says every submitted task finished or was cancelled.

    Example:
        >>> from nbgroups import GroupCounts
        >>> c = GroupCounts('g', submitted=3, done=1, failed=1, running=1)
        >>> c.finished, c.settled
        (2, False)
    """

    group: str
    submitted: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    queued: int = 0
    first_submitted: float | None = None
    last_finished: float | None = None
    reused: int = 0

    @property
    def finished(self) -> int:
        """Successes plus failures (what ``count=`` waits for)."""
        return self.done + self.failed

    @property
    def settled(self) -> bool:
        """Every submitted task finished or was cancelled."""
        return self.finished + self.cancelled >= self.submitted

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)}" for name in (
            "submitted", "done", "failed", "cancelled", "running", "queued", "reused"))
        first, last = self.first_submitted, self.last_finished
        times = f"first_submitted={_local_time(first)}, last_finished={_local_time(last)}"
        if first is not None and last is not None:
            times += f" ({last - first:.1f} s after)"
        return f"GroupCounts({self.group!r}, {counts}, {times})"


def _local_time(t: float | None) -> str:
    """A ``time.time()`` reading as ``2026-11-29 23:12:57.717`` (local time), or None."""
    if t is None:
        return "None"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Call(NamedTuple):
    """One submitted task inside a spec page."""

    index: int  # type: ignore[assignment]  # a field may shadow tuple.index
    func: int  # index into SpecPage.funcs
    args: tuple | None
    kwargs: dict | None
    task_name: str | None
    iterable: bool = False  # async_iter: args is the list of items


@dataclass(frozen=True)
class SpecPage:
    """A batch of submitted tasks of one group, written in one store entry.

    ``funcs`` holds ``(display name, pickled callable or None for a dotted
    path)``, or ``(display name, pickled callable, stored values)`` for a
    callable whose large captured values are stored by digest
    (:mod:`nbgroups.values`); ``options`` the submission options shared by the
    page's calls.
    """

    prefix: str
    group: str | None
    gen: int
    seq: int
    created: float
    funcs: tuple[tuple, ...]
    calls: tuple[Call, ...]
    options: dict
    schema: int = SCHEMA_VERSION
