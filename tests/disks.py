"""A small real disk for the disk-full tests: a tmpfs mounted for one test.

Mounting needs root. Outside CI a developer without root sees those tests
skipped with the reason; under CI (``CI=true``, run as root) a mount that fails
fails the test, so a green CI always ran them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbgroups import api


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(f"disk-full tests cannot run under CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def small_disk(where: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``, unmounted whatever the test did."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        api.reset()  # close the store's database before the unmount
        gc.collect()  # and the connections of threads that ended (diskcache: one per thread)
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            # Still open: a connection kept alive by a logged traceback (pytest keeps the
            # log records of the test). Detached now, freed when the last file closes.
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Fill the disk up (a file grown until the device is full)."""
    filler = disk / "filler"
    # Unbuffered: a buffered file keeps the part of a write that did not fit and
    # raises ENOSPC again when it is closed (seen: a flaky failure at the close).
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler
