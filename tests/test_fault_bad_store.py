"""Fault: the store directory cannot be used, or its database is corrupt.

``configure`` (or the first use) raises :class:`nbgroups.StoreError` (an
``OSError``) that names the directory and says what to do; never a traceback
from deep inside sqlite or diskcache.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

import nbgroups
from nbgroups import StoreError, api


@pytest.fixture(autouse=True)
def _fresh():
    api.reset()
    yield
    api.reset()


def _configure(path) -> None:
    nbgroups.configure(store=str(path), backend="sync", progress=False)


def test_store_path_is_a_file(tmp_path):
    path = tmp_path / "store"
    path.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot use store directory") as info:
        _configure(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)


def test_store_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"configure\(store=\.\.\.\)"):
        _configure(tmp_path / "file" / "store")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_store_not_writable():
    # /proc refuses new directories even to root (a chmod'ed directory would not).
    with pytest.raises(StoreError, match="cannot use store directory"):
        _configure("/proc/nbgroups-store")


def test_a_failed_configure_changes_nothing(tmp_path):
    good = tmp_path / "good"
    _configure(good)
    nbgroups.async_task("builtins.abs", -1, group="g")
    bad = tmp_path / "store"
    bad.write_text("x")
    with pytest.raises(StoreError):
        _configure(bad)
    # the store and the runner in force stay as they were: nothing is lost
    assert nbgroups.settings().store == str(good)
    nbgroups.async_task("builtins.abs", -2, group="g")
    assert nbgroups.result_group("g", wait=-1) == [1, 2]


def test_database_is_garbage(tmp_path):
    path = tmp_path / "store"
    path.mkdir()
    (path / "cache.db").write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="may be corrupt") as info:
        _configure(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_database_damaged_after_use(tmp_path):
    path = tmp_path / "store"
    _configure(path)
    for x in range(200):
        nbgroups.async_task("builtins.str", "v" * 200 + str(x), group="g")
    assert nbgroups.count_group("g") == 200
    api.reset()
    db = path / "cache.db"
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    data[4096:len(data) - 4096] = os.urandom(len(data) - 8192)  # trash every inner page
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="may be corrupt"):
        _configure(path)
        nbgroups.result_group("g")  # if the open did not notice, the first read must


def test_a_healthy_store_is_not_refused(tmp_path):
    path = tmp_path / "store"
    _configure(path)
    nbgroups.async_task("builtins.abs", -3, group="ok")
    api.reset()
    _configure(path)
    assert nbgroups.result_group("ok") == [3]
    with sqlite3.connect(path / "cache.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
