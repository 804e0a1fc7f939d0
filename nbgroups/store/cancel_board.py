"""Cancel requests between processes: a board in the store where one process
pins a request to cancel a group and the runners holding that group answer.

A piece of its own over the store's primitives, like the reuse index. The
protocol is :mod:`nbgroups.cancelling`; here are only its entries::

    x\\0GROUP\\0GEN                 str    the group's cancel request: its id (time_ns.pid)
    y\\0GROUP\\0GEN\\0REQUEST\\0OWNER  int    an owner's answer: how many tasks it cancelled

Both expire after :data:`LIFETIME` seconds, so a requester that died leaves
nothing behind that could cancel later submissions; the requester removes its
request as soon as it has its answers (:meth:`CancelBoard.withdraw`).
"""

from __future__ import annotations

import time

from .base import Store
from .layout import SEP, gkey, outcome_ctr

LIFETIME = 30.0  # seconds a request and its answers stay on the board, at most


def made_at(request: str) -> float:
    """When a request was made (seconds since the epoch), from its id."""
    return int(request.partition(".")[0]) / 1e9


class CancelBoard:
    """The cancel requests and answers of one store (one layer)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ask(self, group: str) -> tuple[int, str]:
        """Pin a request to cancel ``group``'s queued tasks, replacing any earlier
        one; returns the label generation it is for and its id."""
        gen = self.store.gen(group)
        request = outcome_ctr()  # time_ns.pid: sorts by time, unique across processes
        self.store._set(f"x{SEP}{group}{SEP}{gen}", request, LIFETIME)
        return gen, request

    def requests(self) -> dict[tuple[str, int], str]:
        """Every request on the board: ``(group, generation) -> request id``
        (one range read; the board is empty unless a cancel is under way)."""
        out = {}
        for key, value in self.store._scan(f"x{SEP}"):
            group, _, gen = key[2:].rpartition(SEP)
            if isinstance(value, str) and gen.isdigit():
                out[(group, int(gen))] = value
        return out

    def answer(self, group: str, gen: int, request: str, owner: str, cancelled: int) -> None:
        """Say that ``owner`` obeyed ``request``, cancelling ``cancelled`` tasks."""
        self.store._set(f"{gkey('y', group, gen)}{request}{SEP}{owner}", cancelled, LIFETIME)

    def answers(self, group: str, gen: int, request: str) -> dict[str, int]:
        """The answers to ``request`` so far: owner -> tasks it cancelled."""
        base = f"{gkey('y', group, gen)}{request}{SEP}"
        return {key[len(base):]: value for key, value in self.store._scan(base)
                if isinstance(value, int)}

    def withdraw(self, group: str, gen: int, request: str) -> None:
        """Remove ``request`` if it is still the group's (a newer one stays)."""
        key = f"x{SEP}{group}{SEP}{gen}"
        with self.store._transaction():
            if self.store._get(key) == request:
                self.store._delete([key])


def fresh(request: str, window: float, now: float | None = None) -> bool:
    """Whether ``request`` was made less than ``window`` seconds ago."""
    return (time.time() if now is None else now) - made_at(request) < window
