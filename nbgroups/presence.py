"""Which processes run a group's tasks now, for readers in other processes (the
dashboard): each busy runner keeps a short-lived entry in the store saying
how many tasks of each group it holds queued and how many its workers run.

The store itself learns of a run only when it ends, so without this another
process sees every unfinished task as queued. A runner writes its entry from
its thread's loop, at most every REPORT_SECONDS while it holds tasks, and
removes it when it holds none; the entry expires LIFETIME seconds after it
was written, so a killed kernel's entry goes by itself. Layout, in each store
layer::

    h\\0OWNER     str    JSON: [[group, queued, running], ..., {"running": {group: [ids]}}]

The last element names the calls its workers run now (at most MAX_IDS a
group; none on the thread backend, whose workers leave no trace to read them
from): a group page marks those tasks running instead of queued. It comes
last, and is not a row, so that an earlier version reading the entry sums
the rows before it and stops there; entries without it are read as well.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .store.layout import SEP
from .stores import Stores

log = logging.getLogger("nbgroups")

REPORT_SECONDS = 1.0  # how often a busy runner rewrites its entry, at most
LIFETIME = 5.0  # seconds an entry outlives its last rewrite (a killed kernel's)

MAX_IDS = 200  # running ids an entry lists per group (workers run one call each)

#: (cached, group) -> (queued, running, ids of the running calls)
Held = dict[tuple[bool, str | None], tuple[int, int, list[str]]]


class PresenceReporter:
    """A runner's side: keep its entry in each store layer it holds tasks of.

    ``held()`` gives ``(queued, running)`` per ``(cached, group)`` this runner
    holds unfinished. Called from the runner thread's loop (:meth:`poll`).
    """

    def __init__(self, stores: Stores, owner: str, held: Callable[[], Held],
                 idle: Callable[[], bool]) -> None:
        self._stores = stores
        self.owner = owner
        self._held = held
        self._idle = idle  # cheap: asked at every turn of the loop while an entry is out
        self._next = 0.0
        self._written = {False: False, True: False}  # layers holding an entry of ours

    def poll(self) -> None:
        """Rewrite the entries (at most every REPORT_SECONDS), or remove them at
        once when nothing is held any more. Store errors are left to the runner's
        own writes to report: the entry is written again next time."""
        now = time.monotonic()
        out = any(self._written.values())
        if now < self._next:
            if not (out and self._idle()):
                return
            held: Held = {}
        else:
            held = self._held()
            if not held and not out:
                return
        self._next = now + REPORT_SECONDS
        for cached in (False, True):
            mine = {g: v for (c, g), v in held.items() if c == cached and g}
            rows: list = [[g, q, r] for g, (q, r, _ids) in mine.items()]
            if rows:
                rows.append({"running": {g: ids[:MAX_IDS] for g, (_q, _r, ids) in mine.items()
                                         if ids}})
            if not rows and not self._written[cached]:
                continue
            store = self._stores.cache() if cached else self._stores.store
            if store is None:
                continue
            key = f"h{SEP}{self.owner}"
            try:
                if rows:
                    store._set(key, json.dumps(rows), LIFETIME)
                else:
                    store._delete([key])
                self._written[cached] = bool(rows)
            except Exception as exc:
                log.debug("nbgroups: presence not written (%s)", exc)


def elsewhere(store: Any, me: str | None = None) -> dict[str, tuple[int, int]]:
    """``group -> (queued, running)`` that processes other than ``me`` hold in
    ``store`` (one layer), summed over them: one range read."""
    out: dict[str, tuple[int, int]] = {}
    for group, queued, running, _ids in _rows(store, me):
        q, r = out.get(group, (0, 0))
        out[group] = (q + queued, r + running)
    return out


def present(store: Any) -> set[str]:
    """The owners whose runners hold tasks in ``store`` now (their entries are
    fresh): alive, on whatever host."""
    return {key[2:] for key, value in store._scan(f"h{SEP}") if isinstance(value, str)}


def running_elsewhere(store: Any, group: str, me: str | None = None) -> set[str]:
    """The ids of ``group``'s calls that workers of processes other than ``me`` run now."""
    return {i for g, _q, _r, ids in _rows(store, me) if g == group for i in ids}


def _rows(store: Any, me: str | None) -> list[tuple[str, int, int, list[str]]]:
    """Every row of the entries of processes other than ``me``; what does not
    parse as an entry of ours is left out."""
    out = []
    for key, value in store._scan(f"h{SEP}"):
        if key[2:] == me or not isinstance(value, str):
            continue
        try:
            rows = json.loads(value)
            running: dict = {}
            if rows and isinstance(rows[-1], dict):  # the ids of the calls run now
                running = rows.pop()["running"]
            entry = [(str(g), int(q), int(r),
                      [i for i in running.get(g, ()) if isinstance(i, str)])
                     for g, q, r in rows]
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not an entry of ours: ignored
        out += entry
    return out
