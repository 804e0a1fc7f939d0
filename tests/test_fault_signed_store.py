"""Fault: someone who can write the store directory plants pickles in it.

Every pickle nbgroups writes is HMAC-signed with a per-user key kept outside
the store; diskcache only ever holds str/int/float/bytes. Planted entries —
a diskcache MODE_PICKLE row under one of our keys, a row with a pickled key, a
signed value whose payload was swapped, a tampered value file — are never
unpickled: reading refuses them with :class:`nbgroups.SignatureError` (or, for
rows nbgroups cannot even address, ignores them). Nothing planted ever runs.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
from pathlib import Path

import diskcache
import pytest

import nbgroups
from nbgroups import SignatureError, api
from nbgroups.serialize import key_path
from nbgroups.store import DiskStore

MODE_PICKLE = 4


class Evil:
    """Unpickling this creates a marker directory: proof that the pickle ran."""

    def __init__(self, marker: str, pad: int = 0) -> None:
        self.marker = marker
        self.pad = "x" * pad

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(marker: Path, pad: int = 0) -> bytes:
    return pickle.dumps(Evil(str(marker), pad))


def _rows(store: Path) -> dict[str, tuple[int, str | None]]:
    with sqlite3.connect(store / "cache.db") as db:
        return {k: (m, f) for k, m, f in
                db.execute("SELECT key, mode, filename FROM Cache WHERE raw = 1")}


def _plant(store: Path, key: str, value: bytes, mode: int) -> None:
    with sqlite3.connect(store / "cache.db") as db:
        n = db.execute("UPDATE Cache SET mode = ?, value = ?, filename = NULL WHERE key = ?",
                       (mode, sqlite3.Binary(value), key)).rowcount
        assert n == 1


def _key(rows, kind: str, group: str) -> str:
    (key,) = [k for k in rows if k.startswith(f"{kind}\x00{group}\x00")][:1]
    return key


def _make_group(nb, group: str, results=(1, 2, 3)) -> None:
    for r in results:
        nb.async_task("builtins.str", r, group=group)
    assert nb.result_group(group, wait=60_000) == [str(r) for r in results]


def test_store_and_key_permissions(nb, store_dir):
    _make_group(nb, "perm")
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600
    assert key_path().resolve().parent != store_dir.resolve()  # the key is outside the store
    # diskcache holds no pickle of its own: every row is raw (str/int/float) or bytes
    modes = {m for m, _ in _rows(store_dir).values()}
    assert modes <= {1, 2}, modes


@pytest.mark.parametrize("kind", ["s", "o"])  # spec page, outcome page
def test_pickle_row_under_our_key_is_refused_not_loaded(nb, store_dir, tmp_path, kind):
    _make_group(nb, "g")
    marker = tmp_path / "pwned"
    _plant(store_dir, _key(_rows(store_dir), kind, "g"), _evil(marker), MODE_PICKLE)
    for read in (lambda: nb.result_group("g"), lambda: nb.fetch_group("g")):
        with pytest.raises(SignatureError, match="refused, not loaded"):
            read()
    assert not marker.exists()


def test_pickle_row_under_a_counter_key(nb, store_dir, tmp_path):
    _make_group(nb, "c")
    marker = tmp_path / "pwned"
    key = next(k for k in _rows(store_dir) if k.startswith("c\x00c\x00") and k.endswith("\x00n"))
    _plant(store_dir, key, _evil(marker), MODE_PICKLE)
    with pytest.raises(SignatureError):
        nb.count_group("c")
    _plant(store_dir, key, b"not a number", 1)  # raw bytes: diskcache's incr would choke
    api.reset()
    store = DiskStore(store_dir)
    try:
        with pytest.raises(SignatureError):
            store._incr(key, 1)  # the write path refuses it too
    finally:
        store.close()
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["s", "o"])
def test_tampered_signed_value_is_refused(nb, store_dir, tmp_path, kind):
    _make_group(nb, "t")
    marker = tmp_path / "pwned"
    key = _key(_rows(store_dir), kind, "t")
    with sqlite3.connect(store_dir / "cache.db") as db:
        (old,) = db.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
    # Keep the old MAC, swap the payload: the MAC no longer matches.
    _plant(store_dir, key, bytes(old[:32]) + _evil(marker), 1)  # MODE_RAW: inline bytes
    with pytest.raises(SignatureError, match="failed signature verification"):
        nb.result_group("t")
    assert not marker.exists()


def test_tampered_value_file_is_refused(nb, store_dir, tmp_path):
    # A result of 1 MiB or more gets an entry of its own: a file in the store directory.
    nb.async_task("builtins.str", "y" * 1_200_000, group="big")
    assert nb.result_group("big", wait=60_000) == ["y" * 1_200_000]
    key = _key(_rows(store_dir), "b", "big")
    _, filename = _rows(store_dir)[key]
    assert filename is not None
    marker = tmp_path / "pwned"
    (store_dir / filename).write_bytes(os.urandom(32) + _evil(marker, pad=40_000))
    with pytest.raises(SignatureError):
        nb.result_group("big")
    assert not marker.exists()


def test_rows_with_pickled_keys_are_ignored(nb, store_dir, tmp_path):
    _make_group(nb, "k")
    marker = tmp_path / "pwned"
    api.reset()
    with diskcache.Cache(str(store_dir)) as cache:  # what an attacker could add
        cache.set(("s", "k"), Evil(str(marker)))  # a pickled key: raw = 0
        cache.set(b"s\x00k\x000\x00000000000001", Evil(str(marker)))
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    assert nbgroups.result_group("k") == ["1", "2", "3"]  # rows nbgroups never reads
    assert nbgroups.count_group("k") == 3
    api.reset()
    with diskcache.Cache(str(store_dir)) as cache:
        cache.set("s\x00k\x000\x00999999999999", Evil(str(marker)))  # a planted page
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    with pytest.raises(SignatureError):
        nbgroups.result_group("k")  # the planted page under our key range: refused
    assert not marker.exists()


def test_another_key_cannot_read(nb, store_dir, monkeypatch):
    _make_group(nb, "sec")
    api.reset()
    monkeypatch.setenv("NBGROUPS_SECRET", "someone else")
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    with pytest.raises(SignatureError, match="another key"):
        nbgroups.result_group("sec")
    api.reset()
    monkeypatch.delenv("NBGROUPS_SECRET")
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    assert nbgroups.result_group("sec") == ["1", "2", "3"]


def test_a_signing_key_others_can_read_is_refused(tmp_path, monkeypatch):
    from nbgroups.serialize import key_path, load_secret

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    load_secret()  # made 0600
    path = key_path()
    assert (path.stat().st_mode & 0o777) == 0o600
    path.chmod(0o644)
    with pytest.raises(nbgroups.StoreError, match="chmod 600"):
        load_secret()
