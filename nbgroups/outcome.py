"""How one run of a task ended: the outcome row, built and read here only.

A worker builds one row per call; the runner reads a few fields of each,
then writes the rows to the store as they are. Rows are plain tuples in
:class:`Outcome`'s field order: they cross the process boundary and are
stored by the ten thousand, and the C pickler handles a tuple ~5x faster than
a NamedTuple (measured, 10,000 rows: dumps 2.3 ms vs 12 ms, loads 3.8 vs
6.2; building NamedTuples cost 3 ms more). So :class:`Outcome` names the
layout and is what readers off the hot path get (:func:`view`); the builders
below make rows, and the ``*_of`` readers (C itemgetters, as fast as ``o[1]``)
read them by name.

Rows stored before schema 2 have the first eight fields only; :func:`view`
reads them with the later fields None.

Imported by pool workers: nothing heavier than :mod:`nbgroups.serialize`.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any, NamedTuple

from . import capture
from .serialize import dumps_exception
from .tracebacks import render, summarize

Row = tuple  # a row in Outcome's layout (see the module docstring)

SUCCESS, FAILURE, CANCELLED = "success", "failure", "cancelled"


class Outcome(NamedTuple):
    """How one run of a task ended, as written to the store.

    ``result`` is a pickled value, a list of pickled chunks (``async_iter``) or
    None; ``error`` a pickled exception or None. Since schema 2: ``info`` is
    ``(stdout, stderr, worker, memory)``: the call's captured output (bounded;
    logging and warnings in stderr), ``'host:pid'`` of the process that ran
    it and that process's peak resident memory in bytes when the call ended
    (one tuple, not four fields: a worker hands the same tuple to the calls of
    a batch that printed nothing, and pickle then writes it once);
    ``frames`` the traceback as data (:func:`nbgroups.tracebacks.summarize`).
    """

    id: str
    state: str
    attempt: int
    started: float | None
    stopped: float | None
    result: Any
    error: bytes | None
    traceback: str | None
    info: tuple | None = None  # (stdout, stderr, worker, memory)
    frames: tuple | None = None

    @property
    def stdout(self) -> str | None:
        return self.info[0] if self.info else None

    @property
    def stderr(self) -> str | None:
        return self.info[1] if self.info else None

    @property
    def worker(self) -> str | None:
        return self.info[2] if self.info else None

    @property
    def memory(self) -> int | None:
        return self.info[3] if self.info else None


FIELDS = len(Outcome._fields)
NO_INFO = None  # nothing known of the run (a row the runner made: cancelled, never sent)
_F = Outcome._fields
id_of = itemgetter(_F.index("id"))
state_of = itemgetter(_F.index("state"))
attempt_of = itemgetter(_F.index("attempt"))
started_of = itemgetter(_F.index("started"))
stopped_of = itemgetter(_F.index("stopped"))
result_of = itemgetter(_F.index("result"))
error_of = itemgetter(_F.index("error"))
traceback_of = itemgetter(_F.index("traceback"))
info_of = itemgetter(_F.index("info"))
frames_of = itemgetter(_F.index("frames"))


def view(row: Row) -> Outcome:
    """A row as an :class:`Outcome` (off the hot path: records, hooks); a row of
    an older schema has its missing fields None."""
    if type(row) is Outcome:
        return row
    if len(row) < FIELDS:
        return Outcome._make((*row, *(None,) * (FIELDS - len(row))))
    return Outcome._make(row)


def row(task_id: str, state: str, attempt: int, started: float | None,
        stopped: float | None, result: Any = None, error: bytes | None = None,
        traceback: str | None = None, info: tuple | None = NO_INFO,
        frames: tuple | None = None) -> Row:
    """A row from its fields (the one place that knows their order); ``info``:
    ``(stdout, stderr, worker, memory)``."""
    return (task_id, state, attempt, started, stopped, result, error, traceback, info, frames)


def merged_info(infos: list) -> tuple | None:
    """The info of an ``async_iter`` task from its chunks' (in input order): their
    output joined (bounded again), the last chunk's worker, the largest peak memory."""
    infos = [i for i in infos if i is not None]
    if not infos:
        return None
    out, err = capture._Buffer(), capture._Buffer()
    for i in infos:
        if i[0]:
            out.write(i[0])
        if i[1]:
            err.write(i[1])
    memory = max((i[3] for i in infos if i[3] is not None), default=None)
    return (out.text(), err.text(), infos[-1][2], memory)


def success(task_id: str, attempt: int, started: float, result: Any,
            info: tuple | None = NO_INFO) -> Row:
    """The call returned; ``result`` is its pickled value. Stopped: now.
    ``info``: ``(stdout, stderr, worker, memory)``."""
    return (task_id, SUCCESS, attempt, started, time.time(), result, None, None, info, None)


def failure(task_id: str, attempt: int, started: float | None, exc: BaseException,
            result: Any = None, stopped: float | None = None,
            info: tuple | None = NO_INFO) -> Row:
    """The run failed with ``exc`` (pickled here, with its traceback as text and
    as data, nbgroups' own frames left out). ``started`` None: it never began
    (stamped now)."""
    frames = summarize(exc)
    tb = render(frames)
    now = time.time()
    return (task_id, FAILURE, attempt, now if started is None else started,
            now if stopped is None else stopped, result, dumps_exception(exc, tb), tb,
            info, frames)


def cancelled(task_id: str, attempt: int, started: float | None, stopped: float) -> Row:
    """The run was cancelled before it began."""
    return (task_id, CANCELLED, attempt, started, stopped, None, None, None, NO_INFO, None)


def with_id(o: Row, task_id: str, attempt: int) -> Row:
    """The same outcome for another task (one error, pickled once, for a whole batch)."""
    return (task_id, o[1], attempt, *o[3:])


def without_result(o: Row) -> Row:
    """The row with its result left out (``save=False``: hooks still saw it)."""
    return (*o[:5], None, *o[6:])


def with_info(o: Row, info: tuple) -> Row:
    """The row with its ``(stdout, stderr, worker, memory)`` replaced (a worker
    that died: the runner knows its pid)."""
    o = view(o)
    return (*o[:8], info, o.frames)


def with_result(o: Row, result: Any) -> Row:
    """The row with another result (an inline ``async_iter`` task's list of chunks)."""
    return (*o[:5], result, *o[6:])
