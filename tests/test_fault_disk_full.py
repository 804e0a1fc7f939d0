"""Fault: the store's disk fills up, then space comes back (a small tmpfs; root only).

While full, waits raise ``StoreError`` naming the cause; once space is back,
with no other action, the tasks kept in memory are stored, dispatched and run
once each, and waits succeed: no stale error (issue 13, item 7, runner side).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nbgroups
from nbgroups import api
from nbgroups.errors import StoreError
from tests.disks import fill, small_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def mark(x, marks):
    with open(os.path.join(marks, f"{x}.{os.getpid()}.{os.urandom(4).hex()}"), "w"):
        pass
    return "r" * 20_000  # a result large enough to need space


def gated(x, marks, gate):
    import time

    while not os.path.exists(gate):
        time.sleep(0.02)
    return mark(x, marks)


def runs(marks: Path) -> dict[int, int]:
    counted: dict[int, int] = {}
    for p in marks.iterdir():
        x = int(p.name.split(".")[0])
        counted[x] = counted.get(x, 0) + 1
    return counted


def test_full_disk_then_space_back_runs_everything_once(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with small_disk(tmp_path / "disk") as disk:
        nbgroups.configure(store=str(disk / "store"), workers=2, progress=False)
        assert nbgroups.result(nbgroups.async_task(mark, -1, str(marks)), wait=60_000)
        filler = fill(disk)
        # submitted while full: the page cannot be written, the calls are kept
        ids = [nbgroups.async_task(mark, x, str(marks), group="full") for x in range(30)]
        with pytest.raises(StoreError, match="could not be written"):
            nbgroups.result_group("full", wait=30_000)
        assert runs(marks) == {-1: 1}  # nothing was sent unstored
        filler.unlink()  # space is back; nothing else is done
        assert nbgroups.result_group("full", wait=60_000) == ["r" * 20_000] * 30
        assert all(nbgroups.fetch(t) is not None for t in ids)

        # full while results are being written: they are kept, then stored
        gate = tmp_path / "gate"
        for x in range(30, 60):
            nbgroups.async_task(gated, x, str(marks), str(gate), group="later")
        assert api.runner().wait(lambda: nbgroups.group_counts("later").running >= 1, 60)
        filler = fill(disk)  # the pages are stored; the results will not fit
        gate.touch()
        with pytest.raises(StoreError, match="finished tasks could not be written"):
            nbgroups.result_group("later", wait=30_000)
        filler.unlink()
        assert nbgroups.result_group("later", wait=60_000) == ["r" * 20_000] * 30
        assert nbgroups.count_group("later") == 30
    assert runs(marks) == {x: 1 for x in range(-1, 60)}  # each once: nothing lost, none twice
