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

Imported by pool workers: nothing heavier than :mod:`nbgroups.serialize`.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import Any, NamedTuple

from .serialize import dumps_exception, format_exception

Row = tuple  # a row in Outcome's layout (see the module docstring)

SUCCESS, FAILURE, CANCELLED = "success", "failure", "cancelled"


class Outcome(NamedTuple):
    """How one run of a task ended, as written to the store.

    ``result`` is a pickled value, a list of pickled chunks (``async_iter``) or
    None; ``error`` a pickled exception or None.
    """

    id: str
    state: str
    attempt: int
    started: float | None
    stopped: float | None
    result: Any
    error: bytes | None
    traceback: str | None


_F = Outcome._fields
id_of = itemgetter(_F.index("id"))
state_of = itemgetter(_F.index("state"))
attempt_of = itemgetter(_F.index("attempt"))
started_of = itemgetter(_F.index("started"))
stopped_of = itemgetter(_F.index("stopped"))
result_of = itemgetter(_F.index("result"))
error_of = itemgetter(_F.index("error"))
traceback_of = itemgetter(_F.index("traceback"))


def view(row: Row) -> Outcome:
    """A row as an :class:`Outcome` (off the hot path: records, hooks)."""
    return row if type(row) is Outcome else Outcome._make(row)


def row(task_id: str, state: str, attempt: int, started: float | None,
        stopped: float | None, result: Any = None, error: bytes | None = None,
        traceback: str | None = None) -> Row:
    """A row from its fields (the one place that knows their order)."""
    return (task_id, state, attempt, started, stopped, result, error, traceback)


def success(task_id: str, attempt: int, started: float, result: Any) -> Row:
    """The call returned; ``result`` is its pickled value. Stopped: now."""
    return (task_id, SUCCESS, attempt, started, time.time(), result, None, None)


def failure(task_id: str, attempt: int, started: float | None, exc: BaseException,
            result: Any = None, stopped: float | None = None) -> Row:
    """The run failed with ``exc`` (pickled here, with its traceback text).
    ``started`` None: it never began (stamped now)."""
    tb = format_exception(exc)
    now = time.time()
    return (task_id, FAILURE, attempt, now if started is None else started,
            now if stopped is None else stopped, result, dumps_exception(exc, tb), tb)


def cancelled(task_id: str, attempt: int, started: float | None, stopped: float) -> Row:
    """The run was cancelled before it began."""
    return (task_id, CANCELLED, attempt, started, stopped, None, None, None)


def with_id(o: Row, task_id: str, attempt: int) -> Row:
    """The same outcome for another task (one error, pickled once, for a whole batch)."""
    return (task_id, o[1], attempt, *o[3:])


def without_result(o: Row) -> Row:
    """The row with its result left out (``save=False``: hooks still saw it)."""
    return (*o[:5], None, *o[6:])


def with_result(o: Row, result: Any) -> Row:
    """The row with another result (an inline ``async_iter`` task's list of chunks)."""
    return (*o[:5], result, *o[6:])
