"""Fault: two processes (kernels) submit to the same group of one store at once.

Exact counts afterwards: no record lost, none mixed up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap

import nbgroups
from nbgroups import api

PER_PROC = 400

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import nbgroups
    from tests.test_fault_concurrent import square_or_fail

    store, base = sys.argv[1], int(sys.argv[2])
    nbgroups.configure(store=store, workers=1, progress=False)
    print("ready", flush=True)
    sys.stdin.readline()  # "go": both processes submit at once
    ids = []
    for start in range(base, base + COUNT, 50):  # many small submissions: interleaved pages
        ids += [nbgroups.async_task(square_or_fail, x, group="both")
                for x in range(start, start + 50)]
        time.sleep(0.002)  # pace the bursts, so the two processes' pages interleave
    for tid in ids:
        nbgroups.fetch(tid, wait=120_000)
    print("done", len(ids), flush=True)
    """.replace("COUNT", str(PER_PROC))
)


def square_or_fail(x):
    if x % 10 == 0:
        raise ValueError(f"no {x}")
    return x * x


def test_two_processes_one_group(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(base)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for base in (0, 10_000)
    ]
    for p in procs:  # each has configured nbgroups (or died: then its error shows below)
        p.stdout.readline()
    for p in procs:
        with contextlib.suppress(BrokenPipeError):
            p.stdin.write("go\n")
            p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=110)
        assert p.returncode == 0, err
        assert out.strip() == f"done {PER_PROC}"

    expected = [x for base in (0, 10_000) for x in range(base, base + PER_PROC)]
    api.reset()
    nbgroups.configure(store=str(store), workers=1, progress=False)
    try:
        tasks = nbgroups.fetch_group("both")
        assert len(tasks) == 2 * PER_PROC
        assert len({t.id for t in tasks}) == 2 * PER_PROC
        assert sorted(t.args[0] for t in tasks) == expected
        for t in tasks:
            x = t.args[0]
            if x % 10 == 0:
                assert t.success is False and str(t.result) == f"no {x}"
            else:
                assert t.success is True and t.result == x * x
        fails = sum(1 for x in expected if x % 10 == 0)
        assert nbgroups.count_group("both") == 2 * PER_PROC - fails
        assert nbgroups.count_group("both", failures=True) == fails
        assert sorted(nbgroups.result_group("both")) == sorted(
            x * x for x in expected if x % 10)
        counts = nbgroups.group_counts("both")
        assert counts.submitted == 2 * PER_PROC and counts.settled
        # each process's own tasks stay in its own submission order
        xs = [t.args[0] for t in tasks]
        for base in (0, 10_000):
            mine = [x for x in xs if base <= x < base + PER_PROC]
            assert mine == list(range(base, base + PER_PROC))
    finally:
        api.reset()
