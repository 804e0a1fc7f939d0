"""Fault: a task runs past its ``timeout``.

It fails with TaskTimeout (after at least the limit, long before it would have
finished), its worker is replaced, and the rest of the group goes on.
"""

from __future__ import annotations

import os
import time

import pytest

from nbgroups import TaskTimeout
from nbgroups.api import runner


def maybe_hang(x, pid_dir):
    if x == 0:
        with open(os.path.join(pid_dir, "pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(100)
    time.sleep(0.01)
    return x * 10


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("where", ["option", "configure"])
def test_timeout_fails_that_task_and_replaces_its_worker(nb_loky, tmp_path, where):
    nb = nb_loky
    options = {"timeout": 2}
    if where == "configure":
        nb.configure(timeout=2)
        options = {}
    t0 = time.monotonic()
    nb.sweep(maybe_hang, "t", x=list(range(30)), pid_dir=[str(tmp_path)], **options)
    tasks = nb.fetch_group("t", wait=90_000)
    elapsed = time.monotonic() - t0

    assert nb.count_group("t") == 29
    assert nb.count_group("t", failures=True) == 1
    assert nb.result_group("t") == [x * 10 for x in range(1, 30)]
    (failed,) = tasks.filter(success=False)
    assert failed.kwargs["x"] == 0
    assert isinstance(failed.result, TaskTimeout)
    assert isinstance(failed.result, TimeoutError)
    assert "timeout of 2 s" in str(failed.result)
    assert failed.attempt_count == 1
    assert 2 <= failed.time_taken() < 100  # ended by the limit, not by finishing
    pid = int((tmp_path / "pid").read_text())
    assert not _pid_alive(pid)  # its worker was replaced
    assert runner().restarts == 1
    # The fresh pool works.
    assert nb.result(nb.async_task(maybe_hang, 5, str(tmp_path)), wait=60_000) == 50
    print(f"timeout 2 s: failed after {failed.time_taken():.2f} s, "
          f"group settled in {elapsed:.2f} s")


def test_retried_timeout_counts_attempts(nb_loky, tmp_path):
    nb = nb_loky
    tid = nb.async_task(maybe_hang, 0, str(tmp_path), timeout=1, retries=1, group="tr")
    task = nb.fetch(tid, wait=90_000)
    assert task.success is False
    assert isinstance(task.result, TaskTimeout)
    assert task.attempt_count == 2
    assert nb.count_group("tr", failures=True) == 1
