"""The store contract on a diskcache directory: the only module that touches diskcache."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import NbgroupsError, SignatureError, StoreError
from ..serialize import (
    Signer,
    load_secret,
)
from ..values import ValueFiles
from .base import Store
from .layout import (
    LARGE_RESULT,
    SEP,
)


class _SignedReader:
    """A file-like view of ``mac + payload`` that never concatenates them."""

    def __init__(self, mac: bytes, *parts: bytes) -> None:
        self._parts: list[memoryview] = [memoryview(mac), *(memoryview(p) for p in parts)]

    def read(self, size: int = -1) -> bytes | memoryview:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        head = self._parts[0]
        n = len(head) if size < 0 else min(size, len(head))
        self._parts[0] = head[n:]
        return head[:n]


# Writes in SQL of our own need upsert (SQLite 3.24) and RETURNING (3.35); Python's
# sqlite3 may link an older library (Python 3.10 allows 3.7.15): then diskcache's API.
_UPSERT_OK = sqlite3.sqlite_version_info >= (3, 24)
_RETURNING_OK = sqlite3.sqlite_version_info >= (3, 35)
_INSERT = (  # a row as diskcache writes a str/int/float/bytes value kept in the row
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
    " size, mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time,"
)
_UPSERT = _INSERT + (
    " access_count = 0, tag = NULL, size = 0, mode = 1, filename = NULL, value = excluded.value"
)
_INCR = _INSERT + (
    " value = CASE WHEN Cache.expire_time IS NULL OR Cache.expire_time > excluded.store_time"
    " THEN Cache.value + excluded.value ELSE excluded.value END"
    " WHERE Cache.mode = 1 AND typeof(Cache.value) = 'integer' RETURNING value"
)


class DiskStore(Store):
    """The store contract on a diskcache directory (created 0700).

    Opened with ``eviction_policy='none'`` (diskcache's default culls rows past
    1 GiB: for results, silent data loss) and without a size limit. Writes go
    through diskcache's API inside ``transact()``; reads use SQL on its table
    so that one range scan returns a whole group, and rows diskcache would
    unpickle are refused.
    """

    def __init__(self, directory: str | os.PathLike, signer: Signer | None = None, **kw: Any):
        import diskcache

        super().__init__(signer or Signer(load_secret()), **kw)
        self.directory = Path(directory).expanduser().resolve()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.directory / f".nbgroups-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            reason = "it is a file, not a directory" if self.directory.is_file() else \
                (exc.strerror or str(exc))
            raise StoreError(
                f"cannot use store directory {str(self.directory)!r}: {reason}. "
                "Choose a writable directory: configure(store=...) in Python, --store PATH "
                "on the command line, or NBGROUPS_STORE."
            ) from None
        try:
            self._cache = diskcache.Cache(
                str(self.directory), eviction_policy="none", size_limit=2**62,
                cull_limit=0, timeout=60,
                # Pages up to a large result's size stay in SQLite's row: diskcache's
                # default (32 KiB) gave every page of a few hundred calls a file of
                # its own, ~0.25 ms a write (more than the rest of the write).
                disk_min_file_size=LARGE_RESULT,
            )
            self._sql("SELECT COUNT(*) FROM Cache").fetchall()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(
                f"the store database in {str(self.directory)!r} cannot be opened ({exc}); "
                "it may be corrupt. Move it aside or choose another store directory."
            ) from None
        self.values = ValueFiles(self.directory / "values")
        self._modes = diskcache.core
        self._db_path = str(self.directory / "cache.db")
        st = os.stat(self._db_path)
        self._db_identity = (st.st_dev, st.st_ino)

    def _sql(self, query: str, params: tuple = ()) -> sqlite3.Cursor:
        return self._cache._sql(query, params)

    def _query(self, query: str, params: tuple = ()) -> list[tuple]:
        """The rows of a read; a database error is a :class:`StoreError` naming the store."""
        try:
            return self._cache._sql(query, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failed("reading", exc) from None

    def _failed(self, doing: str, exc: BaseException) -> StoreError:
        """A :class:`StoreError` for a failed database or file operation: which
        store, the cause, and what to do about it."""
        return StoreError(f"store {str(self.directory)!r}: {doing} failed: "
                          f"{_cause(exc)}. {_remedy(exc, self.directory)}")

    def _row_value(self, key: str, mode: int, filename: str | None, value: Any,
                   size: Any = None) -> Any:
        if mode not in (self._modes.MODE_RAW, self._modes.MODE_BINARY) or (
                mode == self._modes.MODE_BINARY and not isinstance(filename, str)):
            raise SignatureError(
                f"store entry {key.replace(SEP, '/')!r} has a storage mode nbgroups never "
                "writes (a pickle for diskcache to load); it was refused, not loaded"
            )
        if mode == self._modes.MODE_RAW or filename is None:
            return bytes(value) if type(value) is memoryview else value
        return self._read_value_file(key, filename, size)

    def _mapped(self, key):
        # A value kept in its own file, mapped read-only (a framed result's raw
        # buffers are then used in place); one kept in its row, read.
        rows = self._query(
            "SELECT mode, filename, value, size FROM Cache WHERE key = ? AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)", (key, self.clock()),
        )
        if not rows:
            return None
        mode, filename, value, size = rows[0]
        if mode != self._modes.MODE_BINARY or not isinstance(filename, str):
            return self._row_value(key, mode, filename, value, size)
        return map_value_file(self.directory, key, filename, size)

    def _read_value_file(self, key: str, filename: str, size: Any) -> bytes:
        return read_value_file(self.directory, key, filename, size)

    def _get(self, key):
        rows = self._query(
            "SELECT mode, filename, value, size FROM Cache WHERE key = ? AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)", (key, self.clock()),
        )
        if not rows:
            return None
        return self._row_value(key, *rows[0])

    def _ttl(self, expire: float | None) -> float | None:
        """``expire`` for diskcache's API, which counts from its own ``time.time()``:
        shifted so that the entry expires ``expire`` s after :attr:`clock`'s now."""
        if expire is None or self.clock is time.time:
            return expire
        return expire + (self.clock() - time.time())

    def _set(self, key, value, expire=None):
        try:
            self._cache.set(key, value, expire=self._ttl(expire), retry=True)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed("writing", exc) from None

    def _set_many(self, items, expire=None):
        # One statement for all of them: diskcache's set is a SELECT and an
        # UPDATE or INSERT per key (~25 us each, ~5 of them per page write).
        # Only values diskcache keeps in the row; these keys never hold a file.
        if not _UPSERT_OK:
            return super()._set_many(items, expire)
        now = self.clock()
        deadline = None if expire is None else now + expire
        rows, rest = [], []
        for key, value in items:
            if type(value) in (int, float) or (type(value) in (str, bytes)
                                               and len(value) < LARGE_RESULT):
                rows.append((key, now, deadline, now, value))
            else:
                rest.append((key, value))
        try:
            self._cache._con.executemany(_UPSERT, rows)
        except sqlite3.Error as exc:
            raise self._failed("writing", exc) from None
        for key, value in rest:
            self._set(key, value, expire)

    def _touch(self, keys, expire):
        # One statement for all of them (diskcache's touch: a transaction per key).
        deadline = self.clock() + expire
        try:
            self._cache._con.executemany(
                "UPDATE Cache SET expire_time = ? WHERE key = ? AND raw = 1",
                [(deadline, key) for key in keys])
        except sqlite3.Error as exc:
            raise self._failed("writing", exc) from None

    def _add(self, key, value, expire=None):
        try:
            self._cache.add(key, value, expire=self._ttl(expire), retry=True)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed("writing", exc) from None

    def _incr(self, key, delta, expire=None):
        # One statement (diskcache's incr: a SELECT then an UPDATE or INSERT). An
        # expired counter starts again from 0; a row that is not an int is refused.
        if not _RETURNING_OK:
            return self._incr_diskcache(key, delta, expire)
        now = self.clock()
        try:
            rows = self._sql(_INCR, (key, now, None if expire is None else now + expire, now,
                                     delta)).fetchall()
        except sqlite3.Error as exc:
            raise self._failed("writing", exc) from None
        if not rows:
            raise _not_a_number(key)
        return rows[0][0]

    def _incr_diskcache(self, key, delta, expire=None):
        """:meth:`_incr` through diskcache's API (SQLite before 3.35 has no RETURNING)."""
        if expire is None:
            try:
                return self._cache.incr(key, delta, retry=True)
            except TypeError:  # diskcache adds to a value that is not a number
                raise _not_a_number(key) from None
            except sqlite3.Error as exc:
                raise self._failed("writing", exc) from None
        with self._transaction():
            value = (self._get(key) or 0) + delta
            self._set(key, value, expire)
            return value

    def _scan(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._query(
            "SELECT key, mode, filename, value, size FROM Cache WHERE key >= ? AND key < ?"
            " AND raw = 1 AND (expire_time IS NULL OR expire_time > ?) ORDER BY key",
            (prefix, end, self.clock()),
        )
        return [(k, self._row_value(k, m, f, v, n)) for k, m, f, v, n in rows
                if isinstance(k, str)]

    def _delete(self, keys):
        try:
            for key in keys:
                self._cache.delete(key, retry=True)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed("deleting", exc) from None

    def _scan_keys(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._query("SELECT key FROM Cache WHERE key >= ? AND key < ? AND raw = 1",
                           (prefix, end))
        return [k for (k,) in rows if isinstance(k, str)]

    def _put_stream(self, key, parts, expire, signed=None):
        # diskcache copies a file-like object to its file chunk by chunk
        # (read=True): MAC then the parts, without building MAC + payload.
        mac = self._signer.mac_parts(parts if signed is None else signed, key)
        try:
            self._cache.set(key, _SignedReader(mac, *parts),
                            expire=self._ttl(expire), read=True, retry=True)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed("writing a result file", exc) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # diskcache's transact(retry=True), in one layer instead of three (the
        # two writes of a task's round trip are each one transaction): BEGIN
        # IMMEDIATE, retried while another process holds the lock; diskcache's
        # calls inside see the transaction as theirs (its _txn_id) and join it.
        cache = self._cache
        tid = threading.get_ident()
        if cache._txn_id == tid:  # nested: the outer transaction commits
            yield
            return
        self._check_same_database()
        sql = cache._sql
        while True:
            try:
                sql("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if _busy(exc):  # busy beyond the 60 s timeout: another process writes
                    continue
                raise self._failed("starting a write", exc) from None
        cache._txn_id = tid
        try:
            yield
        except BaseException:
            cache._txn_id = None
            _rollback(sql)
            raise
        cache._txn_id = None
        try:
            sql("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT (disk full) may leave the transaction open: every
            # later BEGIN would then fail. Nothing of it was written.
            _rollback(sql)
            raise self._failed("writing", exc) from None

    def lost(self) -> bool:
        """Whether the database file was removed or replaced since it was opened
        (then nothing more can be stored through this object; open the
        directory again to get a fresh database there)."""
        try:
            st = os.stat(self._db_path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._db_identity

    def _check_same_database(self) -> None:
        """SQLite goes on writing to a database file that was deleted: results would
        vanish. Every write transaction first checks the file is still the one opened."""
        if self.lost():
            raise StoreError(
                f"the store database {self._db_path!r} was removed or replaced while in use; "
                "nothing more can be stored there. Configure a store again "
                "(nbgroups.configure(store=...)): finished results not yet stored are kept "
                "in memory until then.")

    def close(self) -> None:
        self._cache.close()


def map_value_file(directory: Path, key: str, filename: str, size: Any) -> memoryview:
    """:func:`read_value_file`, mapped read-only instead of read (the same checks)."""
    return read_value_file(directory, key, filename, size, mapped=True)


def read_value_file(directory: Path, key: str, filename: str, size: Any,
                    mapped: bool = False) -> Any:
    """A value kept in its own file: only a regular file inside the store
    ``directory``, and only as many bytes as its row records (a planted row
    naming a FIFO or /dev/zero would otherwise hang or fill memory). ``mapped``:
    a read-only memory map of it (a memoryview) instead of its bytes."""
    where = key.replace(SEP, "/")
    root = str(directory)
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.isabs(filename) or path == root or os.path.commonpath([path, root]) != root:
        raise SignatureError(f"store entry {where!r} names a value file outside the store "
                             f"directory ({filename!r}); it was refused, not read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(
            f"store entry {where!r} cannot be read from {root!r}: {exc.strerror or exc} (a "
            "value file is missing or unreadable: the store was modified outside nbgroups)"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SignatureError(f"store entry {where!r} names {filename!r}, which is not a "
                                 "regular file; it was refused, not read")
        if type(size) is not int or st.st_size != size:
            raise SignatureError(
                f"store entry {where!r}: its value file {filename!r} holds {st.st_size} "
                f"bytes where the store recorded {size!r} (modified outside nbgroups, or "
                "damaged); it was refused, not loaded")
        if mapped:
            return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ)) if size else \
                memoryview(b"")
        with open(fd, "rb", closefd=False) as f:
            return f.read(size)
    except OSError as exc:
        if isinstance(exc, NbgroupsError):
            raise
        raise StoreError(f"store entry {where!r} cannot be read from {root!r}: "
                         f"{exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _rollback(sql) -> None:
    """End a failed transaction; SQLite may already have rolled it back itself
    (it does on a full disk), and that second error must not hide the first."""
    with contextlib.suppress(sqlite3.Error):
        sql("ROLLBACK")


_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 5, 6, 11, 13, 26


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)
    return (code & 0xFF == _SQLITE_FULL) if code is not None else "is full" in str(exc)


def _damaged(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "malformed" in str(exc) or "not a database" in str(exc)


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _remedy(exc: BaseException, directory: Path) -> str:
    if _full(exc):
        return ("The disk is full: free some space. Finished results and submitted "
                "tasks not yet stored are kept in memory and written when there is room")
    if _damaged(exc):
        return (f"The database is damaged: `nbgroups check --store {directory}` reports what "
                "can still be read; move the directory aside or choose another store")
    return "Check the store directory (permissions, free space, other processes)"


def _not_a_number(key: str) -> SignatureError:
    """A counter row nbgroups never wrote (not an int): refused, as a read would."""
    return SignatureError(f"store counter {key.replace(SEP, '/')!r} does not hold a number: "
                          "it was modified outside nbgroups; refused, not loaded")
