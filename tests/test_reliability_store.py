"""Issue 13, items 7, 8 and 10: the store when its disk or its files go wrong.

* 7, disk full (a real 2 MiB tmpfs, mounted for the test and always
  unmounted): errors are a ``StoreError`` naming the store and the cause,
  never a raw ``sqlite3.OperationalError``; once space is back, what was
  submitted is stored and runs (each call once), waits succeed, and the group
  is listed by ``list_groups()``.
* 8, a damaged database (8 KiB overwritten in the middle): reads of what the
  damage hit raise ``StoreError`` naming the store; other groups read
  normally; ``nbgroups check`` reports the damage (exit code 1).
* 10, planted value rows naming a FIFO, ``/dev/zero``, a symlink out of the
  store, or a file of another size than recorded: refused at once with
  ``SignatureError``, never a hang, never a read of more than the row records.

Real diskcache stores in temp dirs, a real loky pool where tasks run; each
run of a task leaves a marker file.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import nbgroups
from nbgroups import SignatureError, StoreError, api
from nbgroups.cli import main as cli_main
from tests import disks


def _mark(marks: str, x: int) -> int:
    with open(os.path.join(marks, f"{x}-{os.getpid()}-{os.urandom(4).hex()}"), "w"):
        pass
    return x * x


def _runs(marks: Path) -> list[int]:
    return sorted(int(n.split("-")[0]) for n in os.listdir(marks))


# ---------------------------------------------------------------- item 7: disk full
@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs; unmounted whatever the test did."""
    with disks.small_disk(tmp_path / "disk", "2m") as mount:
        yield mount


def test_disk_full_at_submission_then_space_back(small_disk, tmp_path):
    store = small_disk / "store"
    marks = tmp_path / "marks"
    marks.mkdir()
    api.reset()
    nbgroups.configure(store=str(store), backend="loky", workers=2, progress=False)
    assert nbgroups.result(nbgroups.async_task(_mark, str(marks), 1, group="other"),
                           wait=60_000) == 1
    filler = disks.fill(small_disk)
    ids = [nbgroups.async_task(_mark, str(marks), i, group="full") for i in range(40)]
    for read in (lambda: nbgroups.result_group("other"), nbgroups.list_groups,
                 lambda: nbgroups.result_group("full", wait=500)):
        try:
            read()
        except StoreError as exc:  # never a raw sqlite3.OperationalError
            assert str(store) in str(exc) and "full" in str(exc)
    filler.unlink()
    # no other action than the wait: what was submitted is stored and runs
    assert nbgroups.result_group("full", wait=60_000) == [i * i for i in range(40)]
    assert [t.id for t in nbgroups.fetch_group("full")] == ids
    assert sorted(nbgroups.list_groups()) == ["full", "other"]
    assert nbgroups.result_group("other") == [1]
    assert _runs(marks) == sorted([1, *range(40)])  # each call ran once


def _gated(marks: str, go: str, x: int) -> int:
    while not os.path.exists(go):
        time.sleep(0.01)
    return _mark(marks, x)


def _results_written_while_full(disk: Path, tmp_path: Path, let_runner_retry: bool) -> None:
    store = disk / "store"
    marks, go = tmp_path / "marks", tmp_path / "go"
    marks.mkdir()
    api.reset()
    nbgroups.configure(store=str(store), backend="loky", workers=2, progress=False)
    ids = [nbgroups.async_task(_gated, str(marks), str(go), i, group="res") for i in range(6)]
    r = api.runner()
    r.flush()
    assert nbgroups.list_groups() == ["res"]  # the tasks are stored before the disk fills
    filler = disks.fill(disk)
    go.touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(marks)) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)  # files written by the workers: nothing to wait on but them
    with pytest.raises(StoreError, match="full") as info:
        nbgroups.result_group("res", wait=60_000)
    assert str(store) in str(info.value)
    filler.unlink()
    if let_runner_retry:
        # an event, not a poll: Runner.wait itself raises while store_error is set
        cleared = threading.Event()

        def check() -> None:  # on the runner's change notifications
            if r.store_error is None:
                cleared.set()

        r.add_listener(check)
        try:
            check()
            assert cleared.wait(30)
        finally:
            r.remove_listener(check)
    assert nbgroups.result_group("res", wait=60_000) == [i * i for i in range(6)]
    assert [t.success for t in nbgroups.fetch_group("res")] == [True] * 6
    assert nbgroups.fetch(ids[0]).result == 0
    assert _runs(marks) == list(range(6))


def test_disk_full_while_results_are_written_then_space_back(small_disk, tmp_path):
    """Once the runner thread has retried the write (on its own), everything is there."""
    _results_written_while_full(small_disk, tmp_path, let_runner_retry=True)


def test_first_wait_after_space_is_back_succeeds(small_disk, tmp_path):
    """A wait that meets the failed write's error has the runner retry first."""
    _results_written_while_full(small_disk, tmp_path, let_runner_retry=False)


# ---------------------------------------------------------------- item 8: damaged database
GROUPS = ("alpha", "beta", "gamma", "delta")


def test_damaged_database_reads_what_it_can_and_check_reports_it(tmp_path, capsys):
    store = tmp_path / "store"
    api.reset()
    nbgroups.configure(store=str(store), backend="sync", progress=False)
    texts = {g: [f"{g}-{i}-" + "x" * 900 for i in range(150)] for g in GROUPS}
    for g in GROUPS:
        nbgroups.sweep("textwrap.dedent", g, text=texts[g])
    assert cli_main(["check", "--store", str(store)]) == 0
    assert "ok" in capsys.readouterr().out
    api.reset()
    db = store / "cache.db"
    with open(db, "r+b") as f:  # 8 KiB of noise in the middle of the file
        f.seek(db.stat().st_size // 2)
        f.write(os.urandom(8192))

    nbgroups.configure(store=str(store), backend="sync", progress=False)
    readable = []
    for g in GROUPS:
        try:
            results = nbgroups.result_group(g)
        except StoreError as exc:  # never a raw sqlite3.DatabaseError
            assert str(store) in str(exc) and "damaged" in str(exc)
            assert "nbgroups check" in str(exc)
        else:
            assert results == texts[g]
            readable.append(g)
    assert readable and len(readable) < len(GROUPS)
    api.reset()

    assert cli_main(["check", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "SQLite integrity check" in out
    # the same through the installed command line, with the global option
    done = subprocess.run([sys.executable, "-m", "nbgroups", "--store", str(store), "check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "integrity" in done.stdout


def test_check_finds_planted_rows_and_orphan_files(tmp_path, capsys):
    store = tmp_path / "store"
    api.reset()
    nbgroups.configure(store=str(store), backend="sync", progress=False)
    nbgroups.async_task("builtins.str", "y" * 1_200_000, group="big")  # a value file
    nbgroups.async_task(pow, 2, 2, group="small", cached=True)  # the cache layer too
    api.reset()
    assert cli_main(["check", "--store", str(store)]) == 0
    capsys.readouterr()
    (store / "ab").mkdir()
    (store / "ab" / "orphan.val").write_bytes(b"left over")
    with sqlite3.connect(store / "cache.db") as db:
        key = next(k for (k,) in db.execute("SELECT key FROM Cache") if k.startswith("o\0big"))
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (b"\0" * 40, key))
    assert cli_main(["check", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "failed signature verification" in out and "orphan.val" in out
    assert cli_main(["check", "--store", str(tmp_path / "none")]) == 1


# ---------------------------------------------------------------- item 10: planted files
def _plant_file(store: Path, key_prefix: str, filename: str, size: int) -> None:
    with sqlite3.connect(store / "cache.db") as db:
        n = db.execute("UPDATE Cache SET mode = 2, value = NULL, filename = ?, size = ?"
                       " WHERE key LIKE ?", (filename, size, key_prefix + "%")).rowcount
        assert n >= 1


@pytest.mark.parametrize("target", ["fifo", "dev-zero", "symlink-out", "bigger"])
def test_planted_value_file_is_refused_never_read(nb, store_dir, tmp_path, target, capsys):
    tid = nb.async_task(pow, 3, 3, group="planted")
    assert nb.result_group("planted", wait=60_000) == [27]
    if target == "fifo":
        os.mkfifo(store_dir / "pipe.val")
        filename = "pipe.val"
    elif target == "dev-zero":
        filename = "/dev/zero"
    elif target == "symlink-out":
        os.symlink("/dev/zero", store_dir / "zero.val")
        filename = "zero.val"
    else:
        (store_dir / "big.val").write_bytes(b"\0" * 100_000)
        filename = "big.val"
    _plant_file(store_dir, "o\0planted\0", filename, 64)
    with pytest.raises(SignatureError, match="refused"):
        nb.result_group("planted")
    with pytest.raises(SignatureError, match="refused"):
        api.runner().store.task(tid)  # from the store (fetch may answer from memory)
    nb.async_task(pow, 2, 2, group="fine")  # other groups are not affected
    assert nb.result_group("fine", wait=60_000) == [4]
    api.reset()
    assert cli_main(["check", "--store", str(store_dir)]) == 1  # reported, not read either
    assert "refused" in capsys.readouterr().out


# ---------------------------------------------------------------- item 9 (store side)
def test_a_deleted_store_database_is_seen_as_lost(tmp_path):
    """What the runner and ``configure`` need to tell a store deleted mid-run (item 9:
    the hand-over itself is the runner's): ``lost()``, and writes refused with a
    ``StoreError`` saying so instead of going to the unlinked file."""
    import shutil

    from nbgroups.store import DiskStore, MemoryStore

    s = DiskStore(tmp_path / "s")
    try:
        assert not s.lost() and not MemoryStore().lost()
        shutil.rmtree(tmp_path / "s")
        assert s.lost()
        with pytest.raises(StoreError, match="removed or replaced"):
            s.write_pages([{"prefix": "cd" * 12, "group": "g", "created": time.time(),
                            "funcs": (("f", None),), "calls": ((0, 0, (), None, None, False),),
                            "options": {}}])
        fresh = DiskStore(tmp_path / "s")  # the same path opened again: a new database
        assert not fresh.lost() and fresh.groups() == []
        fresh.close()
    finally:
        s.close()
