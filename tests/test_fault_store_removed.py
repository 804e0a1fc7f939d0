"""Fault: the store directory is deleted while tasks run, then a store is
configured again -- the same path, or another (issue 13, item 9, runner side).

The error says finished results are kept in memory until a store is
configured again: they are then written there, with the pages of every task
the runner holds, under the same ids; the tasks still running finish there.
Runs are counted with marker files: each call ran once.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

import nbgroups
from nbgroups import api
from nbgroups.errors import StoreError


def gated(x, marks, gate):
    while not os.path.exists(gate):
        time.sleep(0.02)
    with open(os.path.join(marks, f"{x}.{os.getpid()}.{os.urandom(4).hex()}"), "w"):
        pass
    return x * 2


def runs(marks) -> dict[int, int]:
    counted: dict[int, int] = {}
    for p in marks.iterdir():
        x = int(p.name.split(".")[0])
        counted[x] = counted.get(x, 0) + 1
    return counted


def _removed_while_running(marks, gate, store, n: int) -> list[str]:
    """``n`` gated calls of group 'rm' on a fresh runner over ``store``; once two
    run, the store directory is deleted. Their ids."""
    marks.mkdir()
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    ids = [nbgroups.async_task(gated, x, str(marks), str(gate), group="rm") for x in range(n)]
    assert api.runner().wait(lambda: nbgroups.group_counts("rm").running >= 2, 60)
    shutil.rmtree(store)  # deleted while tasks run
    return ids


@pytest.mark.parametrize("again", ["same path", "new path"])
def test_store_removed_then_configured_again_keeps_every_result(tmp_path, again):
    marks, gate, first = tmp_path / "marks", tmp_path / "gate", tmp_path / "store"
    try:
        ids = _removed_while_running(marks, gate, first, 12)
        gate.touch()
        with pytest.raises(StoreError, match="Configure a store again"):
            nbgroups.result_group("rm", wait=30_000)
        later = nbgroups.async_task(gated, 12, str(marks), str(gate), group="rm")  # kept too
        target = first if again == "same path" else tmp_path / "other"
        nbgroups.configure(store=str(target))
        assert nbgroups.result_group("rm", wait=60_000) == [x * 2 for x in range(13)]
        assert [t.id for t in nbgroups.fetch_group("rm")] == [*ids, later]
        assert nbgroups.count_group("rm") == 13
    finally:
        api.reset()
    assert runs(marks) == {x: 1 for x in range(13)}
    api.reset()  # a new process on that store reads the same
    nbgroups.configure(store=str(target), workers=2, progress=False)
    try:
        assert nbgroups.result_group("rm") == [x * 2 for x in range(13)]
    finally:
        api.reset()


def test_a_page_waiting_for_a_store_is_numbered_after_the_tasks_moved(tmp_path, monkeypatch):
    """A call submitted after the store was removed waits in memory, retried each
    second. Configuring a new store moves the earlier tasks there first; the
    waiting page must not be written before them, even when moving them is
    slow (a slow disk, injected here), or it would read as submitted first."""
    from nbgroups.store.base import Store

    marks, gate, first = tmp_path / "marks", tmp_path / "gate", tmp_path / "store"
    target = tmp_path / "other"
    try:
        ids = _removed_while_running(marks, gate, first, 4)
        later = nbgroups.async_task(gated, 4, str(marks), str(gate), group="rm")
        real = Store.write_pages

        def slow_to_the_new_store(self, drafts, ttl=None):
            if str(target.resolve()) in str(getattr(self, "directory", "")) and any(
                    d.get("prefix") == ids[0][:len(d["prefix"])] for d in drafts):
                time.sleep(2.5)  # the runner's retry (each second) comes meanwhile
            return real(self, drafts, ttl)

        monkeypatch.setattr(Store, "write_pages", slow_to_the_new_store)
        nbgroups.configure(store=str(target))
        gate.touch()
        assert [t.id for t in nbgroups.fetch_group("rm", wait=60_000)] == [*ids, later]
        assert nbgroups.result_group("rm") == [x * 2 for x in range(5)]
    finally:
        api.reset()
    assert runs(marks) == {x: 1 for x in range(5)}
