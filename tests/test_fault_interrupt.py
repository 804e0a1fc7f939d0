"""Fault: the kernel is interrupted while it waits on a group.

A subprocess (standing in for the kernel) waits in ``result_group(wait=-1)``;
SIGINT to its whole process group (what Jupyter's interrupt does) raises
KeyboardInterrupt in the wait at once, the tasks go on and their results reach
the store, and no worker prints a traceback.
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

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import nbgroups

    store, marks = sys.argv[1], sys.argv[2]
    nbgroups.configure(store=store, workers=2, progress=False)

    def slow(x):
        with open(os.path.join(marks, f"{x}.start"), "w"):
            pass
        time.sleep(0.5)
        return x * x

    nbgroups.sweep(slow, "intr", x=list(range(8)))
    print("waiting", flush=True)
    try:
        nbgroups.result_group("intr", wait=-1)
        print("wait returned without interrupt", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted {time.time()!r}", flush=True)
    # The tasks go on: wait for them now (a second wait, as a user would).
    print("results", nbgroups.result_group("intr", wait=120_000), flush=True)
    """
)


def test_interrupt_stops_the_wait_and_tasks_go_on(tmp_path):
    store = tmp_path / "store"
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), str(marks)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,  # its own process group, like a kernel's
    )
    try:
        assert proc.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 60
        while not list(marks.glob("*.start")):  # workers are running tasks
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # the kernel and its workers, like Jupyter
        out, err = proc.communicate(timeout=110)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = out.splitlines()
    interrupted = [line for line in lines if line.startswith("interrupted")]
    assert interrupted, (out, err)
    delay = float(interrupted[0].split()[1]) - sent
    assert "results [0, 1, 4, 9, 16, 25, 36, 49]" in lines
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    print(f"interrupt: the wait stopped {delay * 1000:.0f} ms after SIGINT")

    # The results are in the store for the next process too.
    from nbgroups import api

    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        assert nbgroups.result_group("intr") == [x * x for x in range(8)]
        assert nbgroups.count_group("intr") == 8
    finally:
        api.reset()


def test_pool_workers_start_with_sigint_blocked(nb_loky):
    """Workers inherit the mask of the thread that spawns them: SIGINT must be blocked
    there from the first submit on, or an interrupt kills a worker still importing.
    (CPython's resource tracker, started inside that first submit, unblocked it.)"""
    nbgroups.result(nbgroups.async_task("math.modf", 1.0), wait=60_000)
    from nbgroups import api

    pids = api.runner().executor.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        blocked = int(next(line for line in status.splitlines()
                           if line.startswith("SigBlk:")).split()[1], 16)
        assert blocked & (1 << (signal.SIGINT - 1)), f"worker {pid}: SIGINT not blocked"


def test_the_main_thread_never_enters_a_python_level_lock_the_runner_shares(
        nb_loky, monkeypatch):
    """Jupyter's Interrupt raises KeyboardInterrupt in the main thread between two
    bytecodes, also inside ``Condition.__enter__`` just after its lock was taken
    (``threading.Event.set`` enters one): that lock then stays taken, the runner
    thread blocks on it for good, and the next cell hangs (seen once in about 40
    kernels interrupted 25 times each). So what the main thread runs to submit,
    flush, wait and read enters no Condition in Python: a fault injected there
    (an interrupt at that exact point) must never reach this thread from
    nbgroups' code. (A ``concurrent.futures.Future.result()`` the user calls
    enters one too: the standard library's own risk, which every executor shares.)"""
    import threading
    import traceback

    hazards = []
    enter = threading.Condition.__enter__
    main = threading.main_thread().ident

    def interrupted_after_acquire(self):
        taken = enter(self)
        # (get_ident: current_thread() would make a dummy Thread, entering here again)
        if threading.get_ident() == main:
            stack = traceback.extract_stack()[:-1]
            if any(f"{os.sep}nbgroups{os.sep}" in f.filename for f in stack):
                hazards.append("".join(traceback.format_list(stack[-6:])))
        return taken

    nbgroups.result(nbgroups.async_task("math.floor", 0.5, group="hz0"), wait=-1)  # threads up
    monkeypatch.setattr(threading.Condition, "__enter__", interrupted_after_acquire)
    ids = [nbgroups.async_task("math.floor", i + 0.5, group="hz") for i in range(50)]
    nbgroups.fetch(ids[0])  # a read flushes
    assert nbgroups.result(ids[-1], wait=-1) == 49
    assert nbgroups.result_group("hz", wait=-1) == list(range(50))
    nbgroups.sweep("builtins.round", "hz2", number=[0.4, 1.4])
    assert nbgroups.result_group("hz2", count=2) == [0, 1]
    futures = [nbgroups.Executor(group="hz3").submit(pow, 2, k) for k in range(3)]
    assert [f.result(timeout=60) for f in futures] == [1, 2, 4]
    assert [t.result for t in nbgroups.as_completed(ids[:3])] == [0, 1, 2]
    assert hazards == [], "\n\n".join(hazards)
