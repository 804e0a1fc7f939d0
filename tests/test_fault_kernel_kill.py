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
from tests.submitters import kill_hard, submitter

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
    with submitter(CHILD, str(store), str(marks)) as proc:
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        # a quarter finished: kill mid-sweep (the other process's progress is
        # only in the store: the runner's wait polls it)
        assert api.runner().wait(lambda: nbgroups.count_group("kk") >= N // 4, 90, poll=0.01), \
            proc.stderr.read()
        api.reset()
        kill_hard(proc)  # the kernel and its workers
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


def test_a_script_waits_at_exit_for_what_it_submitted(tmp_path):
    """A script exits with calls still queued: as concurrent.futures does, its
    exit waits for them (issue 13, item 4), quietly (loky's exit hook refuses
    work: the wait runs before it, and a pool first started during the wait
    registers its hook all the same)."""
    count = 3000
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for waited in (0, 500):  # before the pool started; while it runs
        store = tmp_path / f"store{waited}"
        out = subprocess.run(
            [sys.executable, "-c", EXITING.replace("COUNT", str(count)), str(store),
             str(waited)], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(count)]
        assert out.stderr == "", out.stderr  # no traceback, nothing left to name
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        try:
            counts = nbgroups.group_counts("left")
            assert (counts.submitted, counts.done, counts.queued) == (count, count, 0)
            assert nbgroups.resume_group("left") == 0
        finally:
            api.reset()


def test_ctrl_c_stops_the_exit_wait_and_names_what_is_left(tmp_path):
    """Ctrl-C while a script's exit waits: the process ends at once (the running
    calls are not recorded as failed), and a line on stderr names what is left
    and how to resume it; resume_group runs each left call once."""
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    code = textwrap.dedent(
        """
        import sys
        import threading
        import time
        import nbgroups
        from nbgroups import api
        from tests.test_fault_kernel_kill import work_long

        nbgroups.configure(store=sys.argv[1], workers=2, progress=False)
        for i in range(6):
            nbgroups.async_task(work_long, i, sys.argv[2], sys.argv[3], group="long")
        assert api.runner().wait(lambda: nbgroups.group_counts("long").running >= 2, 60)

        def tell():  # once the exit waits: the test presses Ctrl-C then
            from nbgroups import shutdown
            while not shutdown.waiting:
                time.sleep(0.01)
            print("waiting", flush=True)

        threading.Thread(target=tell, daemon=True).start()
        """
    )
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(store), str(marks), str(gate)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGINT)  # while the exit waits
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "task(s) of group 'long' left unfinished; " \
           "resume with nbgroups.resume_group('long')" in err, err
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        counts = nbgroups.group_counts("long")
        assert (counts.submitted, counts.done, counts.failed) == (6, 0, 0)
        assert counts.queued == 6
        gate.touch()  # the resumed calls may end now
        assert nbgroups.resume_group("long") == 6
        assert nbgroups.result_group("long", wait=60_000) == list(range(6))
        assert _runs(marks) == {x: 1 for x in range(6)}  # each ended once
    finally:
        api.reset()


def work_long(x, marks, gate):
    """Runs until ``gate`` exists (the test's Ctrl-C comes first), then marks its end."""
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.05)
    with open(f"{marks}/{x}.run", "a") as f:
        f.write("run\n")
    return x


def test_the_exit_wait_shows_progress_on_a_terminal(tmp_path):
    """With stderr a terminal (a pseudo-terminal here), the exit wait shows how
    many tasks are left, on one line updated in place."""
    import pty

    code = textwrap.dedent(
        """
        import sys
        import nbgroups

        nbgroups.configure(store=sys.argv[1], workers=2, progress=False)
        for i in range(12):
            nbgroups.async_task("time.sleep", 0.25, group="tty")
        """
    )
    main, sub = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "store")], stdout=subprocess.PIPE,
            stderr=sub, env={**os.environ, "PYTHONPATH": os.getcwd()})
        os.close(sub)
        shown = b""
        while True:  # read until the child closes its end
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
    finally:
        os.close(main)
    text = shown.decode(errors="replace")
    assert "\rnbgroups: waiting for " in text and "task(s) to finish" in text, text
    assert "Traceback" not in text and "left unfinished" not in text, text
    api.reset()
    nbgroups.configure(store=str(tmp_path / "store"), workers=2, progress=False)
    try:
        assert nbgroups.count_group("tty") == 12
    finally:
        api.reset()


def test_a_worker_that_starts_after_its_kernel_died_exits_at_once():
    """A loky worker still starting when its kernel is killed is reparented before
    its initializer runs: it must compare with the kernel's pid, given by the pool,
    not take its new parent for the kernel (it then stayed alive, idle, for good)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    code = ("from nbgroups import worker\n"
            f"worker.init_worker({gone})\n"
            "print('still here')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "still here" not in done.stdout, done
    alive = subprocess.run([sys.executable, "-c", code.replace(gone, "os.getppid()").replace(
        "from nbgroups import worker", "import os\nfrom nbgroups import worker")],
        capture_output=True, text=True, timeout=60)
    assert "still here" in alive.stdout, alive  # with its kernel alive it goes on
