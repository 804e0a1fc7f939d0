"""Fault: the kernel stops while a sweep runs, through a real kernel (jupyter_client).

Killed hard (SIGKILL to the kernel alone, as the out-of-memory killer does):
its loky workers notice that their parent is gone, start no new call and exit
within a second; ``resume_group`` from the next process runs each unfinished
call once, and the dead kernel's monitor folder is removed (issue 13, item 3).

Every call leaves a marker when it begins and one when it ends: each call
ends exactly once over the kernel and the resume, and none begins after the kill.
The kernel stops while its workers are inside calls that cannot end (they
wait for a file), each call sent alone: a call that ended a moment before
the stop, its result not yet stored, would rightly run again on resume.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import nbgroups
from nbgroups import State, api
from tests.kernels import alive, kernel, runs

# its waits inside the kernel (up to 120 s) must fail before pytest-timeout does
pytestmark = pytest.mark.timeout(300)

N = 24


def _until(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` (another process's state: no event reaches this one)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_kernel_killed_hard_its_workers_exit_and_resume_runs_each_once(tmp_path):
    store, marks, starts = tmp_path / "store", tmp_path / "marks", tmp_path / "starts"
    marks.mkdir()
    starts.mkdir()
    with kernel(tmp_path) as k:
        k.setup(store, marks)
        fast = tmp_path / "fast"
        out = k.run(f"""
import json
from nbgroups import api
# timeout=: each call is sent alone (its outcome is stored as soon as it ends)
nbgroups.sweep(slow_until, "kk", x=list(range({N})), marks=[MARKS], first=[4],
               fast=[{str(fast)!r}], starts=[{str(starts)!r}], timeout=120)
nbgroups.result_group("kk", count=4, wait=60_000)
slow_running({str(starts)!r}, 4)  # both workers inside a call that will not end
print(json.dumps({{"workers": api.runner().executor.worker_pids(),
                  "monitor": api.runner().stats().monitor_directory}}))
""")
        info = json.loads(out)
        workers, folder = info["workers"], Path(info["monitor"])
        assert len(workers) == 2 and folder.is_dir()
        assert all(int(Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[1])
                   == k.pid for w in workers)  # the kernel's own children
        killed = time.time()
        os.kill(k.pid, signal.SIGKILL)  # the kernel alone: its workers are orphaned
        k.km.provisioner.process.wait(timeout=10)  # reaped, as Jupyter's server does
        # the next process resumes at once: it waits for the orphans itself
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        try:
            before = nbgroups.fetch_group("kk")
            unfinished = [t for t in before if t.state is State.QUEUED]
            assert 0 < len(unfinished) < N
            t0 = time.monotonic()
            assert nbgroups.resume_group("kk") == len(unfinished)
            waited = time.monotonic() - t0
            assert not any(alive(w) for w in workers)  # resume waited for the orphans
            fast.touch()  # the resumed calls may end (an orphan would have ended too)
            assert not folder.exists()  # the dead kernel's monitor folder is gone
            assert nbgroups.result_group("kk", wait=60_000) == list(range(N))
            assert nbgroups.count_group("kk", failures=True) == 0
        finally:
            api.reset()
    ended = runs(marks)
    assert ended == {x: 1 for x in range(N)}, ended
    late = [p.name for p in starts.iterdir() if p.stat().st_mtime > killed + 0.25
            and int(p.name.split(".")[1]) in workers]
    assert late == []  # no orphaned worker began a call after the kill
    print(f"kernel kill -9: {len(unfinished)} unfinished resumed; resume waited "
          f"{waited:.2f} s for the orphaned workers")


def test_restart_kernel_fails_nothing_and_resume_runs_each_once(tmp_path):
    """Kernel > Restart Kernel (a graceful shutdown: ipykernel terminates its
    children) during a sweep: no call is recorded as failed; the calls that
    were running or queued stay unfinished and resume_group runs each once
    (issue 13, item 2; before: 3-5 of 24 failed with WorkerDied SIGTERM)."""
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    with kernel(tmp_path) as k:
        k.setup(store, marks)
        k.run(f"""
nbgroups.sweep(mark, "rs", x=list(range({N})), marks=[MARKS], seconds=[0.4])
nbgroups.result_group("rs", count=4, wait=60_000)
""")
        old = k.pid
        k.km.restart_kernel(now=False)  # what Kernel > Restart Kernel does
        k.kc.wait_for_ready(timeout=60)
        assert k.pid != old and not alive(old)
        k.setup(store, marks)
        out = k.run("""
import json
from nbgroups import State
tasks = nbgroups.fetch_group("rs")
report = {"failed": nbgroups.count_group("rs", failures=True),
          "unfinished": sum(t.state is State.QUEUED for t in tasks)}
report["resumed"] = nbgroups.resume_group("rs")
report["results"] = nbgroups.result_group("rs", wait=60_000)
report["failed_after"] = nbgroups.count_group("rs", failures=True)
print(json.dumps(report))
""", timeout=90)
    report = json.loads(out)
    assert report["failed"] == 0, report  # a restart is not the tasks' fault
    assert 0 < report["unfinished"] == report["resumed"], report
    assert report["results"] == list(range(N)) and report["failed_after"] == 0
    ended = runs(marks)
    # each call ended once (a call ending in the millisecond before the stop,
    # its result still on its way, would run again: see docs/guide/reliability.md)
    assert ended == {x: 1 for x in range(N)}, ended
    print(f"restart: {report['unfinished']} unfinished calls resumed, none failed")


def test_restart_kernel_keeps_what_batches_of_short_calls_ran(tmp_path):
    """Short calls travel in batches of several (~50 ms of calls each), whose
    results come back with the whole batch. Kernel > Restart while such
    batches run: the runner tells them to start no further call and stores
    what they ran before the pool stops, so resume runs only what did not run
    (before: the calls a batch had finished were lost with it and ran twice)."""
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    n = 800
    with kernel(tmp_path) as k:
        k.setup(store, marks)
        k.run(f"""
nbgroups.sweep(mark, "short", x=list(range({n})), marks=[MARKS], seconds=[0.01])
nbgroups.result_group("short", count=200, wait=60_000)
""")
        k.km.restart_kernel(now=False)  # what Kernel > Restart Kernel does
        k.kc.wait_for_ready(timeout=60)
        k.setup(store, marks)
        out = k.run("""
import json
report = {"failed": nbgroups.count_group("short", failures=True),
          "resumed": nbgroups.resume_group("short")}
report["results"] = len(nbgroups.result_group("short", wait=120_000))
print(json.dumps(report))
""", timeout=180)
    report = json.loads(out)
    assert report["failed"] == 0 and report["resumed"] > 0, report
    assert report["results"] == n
    twice = {x: c for x, c in runs(marks).items() if c != 1}
    assert twice == {}, twice  # every call ended exactly once over the two kernels
    assert len(runs(marks)) == n
