"""The runner's in-memory values: options, jobs, open pages, batches.

A :class:`Job` is a task (or one chunk of an ``async_iter`` task) between its
submission and its final outcome; it lives only in the kernel that submitted
it. What outlives the kernel is in the store (:mod:`nbgroups.records`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from . import outcome
from .records import State
from .signalsafe import Wake

# str -> State, and identity checks: an Enum's __call__ and __hash__ run Python
# code, measurable at ten thousand tasks a batch
STATE_OF = {s.value: s for s in State}
FINAL = (State.SUCCESS, State.FAILURE, State.CANCELLED)
QUEUED, RUNNING, CANCELLED = State.QUEUED, State.RUNNING, State.CANCELLED  # for hot loops
STORED_STATES = ("success", "failure", "cancelled")


@dataclass(frozen=True)
class Options:
    """Per-submission options, after validation and defaults."""

    group: str | None = None
    ttl: int | None = None  # not None: the cached layer, with this TTL
    timeout: float | None = None
    retries: int = 0
    hook: Any = None
    save: bool = True
    task_name: str | None = None

    @property
    def cached(self) -> bool:
        """In the cache layer (whatever its TTL): what live counts and cancel key on."""
        return self.ttl is not None


class Job:
    """A task (or one chunk of an ``async_iter`` task) inside this runner.

    Made once per call on the caller's thread: the attributes every job sets
    are slots; the ones few jobs change keep class-level defaults until set
    (an instance dict is made only then).
    """

    __slots__ = (
        "__dict__",
        "args",
        "attempt",
        "func",
        "gen",
        "id",
        "kwargs",
        "options",
        "prefix",
        "state",
        "submitted",
    )
    task_name: str | None = None
    prev: str | None = None  # the final state a re-run replaces (retry_group)
    items: list | None = None  # async_iter: the list of items
    chunks: IterState | None = None  # async_iter: parent's chunk bookkeeping
    parent: tuple | None = None  # async_iter chunk: (parent job, chunk index)
    suspect = False  # was running when a worker died: re-run alone
    runs_before = 0  # a retry_group re-run: runs its earlier outcome counted
    shown: tuple | None = None  # (args, kwargs) as records show them, made on first read

    def __init__(self, tid: str, func: tuple[str, bytes | None], args: Any,
                 kwargs: dict | None, options: Options, prefix: str,
                 task_name: str | None = None, prev: str | None = None) -> None:
        self.id = tid
        self.func = func  # (display name, pickled callable or None)
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.prefix = prefix
        self.gen = 0
        self.attempt = 0
        self.submitted: float | None = None  # its page's time, as the store records it
        self.state = State.QUEUED
        if task_name is not None:
            self.task_name = task_name
        if prev is not None:
            self.prev = prev


def runs_of(job: Job) -> int:
    """The run number an outcome made in this process records (a worker gets its own)."""
    return (job.attempt or 1) + job.runs_before


def failed(job: Job, exc: BaseException, started: float | None = None) -> outcome.Row:
    """``job`` failed here with ``exc`` (never sent, its worker died, ...)."""
    return outcome.failure(job.id, runs_of(job), started, exc)


@dataclass
class IterState:
    """An ``async_iter`` task's chunks: results in input order, the first failure."""

    results: list
    remaining: int
    failed: bool = False
    error: bytes | None = None
    traceback: str | None = None
    started: float | None = None
    frames: tuple | None = None  # the first failure's traceback as data
    infos: dict = field(default_factory=dict)  # chunk index -> its outcome's info


@dataclass
class OpenPage:
    """Calls of one group and options, gathering until the next flush writes them."""

    prefix: str
    options: Options
    created: float
    funcs: list = field(default_factory=list)  # (callable, what its key's ids name)
    func_index: dict = field(default_factory=dict)  # key -> the page's entry for it
    jobs: list = field(default_factory=list)


@dataclass
class Batch:
    """Calls sent to the executor together, with what is needed to trace a fault."""

    id: int
    jobs: list
    monitor: str | None
    submitted: float
    future: Any = None
    cause: BaseException | None = None  # set when the runner killed the worker
    split: bool = False  # each call pickled on its own (the worker could not load it whole)
    cancelled: bool = False  # cancel() took it back from the pool before it started
    flagged: bool = False  # its monitor file holds the cancel flag
    stopping: bool = False  # flagged by a stopping runner: its skipped calls stay unfinished
    pool: int = 0  # the executor generation (pool) the batch was sent to


class Outbox:
    """Runs that came back, for the completer: batches from the executor (its
    done-callbacks, any thread) and runs finished here (an empty iterable, a
    call that cannot be sent). Appending wakes the runner thread."""

    def __init__(self, wake: Wake) -> None:
        self._items: collections.deque[tuple[Batch | None, list]] = collections.deque()
        self._wake = wake

    def batch_done(self, batch: Batch) -> None:
        """The executor's future of ``batch`` is done."""
        self._items.append((batch, []))
        self._wake.set()

    def finished(self, pairs: list) -> None:
        """``(job, outcome row)`` pairs that ended in this process."""
        self._items.append((None, pairs))
        self._wake.set()

    def take(self) -> tuple[Batch | None, list] | None:
        """The oldest entry, or None when empty."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def __bool__(self) -> bool:
        return bool(self._items)
