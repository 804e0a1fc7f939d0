"""Re-runnable submissions: a call already done in its group is not run again.

::

    Reuser.submit(func, calls) ──key each call──▶ ReuseIndex.lookup(group, keys)
        │ succeeded                  → its task id; not run (counted once as reused)
        │ queued/running here        → its task id; it is on its way
        │ failed, cancelled, or left → runner.resubmit: the SAME task id runs again,
        │   unfinished by a dead kernel   the earlier outcome stays in its history
        └ no task yet                → runner.submit; ReuseIndex.record(key -> id)

So a re-run cell leaves the group as if every call had been submitted once:
one task per call, results and counts unchanged for what was already done.
Tasks submitted without ``reuse=True`` have no key; when a lookup misses, the
group's unkeyed tasks are keyed from their spec pages (the stored callable and
arguments) and the lookup is made again, so a sweep first run without reuse is
not run again either. The group is read for that only when it has tasks this
process has not keyed yet.

How a call is keyed is :mod:`nbgroups.keys`; where keys are kept is
:class:`~nbgroups.store.ReuseIndex`. What cannot be keyed is not guessed at:
the call runs as usual, and a :class:`ReuseWarning` says why, once per
:class:`Reuser` (one per session).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

from . import names
from .errors import ReuseWarning
from .keys import Unkeyable, call_key, describe, func_digest, signature_of
from .records import Call, State
from .serialize import loads
from .store import ReuseIndex, Store

__all__ = ["ReuseWarning", "Reuser"]


class Reuser:
    """``reuse=True`` submission for one session: the reuse index of each store it
    met, and the reasons it already warned about (each is said once)."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._indexes: weakref.WeakKeyDictionary[Store, ReuseIndex] = \
            weakref.WeakKeyDictionary()

    def index(self, store: Store) -> ReuseIndex:
        """The reuse index of ``store`` (one per store, with its keyed-tasks memo)."""
        index = self._indexes.get(store)
        if index is None:
            index = self._indexes[store] = ReuseIndex(store)
        return index

    def _warn_once(self, reason: str, stacklevel: int) -> None:
        if reason in self._warned:
            return
        self._warned.add(reason)
        warnings.warn(
            f"nbgroups reuse=True: {reason}; such calls run as usual, without reuse",
            ReuseWarning, stacklevel=stacklevel + 1,
        )

    def submit(
        self, runner: Any, func: Callable | str, calls: list[tuple[Any, dict | None]],
        opts: Any, *, inline: bool = False, iterable: bool = False,
    ) -> list[str]:
        """Submit ``calls`` of ``func``, reusing the group's finished tasks; one id per call.

        A call whose key has a successful task in ``opts.group`` gets that task's
        id and is not run. A call whose task failed, was cancelled, or never
        finished (its kernel died) runs again under the same id. Other calls are
        submitted as new tasks, and their keys recorded. With ``iterable`` each
        call is ``(items, None)`` (``async_iter``: the whole iterable is one call).
        """
        return _submit(self, runner, func, calls, opts, inline=inline, iterable=iterable)


def _submit(
    reuser: Reuser, runner: Any, func: Callable | str, calls: list[tuple[Any, dict | None]],
    opts: Any, *, inline: bool, iterable: bool,
) -> list[str]:
    store = runner.store_for(opts.ttl)
    index = reuser.index(store)
    # Keyed as they will run: large values stored by digest first (keyed by it,
    # never hashed a second time), and the same calls go to the runner.
    calls = list(runner.take(calls, opts, iterable))
    keys: list[str | None] = [None] * len(calls)
    try:
        fdigest = func_digest(func)
    except Unkeyable as exc:
        reuser._warn_once(str(exc), 4)
        fdigest = None
    if fdigest is not None:
        sig = signature_of(func)
        for i, (args, kwargs) in enumerate(calls):
            try:
                keys[i] = call_key(fdigest, args, kwargs, sig=sig, iterable=iterable)
            except Unkeyable as exc:
                reuser._warn_once(f"an argument of {describe(func)} cannot be keyed: {exc}", 4)
    wanted = [k for k in keys if k is not None]
    found = index.lookup(opts.group, wanted) if wanted else {}
    mark = None
    if len(found) < len(set(wanted)) and opts.group is not None and opts.ttl is None:
        mark = (opts.group, store.gen(opts.group))
        if _key_earlier_tasks(index, opts.group, mark):
            found = index.lookup(opts.group, wanted)
    if any(page is None and state is None for _, state, page, *_ in found.values()):
        # A task submitted but not yet written (still in the runner's open
        # pages): write it now, then look again; still missing means its
        # kernel died before writing it, so it is submitted anew.
        runner.flush()
        found = index.lookup(opts.group, wanted)
        found = {k: hit for k, hit in found.items() if hit[2] is not None or hit[1] is not None}

    ids: list[str | None] = [None] * len(calls)
    reused_keys: list[str] = []
    rerun: list[tuple[Any, Call, str | None]] = []
    new: list[int] = []
    seen: dict[str, int] = {}  # a key repeated in this submission: the first call's task
    active = runner.pending_ids()
    for i, key in enumerate(keys):
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = i
        hit = found.get(key) if key is not None else None
        if key is None or hit is None:
            new.append(i)
            continue
        tid, state, page, call, saved = hit
        if state == State.SUCCESS.value and not saved and opts.save and tid not in active:
            # it succeeded with save=False: no result to give, and this submission
            # wants one. A new task (the store's ``saved`` is its page's option, so
            # running the old id again would still keep nothing); the key moves to it
            new.append(i)
            continue
        ids[i] = tid
        if tid in active:
            continue  # submitted earlier (this cell, or a run still going): on its way
        if state == State.SUCCESS.value:
            reused_keys.append(key)
        else:  # failed, cancelled, or orphaned by a dead kernel: run it again, same id
            rerun.append((page, Call._make(call), state))

    if rerun:
        runner.resubmit(rerun, opts.ttl, options=opts)
    if new:
        if mark is not None and mark in index.keyed_upto:
            index.keyed_upto[mark] += len(new)  # keyed as they go: not a reason to read again
        new_ids = runner.submit(func, [calls[i] for i in new], opts, iterable=iterable,
                                inline=inline, raise_errors=inline, taken=True)
        for i, tid in zip(new, new_ids, strict=True):
            ids[i] = tid
        index.record(opts.group, {k: tid for i in new
                                  if (k := keys[i]) is not None and (tid := ids[i]) is not None},
                     opts.ttl)
    if reused_keys:
        index.mark(opts.group, reused_keys, opts.ttl)
    for i, key in enumerate(keys):
        if ids[i] is None and key is not None:  # a key repeated: its first call's task
            ids[i] = ids[seen[key]]
    if inline and rerun:
        _finish_inline(runner, store, [names.task_id(p.prefix, c.index) for p, c, _ in rerun])
    return ids  # type: ignore[return-value]


# Tasks submitted without reuse=True have no key. The first reuse=True submission
# that misses keys them from what their spec pages stored (the callable and the
# arguments), so a sweep first run without reuse is not run again. The index's
# keyed_upto memo (per group and generation) says when that read is needed.
def _key_earlier_tasks(index: ReuseIndex, group: str, mark: tuple[str, int]) -> bool:
    """Record reuse keys for the tasks of ``group`` submitted without ``reuse=True``
    (in the task store: the cache layer keeps no arguments). Reads the group only
    when it has tasks this process has not seen keyed. Returns whether keys were
    recorded."""
    store = index.store
    submitted = store.submitted(group, mark[1])
    if index.keyed_upto.get(mark, -1) >= submitted:
        return False
    recorded = index.keys(group)
    keyed = set(recorded.values())
    funcs: dict[tuple, tuple | None] = {}  # stored (name, blob) -> (digest, signature)
    best: dict[str, tuple[str, bool]] = {}  # key -> (task id, succeeded)
    for page, call, outcome in store.group_entries(group) or ():
        tid = names.task_id(page.prefix, call.index)
        if tid in keyed or (call.args is None and call.kwargs is None):
            continue  # keyed already, or its arguments could not be stored
        fkey = page.funcs[call.func]  # pages of one sweep store the same callable
        if fkey not in funcs:
            funcs[fkey] = _stored_func_digest(*fkey)
        stored = funcs[fkey]
        if stored is None:
            continue
        digest, sig = stored
        try:
            key = call_key(digest, call.args, call.kwargs, sig=sig, iterable=call.iterable)
        except Unkeyable:
            continue
        ok = outcome is not None and outcome.state == State.SUCCESS.value
        if key not in best or ok or not best[key][1]:
            best[key] = (tid, ok)  # a success first, else the latest run
    entries = {key: tid for key, (tid, _) in best.items() if key not in recorded}
    index.record(group, entries)
    index.keyed_upto[mark] = submitted
    return bool(entries)


def _stored_func_digest(name: str, blob: bytes | None) -> tuple[bytes, Any] | None:
    """The key digest and signature of a callable as a spec page stored it, or None."""
    try:
        func = name if blob is None else loads(blob)
        return func_digest(func), signature_of(func)
    except Exception:  # a module gone, a class renamed: such calls cannot be matched
        return None


def _finish_inline(runner: Any, store: Any, tids: list[str]) -> None:
    """``sync=True``: wait for the re-run calls, and raise the first failure, as inline runs do."""
    runner.wait(lambda: not any(runner.pending(t) for t in tids), None)
    for tid in tids:
        task = store.task(tid)
        if task is not None and task.success is False:
            raise task.result


