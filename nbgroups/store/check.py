"""``nbgroups check``: what in a store directory can still be read, and what not.

Reads the database with SQLite alone, read-only (diskcache is not opened: it
would create or migrate what it finds), in three passes:

1. SQLite's ``PRAGMA integrity_check`` over the whole file;
2. every row, in ranges of row ids, so a damaged page costs only its range:
   rows nbgroups never writes (pickled keys, pickle modes), signed entries
   (spec pages, outcome pages, large results) that do not verify with this
   user's key, value files that are missing, outside the store, not regular
   or of another size than recorded;
3. value files that no row names (left by a crash, or planted).

The expiring cache layer (``cache/`` inside the store) is checked the same way.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NbgroupsError
from ..serialize import Signer, load_secret
from .disk import read_value_file
from .layout import SEP

SIGNED_KINDS = frozenset("sob")  # spec pages, outcome pages, large results
_MODE_RAW, _MODE_BINARY = 1, 2  # diskcache.core's storage modes nbgroups writes
_RANGE = 512  # row ids read per query


@dataclass
class CheckReport:
    """What :func:`check_store` found in one database (``problems`` empty: sound)."""

    database: str
    rows: int = 0
    signed: int = 0
    files: int = 0
    integrity: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.problems and not self.orphans

    def lines(self, limit: int = 20) -> list[str]:
        """The report as text lines, at most ``limit`` lines per kind of problem."""
        out = [f"{self.database}: {self.rows} rows, {self.signed} signed entries verified, "
               f"{self.files} value files"]
        if self.integrity != ["ok"]:
            out.append(f"  SQLite integrity check: {len(self.integrity)} problem(s)")
            out += [f"    {m}" for m in self.integrity[:limit]]
        if self.problems:
            out.append(f"  {len(self.problems)} entr(y/ies) cannot be used:")
            out += [f"    {p}" for p in self.problems[:limit]]
        if self.orphans:
            out.append(f"  {len(self.orphans)} value file(s) named by no row:")
            out += [f"    {p}" for p in self.orphans[:limit]]
        if self.ok:
            out.append("  ok")
        return out


def check_store(directory: str | os.PathLike, signer: Signer | None = None) -> list[CheckReport]:
    """Check the store in ``directory`` and its cache layer; one report per database.

    Raises ``FileNotFoundError`` if there is no store database there.
    """
    root = Path(directory).expanduser().resolve()
    if not (root / "cache.db").is_file():
        raise FileNotFoundError(f"no nbgroups store in {str(root)!r} (no cache.db)")
    signer = signer or Signer(load_secret())
    reports = [_check_database(root, signer)]
    if (root / "cache" / "cache.db").is_file():
        reports.append(_check_database(root / "cache", signer))
    return reports


def _check_database(root: Path, signer: Signer) -> CheckReport:
    report = CheckReport(database=str(root / "cache.db"))
    try:
        con = sqlite3.connect(f"file:{root / 'cache.db'}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        report.integrity = [f"cannot be opened: {exc}"]
        return report
    try:
        try:
            report.integrity = [line for (text,) in con.execute("PRAGMA integrity_check")
                                for line in str(text).splitlines()]
        except sqlite3.Error as exc:
            report.integrity = [f"integrity check failed: {exc}"]
        named = _check_rows(con, root, signer, report)
    finally:
        con.close()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != "cache"]  # the cache layer: its own
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if name.endswith(".val") and rel not in named:
                report.orphans.append(rel)
    return report


def _check_rows(con: sqlite3.Connection, root: Path, signer: Signer,
                report: CheckReport) -> set[str]:
    """Read every row, range by range; returns the value files the rows name."""
    named: set[str] = set()
    try:
        (top,) = con.execute("SELECT max(rowid) FROM Cache").fetchone()
    except sqlite3.Error as exc:
        report.problems.append(f"the table of entries cannot be read: {exc}")
        return named
    for low in range(0, (top or 0) + 1, _RANGE):
        try:
            rows = con.execute(
                "SELECT key, raw, mode, filename, value, size FROM Cache"
                " WHERE rowid >= ? AND rowid < ?", (low, low + _RANGE)).fetchall()
        except sqlite3.Error as exc:
            report.problems.append(f"rows {low}-{low + _RANGE - 1} cannot be read: {exc}")
            continue
        for key, raw, mode, filename, value, size in rows:
            report.rows += 1
            if isinstance(filename, str):
                named.add(os.path.normpath(filename))
                report.files += 1
            problem = _check_row(root, signer, key, raw, mode, filename, value, size)
            if problem is not None:
                report.problems.append(problem)
            elif isinstance(key, str) and key[:1] in SIGNED_KINDS:
                report.signed += 1
    return named


def _check_row(root: Path, signer: Signer, key, raw, mode, filename, value, size) -> str | None:
    if not isinstance(key, str) or raw != 1:
        return f"a row with a pickled key ({key!r:.60}): nbgroups never writes nor reads it"
    where = key.replace(SEP, "/")
    if mode not in (_MODE_RAW, _MODE_BINARY):
        return f"{where!r}: storage mode {mode} (a pickle for diskcache): never loaded"
    try:
        data = read_value_file(root, key, filename, size) if mode == _MODE_BINARY else value
        if key[:1] in SIGNED_KINDS:
            if not isinstance(data, bytes):
                return f"{where!r}: holds a {type(data).__name__}, not a signed entry"
            signer.verify(data, key, f"entry {where!r}")
    except NbgroupsError as exc:
        return str(exc)
    return None
