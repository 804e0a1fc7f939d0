"""reuse=True: re-running a cell runs only what is not done yet (issue 7).

Cells run in a real IPython shell (functions defined there live in
``__main__``, as in a notebook) on a real loky pool and a real store; every
call appends a line to a log file, the side-effect counter that proves what
ran.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

import nbgroups
from nbgroups import api
from nbgroups.errors import ReuseWarning
from nbgroups.keys import call_key, func_digest


def run(shell, code):
    result = shell.run_cell(textwrap.dedent(code))
    result.raise_error()
    return result.result


def ran(shell):
    """Lines logged since the last look (one per call that really ran), then reset."""
    path = shell.user_ns["LOG"]
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split()
    os.unlink(path)
    return lines


SQUARE = """
def square(x):
    with open(LOG, "a") as fh:
        fh.write(f"{x}\\n")
    return x * x
"""

FIFTY = SQUARE + """
ids = [nbgroups.async_task(square, x, group="fifty", reuse=True) for x in range(50)]
nbgroups.result_group("fifty", wait=-1)
"""


def test_rerunning_a_50_call_cell_runs_nothing_the_second_time(ip):
    first = run(ip, FIFTY)
    first_ids = list(ip.user_ns["ids"])
    assert first == [x * x for x in range(50)]
    assert sorted(map(int, ran(ip))) == list(range(50))

    second = run(ip, FIFTY)
    assert ran(ip) == []  # nothing ran
    assert second == first
    assert ip.user_ns["ids"] == first_ids  # the same tasks answer
    assert len(nbgroups.fetch_group("fifty")) == 50
    counts = api.group_counts("fifty")
    assert (counts.submitted, counts.done, counts.failed, counts.reused) == (50, 50, 0, 50)
    assert nbgroups.count_group("fifty") == 50


def test_calls_first_run_without_reuse_are_reused(ip):
    """reuse=True skips a call done successfully in the group even when it was
    submitted without reuse=True (its key is made from the stored call)."""
    plain = FIFTY.replace(', reuse=True', '').replace('"fifty"', '"late"')
    first = run(ip, plain)
    first_ids = list(ip.user_ns["ids"])
    assert sorted(map(int, ran(ip))) == list(range(50))
    again = run(ip, plain.replace('group="late"', 'group="late", reuse=True'))
    assert ran(ip) == []  # nothing ran again
    assert again == first and ip.user_ns["ids"] == first_ids
    counts = api.group_counts("late")
    assert (counts.submitted, counts.done, counts.reused) == (50, 50, 50)
    # more calls without reuse, then reuse again: the new ones are keyed too
    run(ip, SQUARE + "[nbgroups.async_task(square, x, group='late') for x in range(50, 55)]\n"
                     "nbgroups.result_group('late', count=55, wait=-1)")
    assert sorted(map(int, ran(ip))) == list(range(50, 55))
    run(ip, SQUARE + "[nbgroups.async_task(square, x, group='late', reuse=True)"
                     " for x in range(56)]\nnbgroups.result_group('late', count=56, wait=-1)")
    assert ran(ip) == ["55"]  # only the call never made before


def test_sync_backend_reuses_too(nb, tmp_path):
    log = tmp_path / "log"

    def work(x, path=str(log)):
        with open(path, "a") as fh:
            fh.write(f"{x}\n")
        return -x

    for _ in range(2):
        nbgroups.sweep(work, "s", x=list(range(10)), reuse=True)
        assert nbgroups.result_group("s", wait=-1) == [-x for x in range(10)]
    assert len(log.read_text().split()) == 10
    assert len(nbgroups.fetch_group("s")) == 10



def test_a_success_whose_result_was_not_kept_runs_again_when_one_is_wanted(nb, tmp_path):
    # save=False kept no result: reusing it would leave result_group short for good
    log = tmp_path / "log"

    def sq(x, path=str(log)):
        with open(path, "a") as fh:
            fh.write(f"{x}\n")
        return x * x

    def ran():
        lines = log.read_text().split() if log.exists() else []
        log.unlink(missing_ok=True)
        return sorted(lines)

    nbgroups.sweep(sq, "unsaved", x=[1, 2], save=False)
    assert nbgroups.result_group("unsaved", wait=-1) == []
    nbgroups.sweep(sq, "unsaved", x=[1, 2], save=False, reuse=True)  # reused, marked so
    nbgroups.result_group("unsaved", wait=-1)
    assert ran() == ["1", "2"]
    nbgroups.sweep(sq, "unsaved", x=[1, 2, 3], reuse=True)
    assert nbgroups.result_group("unsaved", wait=-1) == [1, 4, 9]
    assert ran() == ["1", "2", "3"]
    nbgroups.sweep(sq, "unsaved", x=[1, 2, 3], reuse=True)  # kept now: nothing runs
    assert nbgroups.result_group("unsaved", wait=-1) == [1, 4, 9]
    assert ran() == []

def test_changing_the_body_reruns_exactly_that_functions_calls(ip):
    cell = """
    def double(x):
        with open(LOG, "a") as fh:
            fh.write(f"d{x}\\n")
        return x * 2

    def triple(x):
        with open(LOG, "a") as fh:
            fh.write(f"t{x}\\n")
        return x * BODY

    for x in range(5):
        nbgroups.async_task(double, x, group="body", reuse=True)
        nbgroups.async_task(triple, x, group="body", reuse=True)
    nbgroups.result_group("body", wait=-1)
    """
    run(ip, cell.replace("BODY", "3"))
    assert len(ran(ip)) == 10
    run(ip, cell.replace("BODY", "3"))
    assert ran(ip) == []
    result = run(ip, cell.replace("BODY", "-3"))  # triple's body changed, double's did not
    assert sorted(ran(ip)) == [f"t{x}" for x in range(5)]
    assert result[-5:] == [-3 * x for x in range(5)]  # new tasks, after the reused ones
    assert len(result) == 15


def test_changing_a_captured_value_reruns(ip):
    closure = """
    def make(k):
        def scaled(x):
            with open(LOG, "a") as fh:
                fh.write(f"{x}\\n")
            return x * k
        return scaled

    f = make(K)
    [nbgroups.async_task(f, x, group="closure", reuse=True) for x in range(4)]
    nbgroups.result_group("closure", wait=-1)
    """
    run(ip, closure.replace("K", "2"))
    assert len(ran(ip)) == 4
    run(ip, closure.replace("K", "2"))
    assert ran(ip) == []
    run(ip, closure.replace("K", "5"))  # the closure captures another value
    assert sorted(ran(ip)) == ["0", "1", "2", "3"]

    uses_global = """
    OFFSET = VALUE
    def shifted(x):
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        return x + OFFSET
    nbgroups.sweep(shifted, "global", x=[1, 2, 3], reuse=True)
    nbgroups.result_group("global", wait=-1)
    """
    assert run(ip, uses_global.replace("VALUE", "10")) == [11, 12, 13]
    assert len(ran(ip)) == 3
    assert run(ip, uses_global.replace("VALUE", "10")) == [11, 12, 13]
    assert ran(ip) == []
    run(ip, uses_global.replace("VALUE", "{'a': 1}['a']"))  # a new global value
    assert len(ran(ip)) == 3


def test_changing_one_argument_reruns_that_call_only(ip):
    run(ip, SQUARE)
    run(ip, """
    [nbgroups.async_task(square, x, group="args", reuse=True) for x in range(10)]
    nbgroups.result_group("args", wait=-1)
    """)
    assert len(ran(ip)) == 10
    run(ip, """
    xs = list(range(9)) + [99]
    [nbgroups.async_task(square, x, group="args", reuse=True) for x in xs]
    nbgroups.result_group("args", wait=-1)
    """)
    assert ran(ip) == ["99"]
    # the same call spelled with a keyword is the same call
    run(ip, """
    [nbgroups.async_task(square, x=x, group="args", reuse=True) for x in range(10)]
    """)
    assert len(nbgroups.fetch_group("args")) == 11
    assert ran(ip) == []


def test_moving_the_function_to_another_cell_reuses(ip):
    run(ip, SQUARE)
    first_code = ip.user_ns["square"].__code__
    run(ip, """
    [nbgroups.async_task(square, x, group="moved", reuse=True) for x in range(6)]
    nbgroups.result_group("moved", wait=-1)
    """)
    assert len(ran(ip)) == 6
    run(ip, "# another cell, further down\n\n\n\nx = 1\n" + SQUARE)  # defined again, elsewhere
    moved_code = ip.user_ns["square"].__code__
    assert (moved_code.co_filename, moved_code.co_firstlineno) != (
        first_code.co_filename, first_code.co_firstlineno)
    run(ip, """
    [nbgroups.async_task(square, x, group="moved", reuse=True) for x in range(6)]
    nbgroups.result_group("moved", wait=-1)
    """)
    assert ran(ip) == []
    assert len(nbgroups.fetch_group("moved")) == 6


def test_failed_calls_rerun_and_their_failures_stay_in_history(ip, tmp_path):
    flag = tmp_path / "fail-three"
    flag.touch()
    ip.user_ns["FLAG"] = str(flag)
    cell = """
    import os

    def fragile(x):
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        if x == 3 and os.path.exists(FLAG):
            raise ValueError(f"x={x} is not ready")
        return x

    ids = [nbgroups.async_task(fragile, x, group="fragile", reuse=True) for x in range(6)]
    nbgroups.result_group("fragile", wait=-1)
    """
    assert run(ip, cell) == [0, 1, 2, 4, 5]
    first_ids = list(ip.user_ns["ids"])
    assert len(ran(ip)) == 6
    assert nbgroups.count_group("fragile", failures=True) == 1

    flag.unlink()
    assert run(ip, cell) == [0, 1, 2, 3, 4, 5]
    assert ran(ip) == ["3"]  # only the failed call ran again
    assert ip.user_ns["ids"] == first_ids  # under its own id
    assert nbgroups.count_group("fragile", failures=True) == 0
    assert nbgroups.count_group("fragile") == 6
    assert len(nbgroups.fetch_group("fragile")) == 6
    history = nbgroups.fetch(first_ids[3]).history()
    assert [t.success for t in history] == [False, True]
    assert history[0].error == "ValueError: x=3 is not ready"
    assert "is not ready" in history[0].traceback
    assert history[1].result == 3
    assert [t.success for t in nbgroups.fetch(first_ids[0]).history()] == [True]


def test_sweep_rerun_with_an_extended_grid_runs_only_new_points(ip):
    run(ip, """
    def area(w, h):
        with open(LOG, "a") as fh:
            fh.write(f"{w}x{h}\\n")
        return {"area": w * h}
    """)
    run(ip, 'nbgroups.sweep(area, "grid", w=[1, 2], h=[10, 20], reuse=True)')
    assert nbgroups.result_group("grid", wait=-1) == [
        {"area": a} for a in (10, 20, 20, 40)]
    assert len(ran(ip)) == 4
    run(ip, 'nbgroups.sweep(area, "grid", w=[1, 2, 3], h=[10, 20], reuse=True)')
    nbgroups.result_group("grid", wait=-1)
    assert sorted(ran(ip)) == ["3x10", "3x20"]
    counts = api.group_counts("grid")
    assert (counts.submitted, counts.done, counts.reused) == (6, 6, 4)
    df = nbgroups.fetch_group("grid").to_dataframe()
    assert sorted(zip(df["w"], df["h"], df["area"], strict=True)) == [
        (w, h, w * h) for w in (1, 2, 3) for h in (10, 20)]


def test_resubmitting_while_running_does_not_run_twice(ip):
    cell = """
    import time
    def slow(x):
        with open(LOG, "a") as fh:
            fh.write(f"{x}\\n")
        time.sleep(0.3)
        return x
    ids = [nbgroups.async_task(slow, x, group="inflight", reuse=True) for x in range(4)]
    """
    run(ip, cell)
    first = list(ip.user_ns["ids"])
    run(ip, cell)  # at once: the first submissions are queued or running
    assert ip.user_ns["ids"] == first
    assert sorted(nbgroups.result_group("inflight", wait=-1)) == [0, 1, 2, 3]
    assert sorted(ran(ip)) == ["0", "1", "2", "3"]


def test_async_iter_with_reuse_keys_the_whole_iterable(ip):
    run(ip, SQUARE)
    a = run(ip, 'nbgroups.async_iter(square, [1, 2, 3], group="it", reuse=True)')
    assert nbgroups.result(a, wait=-1) == [1, 4, 9]
    assert len(ran(ip)) == 3
    assert run(ip, 'nbgroups.async_iter(square, [1, 2, 3], group="it", reuse=True)') == a
    assert ran(ip) == []
    b = run(ip, 'nbgroups.async_iter(square, [1, 2, 4], group="it", reuse=True)')
    assert b != a and nbgroups.result(b, wait=-1) == [1, 4, 16]
    assert len(ran(ip)) == 3


class Protocol5Only:
    """Picklable for cloudpickle (protocol 5) but refuses to reduce for keying."""

    def __init__(self, v):
        self.v = v

    def __reduce_ex__(self, protocol):
        if protocol < 5:
            raise TypeError("only protocol 5")
        return (Protocol5Only, (self.v,))


def read_back(x, path):
    value = getattr(x, "v", x)
    with open(path, "a") as fh:
        fh.write(f"{value}\n")
    return value


def test_an_argument_that_cannot_be_keyed_runs_as_usual_with_one_warning(nb, tmp_path):
    # "once" is per session, and the nb fixture starts a fresh one
    log = tmp_path / "log"
    args = [1, Protocol5Only(2)]
    with pytest.warns(ReuseWarning, match="Protocol5Only cannot be keyed"):
        nbgroups.sweep(read_back, "unkeyable", x=args, path=[str(log)], reuse=True)
    nbgroups.result_group("unkeyable", wait=-1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning is given once
        nbgroups.sweep(read_back, "unkeyable", x=args, path=[str(log)], reuse=True)
    assert sorted(nbgroups.result_group("unkeyable", wait=-1)) == [1, 2, 2]
    assert sorted(log.read_text().split()) == ["1", "2", "2"]  # the keyable call was reused


def test_delete_group_with_tasks_forgets_the_keys(nb, tmp_path):
    log = tmp_path / "log"
    nbgroups.sweep(read_back, "gone", x=[1, 2], path=[str(log)], reuse=True)
    nbgroups.result_group("gone", wait=-1)
    assert nbgroups.delete_group("gone", tasks=True) == 2
    nbgroups.sweep(read_back, "gone", x=[1, 2], path=[str(log)], reuse=True)
    assert nbgroups.result_group("gone", wait=-1) == [1, 2]
    assert len(log.read_text().split()) == 4


def test_reuse_as_a_configure_default_and_group_option(nb, tmp_path):
    log = tmp_path / "log"
    nbgroups.configure(reuse=True)
    for _ in range(2):
        nbgroups.async_task(read_back, 7, str(log), group="default")
    with api.default_group("ctx", reuse=True):
        nbgroups.configure(reuse=False)
        for _ in range(2):
            nbgroups.async_task(read_back, 8, str(log))
    nbgroups.result_group("default", wait=-1)
    nbgroups.result_group("ctx", wait=-1)
    assert sorted(log.read_text().split()) == ["7", "8"]


# ---------------------------------------------------------------- the key itself
def _compile(src, filename, name):
    ns = {}
    exec(compile(src, filename, "exec"), ns)
    return ns[name]


KEYED = """
import math
FACTOR = {"b": 2, "a": 1}
def helper(v):
    return v * FACTOR["b"]
def target(x, *, scale=1.5):
    '''doc'''
    return [helper(math.sqrt(x)) * scale for _ in range(2)]
"""


def test_key_ignores_file_names_and_line_numbers():
    a = _compile(KEYED, "<ipython-input-1-aaaa>", "target")
    b = _compile("\n\n\n" + KEYED, "/tmp/ipykernel_42/123456.py", "target")
    assert a.__code__.co_firstlineno != b.__code__.co_firstlineno
    assert func_digest(a) == func_digest(b)


@pytest.mark.parametrize("change", [
    ("* scale", "* scale * 1"),  # the body
    ("scale=1.5", "scale=2.5"),  # a default
    ('"b": 2', '"b": 3'),  # a global value a called helper reads
    ("return v *", "return v +"),  # a called helper's body
])
def test_key_changes_with_code_defaults_and_globals(change):
    a = _compile(KEYED, "<a>", "target")
    b = _compile(KEYED.replace(*change), "<a>", "target")
    assert func_digest(a) != func_digest(b)


def test_argument_keys_are_canonical():
    np = pytest.importorskip("numpy")
    fd = func_digest("math.hypot")
    same = [
        (({"a": 1, "b": [1, 2]},), ({"b": [1, 2], "a": 1},)),  # dict order
        (({"x", "y", "z"},), ({"z", "y", "x"},)),
        ((np.arange(6).reshape(2, 3),), (np.arange(6).reshape(2, 3).copy(order="F"),)),
    ]
    for one, other in same:
        assert call_key(fd, one, {}) == call_key(fd, other, {})
    different = [
        ((1,), (1.0,)), ((1,), (True,)), ((0.0,), (-0.0,)),
        ((np.arange(3),), (np.arange(3).astype("int32"),)),
        ((np.zeros((2, 3)),), (np.zeros((3, 2)),)),
        (("a",), (b"a",)),
    ]
    for one, other in different:
        assert call_key(fd, one, {}) != call_key(fd, other, {}), (one, other)


def test_a_large_captured_array_is_keyed_by_its_content_over_its_memory():
    """A function reading a big global array: the key follows the array's content
    (one element changed: a new key; an equal array: the same key), and the
    array's data is digested where it lies, not copied to bytes first."""
    np = pytest.importorskip("numpy")
    from nbgroups import keys

    ns: dict = {"np": np}
    exec("def total(x):\n    return float(BIG.sum()) + x", ns)
    big = np.arange(keys.LARGE_ARRAY // 8 * 3, dtype="float64").reshape(-1, 3)
    ns["BIG"] = big
    first = func_digest(ns["total"])
    ns["BIG"] = big.copy()
    assert func_digest(ns["total"]) == first
    ns["BIG"][-1, -1] += 1
    assert func_digest(ns["total"]) != first
    ns["BIG"] = np.asfortranarray(big)  # the same values, another layout: the same key
    assert func_digest(ns["total"]) == first

    ns["BIG"] = big
    tracemalloc.start()
    try:
        func_digest(ns["total"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < keys.LARGE_ARRAY // 4, peak  # numpy reports its buffers to tracemalloc


def test_key_is_stable_across_processes_and_hash_seeds(tmp_path):
    script = tmp_path / "key.py"
    script.write_text(textwrap.dedent("""
        from nbgroups.keys import call_key, func_digest
        ns = {}
        exec(compile(%r, "<cell-%%s>" %% __import__("os").getpid(), "exec"), ns)
        print(call_key(func_digest(ns["target"]), (4,), {"tags": {"x", "y", "zz", "w"}}))
    """) % KEYED.replace("scale=1.5", "scale=1.5, tags=()"))
    keys = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                             text=True, check=True, timeout=60)
        keys.add(out.stdout.strip())
    assert len(keys) == 1 and len(keys.pop()) == 40
