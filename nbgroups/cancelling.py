"""Cancelling a group whose tasks are queued in other processes (the dashboard's
Cancel, run in a process that owns none of them).

::

    requester: cancel_everywhere(runner, group)
       1. its own runner's queued tasks of the group: cancelled here
       2. a request pinned to the store's board ───────────▶ x GROUP GEN
       3. waits for the live owners' answers  ◀── y … OWNER n ─┐
       4. unfinished tasks whose owner is gone: recorded       │
          cancelled in the store, by the requester             │
                                                               │
    owner: every runner holding tasks polls the board (CancelWatcher, from its
           thread's loop, at most every WATCH_SECONDS while it holds tasks),
           cancels what it holds of the group exactly as cancel_group does
           (queued calls cancelled, running ones finish) and answers ──┘

The store is the only channel: processes of any kernel on any machine that
shares the store see the board, and nothing but the store is needed to find
each other. The owner of a task is the process recorded with its page (see
:func:`nbgroups.control.owner_alive`); one that is gone (killed, or on
another host, as ``resume_group`` decides) cannot answer, so its unfinished
tasks are recorded cancelled directly, as that owner would have recorded
them. A request lives a few seconds: tasks submitted to the group while it is
under way are cancelled too, as if the click had come a moment later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from . import names, outcome
from .control import owner_alive
from .store.cancel_board import LIFETIME, CancelBoard, fresh
from .stores import Stores

log = logging.getLogger("nbgroups")

WATCH_SECONDS = 0.2  # how often a busy runner reads the board, at most
ANSWER_SECONDS = 5.0  # how long a requester waits for the live owners' answers
# ... and at least (a runner that holds re-runs of the group is not recorded as
# its owner: it answers within a watch period or two of its loop, ~0.5 s apart)
LISTEN_SECONDS = 1.2
POLL_SECONDS = 0.05  # how often the requester reads the answers (another process: no event)
CACHED = 1  # any TTL: the cache layer (the runner's cancel asks only whether one is given)


class CancelReport(NamedTuple):
    """What :func:`cancel_everywhere` did, by name."""

    here: int  # queued tasks of this process cancelled
    answers: dict[str, int]  # owner process -> queued tasks it cancelled
    orphans: int  # unfinished tasks of gone owners, recorded cancelled here
    silent: tuple[str, ...]  # live owners that did not answer in time

    @property
    def total(self) -> int:
        """Tasks cancelled in every process together."""
        return self.here + sum(self.answers.values()) + self.orphans


class CancelWatcher:
    """A runner's side: obey the board's requests for the groups it holds.

    ``held()`` gives the runner's unfinished tasks per ``(cached, group)``;
    ``cancel(group, ttl)`` cancels them as ``cancel_group`` does and returns
    how many. Called from the runner thread's loop (:meth:`poll`).
    """

    def __init__(self, stores: Stores, owner: str,
                 held: Callable[[], dict[tuple[bool, str | None], int]],
                 cancel: Callable[[str, int | None], int]) -> None:
        self._stores = stores
        self.owner = owner
        self._held = held
        self._cancel = cancel
        self._next = 0.0
        self._obeyed: dict[tuple[bool, str, int], str] = {}  # the last request obeyed

    def poll(self) -> None:
        """Read the board (one range read per layer in use, at most every
        WATCH_SECONDS, only while tasks are held) and obey what is new there.
        A store that cannot be read now is read again next time: the runner's
        own writes report store failures."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + WATCH_SECONDS
        held = self._held()
        if not held:
            return
        try:
            for cached in {c for c, g in held if g}:
                self._obey(cached, held)
        except Exception as exc:
            log.debug("nbgroups: cancel requests not read (%s)", exc)

    def _obey(self, cached: bool, held: dict[tuple[bool, str | None], int]) -> None:
        store = self._stores.cache() if cached else self._stores.store
        if store is None:
            return
        board = CancelBoard(store)
        for (group, gen), request in board.requests().items():
            key = (cached, group, gen)
            if (cached, group) not in held or self._obeyed.get(key) == request \
                    or not fresh(request, LIFETIME):
                continue
            self._obeyed[key] = request
            n = self._cancel(group, CACHED if cached else None)
            board.answer(group, gen, request, self.owner, n)



def cancel_everywhere(runner: Any, group: str, ttl: int | None = None,
                      wait: float = ANSWER_SECONDS) -> CancelReport:
    """Cancel ``group``'s queued tasks in every process that holds some.

    This process's own through ``runner.cancel``; those of other live
    processes by a request on the store's board, answered by their runners
    (waited for up to ``wait`` seconds); unfinished tasks whose owner is gone
    are recorded cancelled here. Tasks already running finish.
    """
    store = runner.store_for(ttl)
    here = runner.cancel(group, ttl)
    board = CancelBoard(store)
    gen, request = board.ask(group)
    try:
        expected, orphans = _owners(runner, store, group, gen)
        answers = _listen(board, group, gen, request, expected, wait)
    finally:
        board.withdraw(group, gen, request)
    answers.pop(runner.owner, None)  # this process's own watcher: counted in `here`
    cancelled = 0
    if orphans and ttl is None:  # the cache layer's orphans expire with their entries
        now = time.time()
        rows = [outcome.cancelled(tid, 0, None, now) for tid in orphans]
        store.write_outcomes([(group, gen, rows, [])])
        cancelled = len(rows)
    silent = tuple(sorted(expected - set(answers)))
    return CancelReport(here, answers, cancelled, silent)


def _owners(runner: Any, store: Any, group: str, gen: int) -> tuple[set[str], list[str]]:
    """The live owners (other than this process) of the group's unfinished tasks,
    and the ids of the unfinished tasks whose owner is gone."""
    alive: dict[str | None, bool] = {}
    expected: set[str] = set()
    orphans = []
    for page, call, o in store.group_entries(group) or []:
        if o is not None or page.gen != gen:
            continue
        owner = page.options.get("owner")
        if owner == runner.owner:
            continue  # this process: cancelled by runner.cancel, or running here
        if owner not in alive:
            alive[owner] = owner_alive(owner)
        tid = names.task_id(page.prefix, call.index)
        if alive[owner]:
            expected.add(owner)
        elif not runner.pending(tid):
            orphans.append(tid)
    return expected, orphans


def _listen(board: CancelBoard, group: str, gen: int, request: str, expected: set[str],
            wait: float) -> dict[str, int]:
    """The answers to ``request``: once every expected owner answered (and at
    least LISTEN_SECONDS went by), or after ``wait`` seconds."""
    start = time.monotonic()
    while True:
        answers = board.answers(group, gen, request)
        waited = time.monotonic() - start
        if waited >= wait or (expected <= set(answers) and waited >= min(LISTEN_SECONDS, wait)):
            return answers
        time.sleep(POLL_SECONDS)  # answers come from other processes: no event to wait on
