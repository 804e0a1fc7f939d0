"""Fault: the process that submitted a sweep (the kernel) is killed with SIGKILL.

A subprocess submits a sweep and is killed mid-way (with its workers, as a
kernel restart does). A new process on the same store sees every finished
result, sees the unfinished tasks as such, and ``resume_group`` runs each
unfinished task exactly once more (counted with side-effect files).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbgroups
from nbgroups import State, api

N = 40

CHILD = textwrap.dedent(
    """
    import sys
    import nbgroups
    from tests.test_fault_kernel_kill import work

    store, marks = sys.argv[1], sys.argv[2]
    nbgroups.configure(store=store, workers=2, progress=False)
    nbgroups.sweep(work, "kk", x=list(range(COUNT)), marks=[marks])
    print("submitted", flush=True)
    nbgroups.result_group("kk", wait=-1)
    print("finished (too early: the test wanted to kill it first)", flush=True)
    """.replace("COUNT", str(N))
)


def work(x, marks):
    import time

    with open(f"{marks}/{x}.run", "a") as f:
        f.write("run\n")
    time.sleep(0.15)
    return x * 3


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies count as gone:
    they write nothing, and the container's init may be slow to reap them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    """Until every process of the group is dead (no event tells: poll the kernel)."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still runs"
        time.sleep(0.01)


def _runs(marks: Path) -> dict[int, int]:
    return {int(p.stem): len(p.read_text().splitlines()) for p in marks.glob("*.run")}


def test_kill_the_submitter_then_resume(tmp_path):
    store = tmp_path / "store"
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store), str(marks)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "submitted"
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        # a quarter finished: kill mid-sweep (the other process's progress is
        # only in the store: the runner's wait polls it)
        assert api.runner().wait(lambda: nbgroups.count_group("kk") >= N // 4, 90, poll=0.01), \
            proc.stderr.read()
        api.reset()
        os.killpg(proc.pid, signal.SIGKILL)  # the kernel and its workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    _wait_group_gone(proc.pid)  # the killed workers write no more marks
    before = _runs(marks)

    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        tasks = nbgroups.fetch_group("kk")
        assert len(tasks) == N  # every task's record was in the store before dispatch
        finished = [t for t in tasks if t.state is State.SUCCESS]
        unfinished = [t for t in tasks if t.state is State.QUEUED]
        assert len(finished) + len(unfinished) == N
        assert 0 < len(finished) < N, "the kill was not mid-sweep"
        assert all(t.result == t.kwargs["x"] * 3 for t in finished)
        assert all(t.success is None and t.result is None for t in unfinished)
        assert all(before.get(t.kwargs["x"], 0) >= 1 for t in finished)
        assert nbgroups.count_group("kk") == len(finished)
        counts = nbgroups.group_counts("kk")
        assert (counts.done, counts.queued) == (len(finished), len(unfinished))

        t0 = time.monotonic()
        assert nbgroups.resume_group("kk") == len(unfinished)
        assert nbgroups.resume_group("kk") == 0  # already running here: not twice
        results = nbgroups.result_group("kk", wait=120_000)
        took = time.monotonic() - t0
        assert results == [x * 3 for x in range(N)]
        assert nbgroups.count_group("kk") == N
        assert nbgroups.count_group("kk", failures=True) == 0
        after = _runs(marks)
        todo = {t.kwargs["x"] for t in unfinished}
        for x in range(N):
            assert after.get(x, 0) - before.get(x, 0) == (1 if x in todo else 0), x
        assert nbgroups.resume_group("kk") == 0
        print(f"kernel kill: {len(finished)} finished kept, {len(unfinished)} resumed "
              f"and done in {took:.2f} s")
    finally:
        api.reset()


EXITING = textwrap.dedent(
    """
    import sys
    import nbgroups

    nbgroups.configure(store=sys.argv[1], workers=2, progress=False)
    for i in range(COUNT):
        nbgroups.async_task("time.sleep", 0.0002, group="left")
    if sys.argv[2] != "0":  # the pool has started and is busy
        nbgroups.result_group("left", count=int(sys.argv[2]))
    print(nbgroups.group_counts("left").submitted, flush=True)
    """
)


def test_exit_with_calls_queued_is_quiet_and_they_resume(tmp_path):
    """A script (or a kernel shut down) exits with calls still queued: no traceback
    at exit (loky's exit hook refuses work; the runner stops before it), and the
    calls not run stay queued in the store, for resume_group."""
    count = 5000
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for waited in (0, 500):  # before the pool started; while it runs
        store = tmp_path / f"store{waited}"
        out = subprocess.run(
            [sys.executable, "-c", EXITING.replace("COUNT", str(count)), str(store),
             str(waited)], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(count)]
        assert "Traceback" not in out.stderr and "error" not in out.stderr, out.stderr
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        try:
            counts = nbgroups.group_counts("left")
            assert counts.submitted == count and counts.done >= waited
            assert counts.done + counts.queued == count
            assert nbgroups.resume_group("left") == counts.queued
            assert nbgroups.result_group("left", wait=120_000) == [None] * count
        finally:
            api.reset()


def test_exit_while_calls_run_is_prompt(tmp_path):
    """Interpreter exit stops the pool (DESIGN §1): with long calls running, the
    process ends at once instead of waiting for calls nobody will record; those
    stay queued in the store."""
    store = tmp_path / "store"
    code = textwrap.dedent(
        """
        import sys
        import nbgroups
        from nbgroups import api

        nbgroups.configure(store=sys.argv[1], workers=2, progress=False)
        for i in range(4):
            nbgroups.async_task("time.sleep", 60, group="long")
        assert api.runner().wait(lambda: nbgroups.group_counts("long").running >= 2, 60)
        print("running", flush=True)
        """
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["running"]
    assert "Traceback" not in out.stderr, out.stderr
    assert took < 30, f"exit waited for the running calls ({took:.1f} s)"
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        counts = nbgroups.group_counts("long")
        assert (counts.submitted, counts.done, counts.failed, counts.queued) == (4, 0, 0, 4)
    finally:
        api.reset()
