"""Executor calls are tasks like any: the submitting process is killed mid-way
(SIGKILL, with its workers, as a kernel restart does), and a new process on the
same store finds the finished results and resumes the rest, each exactly once.
"""

from __future__ import annotations

import textwrap

import nbgroups
from nbgroups import State, api
from tests.submitters import kill_hard, submitter
from tests.test_fault_kernel_kill import _runs, _wait_group_gone

N = 30

CHILD = textwrap.dedent(
    """
    import sys
    import nbgroups
    from tests.test_fault_kernel_kill import work

    store, marks = sys.argv[1], sys.argv[2]
    nbgroups.configure(store=store, workers=2, progress=False)
    ex = nbgroups.Executor(group="ex-kill")
    futures = [ex.submit(work, x, marks) for x in range(COUNT)]
    print("submitted", flush=True)
    [f.result() for f in futures]
    print("finished (too early: the test wanted to kill it first)", flush=True)
    """.replace("COUNT", str(N))
)


def test_kill_the_executors_process_then_resume(tmp_path):
    store = tmp_path / "store"
    marks = tmp_path / "marks"
    marks.mkdir()
    with submitter(CHILD, str(store), str(marks)) as proc:
        api.reset()
        nbgroups.configure(store=str(store), workers=2, progress=False)
        assert api.runner().wait(lambda: nbgroups.count_group("ex-kill") >= N // 4, 90,
                                 poll=0.01), proc.stderr.read()
        api.reset()
        kill_hard(proc)
    _wait_group_gone(proc.pid)
    before = _runs(marks)

    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        tasks = nbgroups.fetch_group("ex-kill")
        assert len(tasks) == N  # stored before they ran, as async_task's are
        unfinished = [t for t in tasks if t.state is State.QUEUED]
        assert 0 < len(unfinished) < N, "the kill was not mid-way"
        assert nbgroups.resume_group("ex-kill") == len(unfinished)
        # the resumed tasks are found again with as_completed, as they end
        ends = list(nbgroups.as_completed([t.id for t in unfinished], timeout=120))
        assert sorted(t.id for t in ends) == sorted(t.id for t in unfinished)
        assert nbgroups.result_group("ex-kill") == [x * 3 for x in range(N)]
        after = _runs(marks)
        todo = {t.args[0] for t in unfinished}
        for x in range(N):
            assert after.get(x, 0) - before.get(x, 0) == (1 if x in todo else 0), x
    finally:
        api.reset()
