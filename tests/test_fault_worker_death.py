"""Fault: a worker process dies (os._exit, segfault, SIGKILL from inside or outside).

Only the task the dead worker was running fails, with a WorkerDied error that
names the exit code or signal, and it ran exactly once (no silent re-run); every
other task of the group, including the calls batched with the dying one, is
re-dispatched on a fresh pool and finishes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from nbgroups import WorkerDied
from nbgroups.api import runner

N = 300
VICTIM = 150


def _mark(runs_dir: str, x) -> None:
    with open(os.path.join(runs_dir, f"{x}.run"), "a") as f:
        f.write(f"{os.getpid()}\n")


def _runs(runs_dir: Path, x) -> int:
    p = runs_dir / f"{x}.run"
    return len(p.read_text().splitlines()) if p.exists() else 0


def _die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    elif how == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


def tiny(x, runs_dir, how):
    _mark(runs_dir, x)
    if x == VICTIM:
        _die(how)
    return x * 2


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("exit", "exited with code 3"),
        ("segfault", "signal SIGSEGV (11)"),
        ("sigkill", "signal SIGKILL (9)"),
    ],
)
def test_only_the_dying_task_fails(nb_loky, tmp_path, how, reason):
    nb = nb_loky
    runs = tmp_path / "runs"
    runs.mkdir()
    # Warm the pool up so the sweep goes out in multi-call batches: the victim's
    # batch mates are then in flight when its worker dies.
    nb.sweep(tiny, "warm", x=list(range(1000, 1400)), runs_dir=[str(runs)], how=["none"])
    nb.result_group("warm", wait=60_000)
    restarts = runner().restarts

    nb.sweep(tiny, "g", x=list(range(N)), runs_dir=[str(runs)], how=[how])
    tasks = nb.fetch_group("g", wait=90_000)

    assert len(tasks) == N
    assert nb.count_group("g") == N - 1
    assert nb.count_group("g", failures=True) == 1
    assert nb.result_group("g") == [x * 2 for x in range(N) if x != VICTIM]
    (failed,) = tasks.filter(success=False)
    assert failed.kwargs["x"] == VICTIM
    assert isinstance(failed.result, WorkerDied)
    assert reason in str(failed.result)
    assert "WorkerDied" in failed.traceback
    assert failed.attempt_count == 1
    assert _runs(runs, VICTIM) == 1  # failed at once: not re-run behind the user's back
    assert all(_runs(runs, x) >= 1 for x in range(N))
    assert all(t.attempt_count == 1 for t in tasks)  # re-dispatch after a break is free
    assert runner().restarts == restarts + 1


def sleeper(x, pid_dir):
    if x == 0:
        (Path(pid_dir) / "pid.tmp").write_text(str(os.getpid()))
        os.replace(Path(pid_dir) / "pid.tmp", Path(pid_dir) / "pid")
        time.sleep(60)
    return x


def test_sigkill_from_outside_fails_that_task_naming_the_signal(nb_loky, tmp_path):
    nb = nb_loky
    nb.sweep(sleeper, "ext", x=list(range(20)), pid_dir=[str(tmp_path)])
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # what the out-of-memory killer does
    tasks = nb.fetch_group("ext", wait=60_000)
    recovered = time.monotonic() - t0

    assert nb.count_group("ext") == 19
    assert nb.count_group("ext", failures=True) == 1
    (failed,) = tasks.filter(success=False)
    assert failed.kwargs == {"x": 0, "pid_dir": str(tmp_path)}
    assert isinstance(failed.result, WorkerDied)
    assert f"pid {pid}" in str(failed.result)
    assert "SIGKILL" in str(failed.result)
    assert nb.result_group("ext") == list(range(1, 20))
    print(f"external SIGKILL: group settled {recovered:.2f} s after the kill")


def die_once(x, runs_dir):
    _mark(runs_dir, x)
    if x == 3 and _runs(Path(runs_dir), x) == 1:
        os._exit(9)
    return x


def test_retries_cover_a_worker_death(nb_loky, tmp_path):
    nb = nb_loky
    nb.sweep(die_once, "retry", x=list(range(8)), runs_dir=[str(tmp_path)], retries=1)
    tasks = nb.fetch_group("retry", wait=60_000)
    assert nb.count_group("retry") == 8
    assert nb.count_group("retry", failures=True) == 0
    assert nb.result_group("retry") == list(range(8))
    by_x = {t.args[0] if t.args else t.kwargs["x"]: t for t in tasks}
    assert by_x[3].attempt_count == 2
    assert _runs(tmp_path, 3) == 2


def test_idle_workers_killed_between_groups(nb_loky, tmp_path):
    """Workers killed while idle (no call running): nothing fails, the pool is replaced."""
    nb = nb_loky
    nb.sweep(tiny, "before", x=list(range(20)), runs_dir=[str(tmp_path)], how=["none"])
    nb.result_group("before", wait=60_000)
    executor = runner().executor
    pids = executor.worker_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # loky notices the deaths on its own (its pool's flag: fault injection reads it)
    assert runner().wait(lambda: executor._pool._flags.broken is not None, 30, poll=0.01)
    nb.sweep(tiny, "after", x=list(range(50)), runs_dir=[str(tmp_path)], how=["none"])
    assert nb.result_group("after", wait=60_000) == [x * 2 for x in range(50)]
    assert nb.count_group("after", failures=True) == 0
    assert runner().restarts == 1
