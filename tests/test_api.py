"""Every row of DESIGN §2, on a real store in a temp dir, with loky and sync backends.

The ``nb`` fixture (tests/conftest.py) runs each test twice: once on a real
2-worker loky pool, once inline (``backend='sync'``). Callables sent to the
workers are lambdas and closures (cloudpickled by value, as in a notebook) or
dotted paths; functions of a real ``__main__`` are covered by a subprocess.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import nbgroups
from nbgroups import api

ID = re.compile(r"^[0-9a-f]{32}$")
NAME = re.compile(r"^[a-z]+-[a-z]+-[a-z]+-[a-z]+$")
REPO = Path(__file__).resolve().parents[1]


def waiter(path: str, started: str | None = None):
    """A callable that blocks until ``path`` exists (a cross-process event), then returns x.

    With ``started`` (a directory) each call first leaves a file there: a worker began it."""

    def wait_then(x):
        if started is not None:
            with open(os.path.join(started, f"{x}.start"), "w"):
                pass
        deadline = time.time() + 60
        while not os.path.exists(path):
            if time.time() > deadline:
                raise TimeoutError(f"{path} never appeared")
            time.sleep(0.01)
        return x

    return wait_then


# ---------------------------------------------------------------- async_task
def test_async_task_returns_uuid4_hex_id_and_runs_dotted_path(nb):
    tid = nb.async_task("math.modf", 2.5, group="g")
    assert ID.match(tid)
    assert tid[12] == "4" and tid[16] in "89ab"  # uuid4 version and variant
    assert nb.result(tid, wait=-1) == (0.5, 2.0)
    task = nb.fetch(tid)
    assert task.func == "math.modf" and task.args == (2.5,) and task.kwargs == {}
    assert task.success is True and task.group == "g"


def test_async_task_lambda_and_closure(nb):
    base = 10

    def add(x, y=0):
        return base + x + y

    t1 = nb.async_task(lambda x: x * 3, 7, group="g")
    t2 = nb.async_task(add, 1, y=2, group="g")
    assert nb.result(t1, wait=-1) == 21
    assert nb.result(t2, wait=-1) == 13
    assert nb.fetch(t2).kwargs == {"y": 2}
    assert "add" in nb.fetch(t2).func


def test_option_keywords_are_taken_out_of_kwargs(nb):
    seen = {}

    def f(**kwargs):
        return sorted(kwargs)

    tid = nb.async_task(f, a=1, b=2, group="opts", timeout=30, retries=1, save=True,
                        task_name="my-task", hook=lambda t: seen.setdefault("hook", t.id))
    assert nb.result(tid, wait=-1) == ["a", "b"]
    task = nb.fetch("my-task")
    assert task.id == tid and task.name == "my-task" and task.group == "opts"
    assert nb.api.runner().wait(lambda: "hook" in seen, 30)
    assert seen["hook"] == tid


def test_q_options_when_func_takes_an_option_name(nb):
    def f(group, timeout=None):
        return (group, timeout)

    tid = nb.async_task(f, group="as-arg", timeout=3, q_options={"group": "real", "retries": 0})
    assert nb.result(tid, wait=-1) == ("as-arg", 3)
    assert nb.fetch(tid).group == "real"
    assert nb.result_group("real") == [("as-arg", 3)]
    assert nb.result_group("as-arg") is None


def test_true_main_functions_in_a_subprocess(store_dir):
    """Functions defined in a script's ``__main__`` run in loky workers (cloudpickle)."""
    script = textwrap.dedent(f"""
        import nbgroups
        nbgroups.configure(store={str(store_dir)!r}, backend="loky", workers=2, progress=False)
        K = 5
        def scaled(x):
            return K * x
        class Point:
            def __init__(self, x):
                self.x = x
        def make(x):
            return Point(x)
        def outer(n):
            return lambda x: x + n
        ids = [nbgroups.async_task(scaled, i, group="main") for i in range(3)]
        nbgroups.async_task(outer(100), 1, group="main")
        nbgroups.async_task(make, 9, group="main")
        res = nbgroups.result_group("main", wait=-1)
        print(res[:4], type(res[4]).__name__, res[4].x)
        print(nbgroups.fetch(ids[0]).func)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=110, env=env, cwd=str(store_dir.parent))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "[0, 5, 10, 101] Point 9"
    assert lines[1] == "__main__.scaled"


# ---------------------------------------------------------------- async_iter
def test_async_iter_generator_tuples_input_order(nb):
    def slow_first(i, j):
        time.sleep(0.02 * (5 - i) if i < 5 else 0)
        return i * j

    gen = ((i, 2) for i in range(40))  # a generator: no len()
    tid = nb.async_iter(slow_first, gen, group="it")
    assert ID.match(tid)
    assert nb.result(tid, wait=-1) == [i * 2 for i in range(40)]
    task = nb.fetch(tid)
    assert task.success is True and task.group == "it"
    assert nb.count_group("it") == 1  # one task for the whole iterable


def test_async_iter_non_tuple_item_is_one_argument(nb):
    tid = nb.async_iter(len, [[1, 2], "abc", (), {1: 2}])
    # () is a tuple: unpacked into zero arguments -> len() fails; the rest are single args
    task = nb.fetch(tid, wait=-1)
    assert task.success is False
    assert task.result[0] == 2 and task.result[1] == 3 and task.result[3] == 1
    assert isinstance(task.result[2], TypeError)
    assert nb.result(nb.async_iter(len, [[1, 2], "abc", [(1, 2)]]), wait=-1) == [2, 3, 1]


def test_async_iter_one_failing_item_fails_the_task_keeps_the_others(nb):
    tid = nb.async_iter(lambda x: 10 // x, [5, 2, 0, 1], group="it-fail")
    task = nb.fetch(tid, wait=-1)
    assert task.success is False
    assert task.result[:2] == [2, 5] and task.result[3] == 10
    assert isinstance(task.result[2], ZeroDivisionError)
    assert "ZeroDivisionError" in task.traceback
    assert nb.count_group("it-fail", failures=True) == 1
    assert nb.result_group("it-fail") == []


def test_async_iter_empty(nb):
    tid = nb.async_iter(abs, iter(()), group="empty-it")
    assert nb.result(tid, wait=-1) == []
    assert nb.fetch(tid).success is True


# ---------------------------------------------------------------- sweep
def test_sweep_cartesian_product_in_order(nb):
    g = nb.sweep(lambda a, b: a * 10 + b, "sw", a=[1, 2], b=[3, 4, 5])
    assert g == "sw"
    assert nb.result_group("sw", wait=-1) == [13, 14, 15, 23, 24, 25]
    assert [t.kwargs for t in nb.fetch_group("sw")][:2] == [{"a": 1, "b": 3}, {"a": 1, "b": 4}]


# ---------------------------------------------------------------- result / fetch
@pytest.mark.parametrize("cached", [False, True, 60])
def test_result_and_fetch_by_id_and_by_name(nb, cached):
    tid = nb.async_task("math.sqrt", 16, group="byname", cached=cached)
    task = nb.fetch(tid, wait=-1, cached=cached)
    assert task is not None and task.result == 4.0
    assert NAME.match(task.name)
    assert nb.fetch(task.name, cached=cached).id == tid
    assert nb.result(task.name, cached=cached) == 4.0
    assert nb.result(tid, cached=cached) == 4.0
    other = not cached if isinstance(cached, bool) else False
    assert nb.fetch(tid, cached=other) is None  # each layer is looked up alone
    if cached is not False:
        assert task.args is None and task.kwargs is None  # the cache keeps no arguments


def test_result_none_for_unknown_and_unfinished(nb, tmp_path):
    assert nb.result("0" * 32) is None
    assert nb.fetch("no-such-task") is None
    assert nb.result("winter-speaker-alpha-ceiling", wait=10) is None
    if nb.settings().backend == "sync":
        return
    release = tmp_path / "go"
    tid = nb.async_task(waiter(str(release)), 1)
    assert nb.result(tid) is None
    assert nb.result(tid, wait=50) is None
    task = nb.fetch(tid)
    assert task is not None and task.success is None and task.result is None
    waited = nb.fetch(tid, wait=50)  # not finished in time: its record, not None
    assert waited is not None and waited.id == tid and not waited.state.final
    release.touch()
    assert nb.result(tid, wait=-1) == 1


def test_failed_task_result_is_the_exception(nb):
    tid = nb.async_task(lambda: {}["missing"])
    exc = nb.result(tid, wait=-1)
    assert isinstance(exc, KeyError)
    task = nb.fetch(tid)
    assert task.success is False and task.error == "KeyError: 'missing'"
    assert "KeyError" in task.traceback and task.attempt_count == 1


# ---------------------------------------------------------------- group functions
def test_result_group_fetch_group_count_group(nb):
    for i in range(6):
        nb.async_task("math.sqrt", i if i != 3 else -1, group="grp")  # sqrt(-1) fails
    assert nb.result_group("grp", count=6) == [0.0, 1.0, math.sqrt(2), 2.0, math.sqrt(5)]
    with_failures = nb.result_group("grp", failures=True)
    assert len(with_failures) == 6 and isinstance(with_failures[3], ValueError)
    tasks = nb.fetch_group("grp")
    assert isinstance(tasks, nbgroups.TaskList) and len(tasks) == 6
    assert [t.args for t in tasks] == [(0,), (1,), (2,), (-1,), (4,), (5,)]
    assert all(isinstance(t, nbgroups.Task) for t in tasks)
    assert len(nb.fetch_group("grp", failures=False)) == 5
    assert nb.count_group("grp") == 5 and nb.count_group("grp", failures=True) == 1
    assert nb.result_group("nope") is None and nb.fetch_group("nope") is None
    assert nb.count_group("nope") == 0 and nb.count_group("nope", failures=True) == 0


def test_delete_group_label_keeps_tasks(nb):
    ids = [nb.async_task("math.floor", i + 0.5, group="del") for i in range(3)]
    nb.result_group("del", wait=-1)
    n = nb.delete_group("del")
    assert type(n) is int and n == 3
    assert nb.result_group("del") is None and nb.count_group("del") == 0
    task = nb.fetch(ids[1])
    assert task is not None and task.group is None and task.result == 1
    assert nb.delete_group("del") == 0  # unknown now: still an int


def test_delete_group_with_tasks(nb):
    ids = [nb.async_task("math.floor", i + 0.5, group="delt") for i in range(3)]
    name = nb.fetch(ids[0], wait=-1).name
    nb.result_group("delt", wait=-1)
    n = nb.delete_group("delt", tasks=True)
    assert type(n) is int and n == 3
    assert nb.fetch_group("delt") is None
    assert all(nb.fetch(i) is None for i in ids)
    assert nb.fetch(name) is None
    # the label can be used again, starting empty
    nb.async_task("math.floor", 9.5, group="delt")
    assert nb.result_group("delt", wait=-1) == [9]


def test_delete_group_with_tasks_cancels_queued(nb_loky, tmp_path):
    # needs a pool: inline (sync) tasks would block on `release` before it exists
    nb = nb_loky
    release = tmp_path / "go"
    w = waiter(str(release))
    for i in range(12):
        nb.async_task(w, i, group="delq")
    n = nb.delete_group("delq", tasks=True)
    release.touch()
    assert n == 12
    assert nb.fetch_group("delq") is None and nb.count_group("delq") == 0
    assert api.runner().wait(lambda: not api.runner().pending_ids(), 60)


# ---------------------------------------------------------------- AsyncTask
def test_async_task_builder(nb):
    a = nbgroups.AsyncTask("math.floor", 2.5, group="math", timeout=30)
    assert a.group == "math" and a.timeout == 30 and a.cached is None
    assert a.id is None and a.started is False
    assert a.result() is None and a.fetch() is None
    a.task_name = "floor-task"
    tid = a.run()
    assert tid == a.id and ID.match(tid) and a.started is True
    assert a.result(wait=-1) == 2
    assert a.fetch().name == "floor-task"
    assert a.result_group(wait=-1) == [2]
    assert a.fetch_group()[0].id == tid
    assert a.group_count() == 1 and a.group_count(failures=True) == 0
    assert a.group_delete() == 1
    assert a.result_group() is None


def test_async_task_builder_cached_and_kwargs(nb):
    a = nbgroups.AsyncTask(lambda x, group: (x, group), 1, group="math-c",
                           q_options={"group": "math-c", "cached": True})
    # with q_options, every plain keyword (here `group`) goes to the function (DESIGN §2)
    assert a.kwargs == {"group": "math-c"} and a.cached is True
    a.run()
    assert a.result(wait=-1) == (1, "math-c")
    assert a.result_group(count=1) == [(1, "math-c")]
    assert nb.result_group("math-c") is None  # only in the cache layer


# ---------------------------------------------------------------- Task
def test_task_fields_and_group_helpers(nb):
    t0 = time.time()
    tid = nb.async_task(lambda x: x + 1, 1, group="tf")
    nb.async_task(lambda: 1 / 0, group="tf")
    task = nb.fetch(tid, wait=-1)
    nb.result_group("tf", wait=-1)
    assert task.id == tid and NAME.match(task.name) and "<lambda>" in task.func
    assert task.args == (1,) and task.kwargs == {} and task.result == 2
    assert task.group == "tf" and task.success is True and task.traceback is None
    assert task.attempt_count == 1
    assert t0 - 1 <= task.started <= task.stopped
    assert task.time_taken() == pytest.approx(task.stopped - task.started)
    assert task.group_result() == [2]
    assert len(task.group_result(failures=True)) == 2
    assert task.group_count() == 1 and task.group_count(failures=True) == 1
    assert task.group_delete() == 2
    assert nb.result_group("tf") is None
    assert nb.fetch(tid).group is None and nb.fetch(tid).group_count() == 0


# ---------------------------------------------------------------- TaskList
def test_tasklist_filter_exclude_values_dataframe(nb):
    nb.sweep(lambda x, y: {"score": x / y}, "tl", x=[1, 2], y=[1, 0])
    tasks = nb.fetch_group("tl", wait=-1)
    assert len(tasks) == 4
    ok = tasks.filter(success=True)
    assert isinstance(ok, nbgroups.TaskList) and len(ok) == 2
    assert tasks.exclude(success=False) == ok
    assert len(tasks.exclude(success=True)) == 2
    assert tasks.filter(success=True, kwargs={"x": 2, "y": 1})[0].result == {"score": 2.0}
    vals = ok.values("kwargs", "result")
    assert vals == [{"kwargs": {"x": 1, "y": 1}, "result": {"score": 1.0}},
                    {"kwargs": {"x": 2, "y": 1}, "result": {"score": 2.0}}]
    assert {"id", "name", "result", "success"} <= set(tasks.values()[0])
    df = tasks.to_dataframe()
    assert len(df) == 4
    assert list(df["x"]) == [1, 1, 2, 2] and list(df["y"]) == [1, 0, 1, 0]
    assert list(df["success"]) == [True, False, True, False]
    assert df["score"][0] == 1.0 and df["error"][1].startswith("ZeroDivisionError")


# ---------------------------------------------------------------- cancel / retry / resume
def test_cancel_group(nb, tmp_path):
    release = tmp_path / "go"
    if nb.settings().backend == "sync":
        release.touch()  # inline tasks run at submission: they must not wait
    started = tmp_path / "started"
    started.mkdir()
    w = waiter(str(release), str(started))
    ids = [nb.async_task(w, i, group="cx") for i in range(20)]
    if nb.settings().backend != "sync":
        # A worker has begun a call (sent to the pool is not enough: a batch loky
        # has not handed to a worker yet is taken back by the cancel).
        assert api.runner().wait(lambda: any(started.iterdir()), 60, poll=0.01)
    cancelled = nb.cancel_group("cx")
    release.touch()
    assert type(cancelled) is int
    if nb.settings().backend == "sync":
        assert cancelled == 0  # everything already ran inline
    else:
        assert 1 <= cancelled <= 20 - 1  # at least the first one had started
    tasks = nb.fetch_group("cx", wait=-1)
    assert [t.id for t in tasks] == ids
    states = [t.state for t in tasks]
    assert states.count(nbgroups.State.CANCELLED) == cancelled
    assert all(t.success is None for t in tasks if t.state is nbgroups.State.CANCELLED)
    assert nb.count_group("cx") == 20 - cancelled
    assert nb.count_group("cx", failures=True) == 0
    assert nb.result_group("cx") == [t.args[0] for t in tasks if t.success]
    assert nb.cancel_group("cx") == 0


def test_retry_group(nb, tmp_path):
    flag = tmp_path / "fixed"

    def flaky(x):
        if not os.path.exists(flag):
            raise RuntimeError("not yet")
        return x

    for i in range(4):
        nb.async_task(flaky if i % 2 else abs, i, group="rt")
    assert nb.result_group("rt", wait=-1) == [0, 2]
    assert nb.count_group("rt", failures=True) == 2
    flag.touch()
    assert nb.retry_group("rt") == 2
    assert nb.result_group("rt", wait=-1) == [0, 1, 2, 3]
    assert nb.count_group("rt") == 4 and nb.count_group("rt", failures=True) == 0
    assert nb.retry_group("rt") == 0


def test_resume_group_after_restart(nb, tmp_path, store_dir):
    backend = nb.settings().backend
    release = tmp_path / "go"
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="loky", workers=2, progress=False)
    w = waiter(str(release))
    ids = [nbgroups.async_task(w, i, group="rs") for i in range(6)]
    api.runner().flush()  # the tasks are in the store before anything finished
    api.reset()  # the "kernel" stops: workers killed, nothing finished
    nbgroups.configure(store=str(store_dir), backend=backend, workers=2, progress=False)
    tasks = nbgroups.fetch_group("rs")
    assert [t.id for t in tasks] == ids and all(t.success is None for t in tasks)
    assert nbgroups.result_group("rs") == []
    if backend == "sync":
        release.touch()  # inline: resume_group runs the tasks before it returns
    assert nbgroups.resume_group("rs") == 6
    # loky: held by the release file, every task is still queued or running here;
    # sync: every task finished. Either way a second resume runs nothing (6 would
    # mean each ran twice).
    assert nbgroups.resume_group("rs") == 0
    release.touch()
    assert nbgroups.result_group("rs", wait=-1) == list(range(6))
    assert nbgroups.count_group("rs") == 6
    assert nbgroups.resume_group("rs") == 0


# ---------------------------------------------------------------- configure
def test_configure_returns_settings_and_rejects_unknown_keys(nb, store_dir):
    s = nb.configure(retries=2, timeout=30)
    assert s.retries == 2 and s.timeout == 30 and nb.settings() is s
    assert s.store == str(store_dir)
    with pytest.raises(TypeError, match="colour"):
        nb.configure(colour="red")
    # a misspelt setting names the one meant, as a misspelt option of async_task does
    with pytest.raises(TypeError, match=r"\['worker'\] \(did you mean workers=\?\)"):
        nb.configure(worker=3)
    assert nb.settings() is s


def _double(x):
    return 2 * x


def test_a_relative_store_stays_where_it_was_opened_after_chdir(nb, tmp_path, monkeypatch):
    # The default store is '.nbgroups'. A notebook that did os.chdir('sub'), then
    # configure(workers=1), got a new runner on sub/.nbgroups: list_groups() was
    # empty and result_group() None, as if every result were lost.
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    s = nb.configure(store=".rel-store")
    assert s.store == str(tmp_path / ".rel-store")
    nb.sweep(_double, "before", x=[1, 2])
    assert nb.result_group("before", wait=-1) == [2, 4]
    monkeypatch.chdir(tmp_path / "sub")
    nb.configure(workers=1)
    assert nb.list_groups() == ["before"] and nb.result_group("before") == [2, 4]
    assert not (tmp_path / "sub" / ".rel-store").exists()
    nb.configure(store=".rel-store")  # named again, here: that one is a new store
    assert nb.settings().store == str(tmp_path / "sub" / ".rel-store")
    assert nb.list_groups() == []


def _read(path):
    with open(path) as f:
        return f.read()


def test_tasks_run_in_the_kernels_working_directory(nb_loky, tmp_path, monkeypatch):
    # The pool's workers kept the directory they started in: after a notebook's
    # os.chdir('sub'), a task's open('data.txt') failed with FileNotFoundError.
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "data.txt").write_text("from sub")
    monkeypatch.chdir(tmp_path)
    assert nb_loky.result(nb_loky.async_task(os.getcwd), wait=-1) == str(tmp_path)
    monkeypatch.chdir(sub)
    assert nb_loky.result(nb_loky.async_task(os.getcwd), wait=-1) == str(sub)
    assert nb_loky.result_group(nb_loky.sweep(_read, "rel", path=["data.txt"]),
                                wait=-1) == ["from sub"]


def test_configure_from_environment(monkeypatch, tmp_path):
    api.reset()
    monkeypatch.setenv("NBGROUPS_STORE", str(tmp_path / "envstore"))
    monkeypatch.setenv("NBGROUPS_WORKERS", "3")
    monkeypatch.setenv("NBGROUPS_BACKEND", "sync")
    monkeypatch.setenv("NBGROUPS_PROGRESS", "off")
    monkeypatch.setenv("NBGROUPS_TIMEOUT", "12.5")
    monkeypatch.setenv("NBGROUPS_RETRIES", "4")
    monkeypatch.setenv("NBGROUPS_CACHED", "true")
    try:
        s = nbgroups.settings()
        assert (s.store, s.workers, s.backend, s.progress, s.timeout, s.retries, s.cached) == (
            str(tmp_path / "envstore"), 3, "sync", False, 12.5, 4, True)
        tid = nbgroups.async_task("math.floor", 1.5, group="env")
        assert nbgroups.result(tid, cached=True) == 1  # cached=True was the default
        assert (tmp_path / "envstore").is_dir()
    finally:
        api.reset()
    monkeypatch.setenv("NBGROUPS_WORKERS", "many")
    try:
        with pytest.raises(nbgroups.ConfigurationError, match="NBGROUPS_WORKERS"):
            nbgroups.settings()
    finally:
        api.reset()


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("ttl", [True, 60])
def test_cached_layer_keeps_no_durable_record(nb, ttl):
    ids = [nb.async_task("math.floor", i + 0.5, group="cg", cached=ttl) for i in range(3)]
    assert nb.result_group("cg", cached=ttl, count=3) == [0, 1, 2]
    assert nb.count_group("cg", cached=ttl) == 3
    assert nb.fetch_group("cg", cached=ttl)[0].id == ids[0]
    assert nb.result_group("cg") is None and nb.fetch(ids[0]) is None
    assert nb.delete_group("cg", cached=ttl) == 3
    assert nb.result_group("cg", cached=ttl) is None


def test_cached_ttl_expires_entries_and_membership(nb, fake_clock):
    nb.api.runner().store_for(1).clock = fake_clock  # the cache layer's clock: no sleeping
    ids = [nb.async_task("math.floor", i + 0.5, group="ttl", cached=1) for i in range(3)]
    assert nb.result_group("ttl", cached=1, count=3) == [0, 1, 2]
    name = nb.fetch(ids[0], cached=1).name
    fake_clock.advance(0.9)
    assert nb.result(ids[0], cached=1) == 0  # not yet expired
    fake_clock.advance(0.2)
    assert nb.result(ids[0], cached=1) is None and nb.fetch(name, cached=1) is None
    assert nb.result_group("ttl", cached=1) is None
    assert nb.fetch_group("ttl", cached=1) is None
    assert nb.count_group("ttl", cached=1) == 0


def test_save_false(nb):
    seen = []
    tid = nb.async_task(lambda: "big", group="nosave", save=False, hook=seen.append)
    task = nb.fetch(tid, wait=-1)
    assert task.success is True and task.result is None
    assert nb.count_group("nosave") == 1
    assert api.runner().wait(lambda: bool(seen), 30)
    assert seen[0].result == "big"  # the hook still sees it


def test_hook_called_in_this_process_with_the_finished_task(nb):
    calls = []

    def hook(task):
        calls.append((os.getpid(), threading.current_thread().name, task))

    tid = nb.async_task(lambda: 1 / 0, group="hk", hook=hook)
    ok = nb.async_task("math.floor", 3.5, group="hk", hook=hook)
    nb.result_group("hk", wait=-1)
    assert api.runner().wait(lambda: len(calls) == 2, 30)
    by_id = {c[2].id: c for c in calls}
    assert {c[0] for c in calls} == {os.getpid()}
    assert by_id[tid][2].success is False and isinstance(by_id[tid][2].result, ZeroDivisionError)
    assert by_id[ok][2].result == 3 and by_id[ok][2].group == "hk"
    assert isinstance(by_id[ok][2], nbgroups.Task)
    assert by_id[ok][2].group_count() == 1


def test_hook_as_dotted_path(nb, tmp_path):
    tid = nb.async_task("math.floor", 3.5, hook="tests.test_api._record_hook")
    nb.result(tid, wait=-1)
    assert api.runner().wait(lambda: tid in _HOOKED, 30)


_HOOKED: set = set()


def _record_hook(task):
    _HOOKED.add(task.id)


def test_task_name_newest_wins(nb):
    a = nb.async_task("math.floor", 1.5, task_name="shared")
    nb.result(a, wait=-1)
    b = nb.async_task("math.floor", 2.5, task_name="shared")
    nb.result(b, wait=-1)
    assert nb.fetch("shared").id == b
    assert nb.result("shared") == 2
    assert nb.fetch(a).name == "shared"


def test_sync_option_propagates_exception_and_stores(nb):
    def boom():
        raise ValueError("bad thing")

    with pytest.raises(ValueError, match="bad thing"):
        nb.async_task(boom, group="sy", sync=True)
    assert nb.count_group("sy", failures=True) == 1
    task = nb.fetch_group("sy")[0]
    assert task.success is False and "bad thing" in task.traceback
    tid = nb.async_task("math.floor", 4.5, group="sy", sync=True)
    assert nb.result(tid) == 4  # done before async_task returned


def test_retries_option_attempt_count(nb, tmp_path):
    counter = tmp_path / "n"

    def flaky():
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        if n < 2:
            raise RuntimeError(f"attempt {n + 1}")
        return n + 1

    tid = nb.async_task(flaky, retries=3)
    assert nb.result(tid, wait=-1) == 3
    assert nb.fetch(tid).attempt_count == 3
    tid = nb.async_task(lambda: 1 / 0, retries=2)
    assert nb.fetch(tid, wait=-1).attempt_count == 3


def test_default_group_context(nb):
    with api.default_group("ctx"):
        nb.async_task("math.floor", 1.5)
        nb.async_task("math.floor", 2.5, group="other")
    nb.async_task("math.floor", 3.5)
    assert nb.result_group("ctx", wait=-1) == [1]
    assert nb.result_group("other", wait=-1) == [2]
