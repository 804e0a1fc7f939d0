"""Large arguments stored once by content digest and memory-mapped by the workers
(issue 18), on every backend: a real loky pool, threads, inline, and a real Dask
LocalCluster; a real diskcache store in a temp dir; other processes on the same
store; a real Jupyter kernel passing a DataFrame to many calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xxhash

import nbgroups
from nbgroups import api, snapshot, values
from nbgroups.config import Settings
from nbgroups.errors import ArgumentTypeError, ConfigurationError, ValueMissing

BACKENDS = ["loky", "thread", "sync", "dask"]
REPO = Path(__file__).resolve().parents[1]
SMALL = 4096  # large_value in these tests: the arrays below (16 KiB+) are stored


def total(a, i=0):
    """A result that depends on every byte of the argument, and on i."""
    return float(np.asarray(a).sum()) + i


def len_of_values(d):
    return sum(map(len, d.values()))


def frame_total(df, i=0):
    return float(df["x"].sum() + df["y"].sum()) + i


def keyword_total(*, a, i):
    return total(a, i)


def writable(a):
    return bool(a.flags.writeable)


def scribble(a):
    a[0] = 99.0  # read-only when stored: raises, as joblib's memmapped inputs do
    return float(a[0])


def scribble_copy(a):
    a = np.array(a)  # the documented way: an own, writable copy
    a[0] = 99.0
    return float(a.sum())


def value_files(store_dir) -> list[str]:
    return values.ValueFiles(Path(store_dir) / "values").digests()


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "dask":
        pytest.importorskip("distributed")
        lc, client = request.getfixturevalue("dask_cluster")
        client.wait_for_workers(2, timeout=60)
        return {"backend": "dask", "address": lc.scheduler_address}
    return {"backend": request.param}


def _run_all(store, settings):
    """Every kind of argument a value reaches a call through; their results."""
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False, **settings)
    arrays = [np.arange(3000, dtype=float) * k for k in range(3)]
    df = pd.DataFrame({"x": np.arange(5000, dtype=float), "y": np.ones(5000)})
    for i, a in enumerate(arrays):
        nbgroups.async_task(total, a, i, group="pos")
        nbgroups.async_task(keyword_total, a=a, i=i, group="kw")
        nbgroups.async_task(frame_total, df, i, group="df")
    nbgroups.sweep(total, "sweep", a=arrays, i=[0, 1])
    tid = nbgroups.async_iter(total, [(a, i) for i, a in enumerate(arrays)] + [arrays[1]],
                              group="iter")
    # no large buffer, a large pickle: a list, a dict of strings, a non-contiguous array
    floats = [float(i) for i in range(2000)]
    words = {str(i): f"word {i} " * 3 for i in range(500)}
    strided = np.arange(6000, dtype=float)[::2]
    for i in range(2):
        nbgroups.async_task(sum, floats, i, group="plain")
        nbgroups.async_task(len_of_values, words, group="plain")
        nbgroups.async_task(total, strided, i, group="plain")
    out = {g: nbgroups.result_group(g, wait=-1) for g in ("pos", "kw", "df", "sweep", "plain")}
    out["iter"] = nbgroups.result(tid, wait=-1)
    for g in ("pos", "kw", "df", "sweep", "iter", "plain"):
        assert nbgroups.count_group(g, failures=True) == 0, nbgroups.fetch_group(g)
    api.reset()
    return out


def test_same_results_under_and_over_the_threshold(tmp_path, backend):
    under = _run_all(tmp_path / "under", {**backend, "large_value": None})
    over = _run_all(tmp_path / "over", {**backend, "large_value": SMALL})
    assert over == under
    assert not value_files(tmp_path / "under")
    # three arrays, the frame's two float columns (one block), and the pickles of
    # the list, the dict and the non-contiguous array: each stored once
    assert len(value_files(tmp_path / "over")) == 7


def test_a_value_mutated_after_submission_is_seen_as_submitted(tmp_path, backend):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL,
                       **backend)
    buf = np.zeros(10_000)
    ids = []
    for i in range(6):
        buf[:] = i
        ids.append(nbgroups.async_task(total, buf, group="mut"))
    buf[:] = -1
    assert nbgroups.result_group("mut", wait=-1) == [10_000.0 * i for i in range(6)]
    assert len(value_files(tmp_path)) == 6
    (arg,) = nbgroups.fetch(ids[2]).args  # the record gives the value, as submitted
    assert isinstance(arg, np.ndarray) and arg[0] == 2 and not arg.flags.writeable
    api.reset()


def test_stored_arrays_arrive_read_only_and_a_copy_is_writable(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.ones(10_000)
    assert nbgroups.result(nbgroups.async_task(writable, a), wait=-1) is False
    assert nbgroups.result(nbgroups.async_task(writable, a[:10]), wait=-1) is True  # small
    failed = nbgroups.fetch(nbgroups.async_task(scribble, a), wait=-1)
    assert failed.success is False and "read-only" in str(failed.result)
    assert nbgroups.result(nbgroups.async_task(scribble_copy, a), wait=-1) == 10_098.0
    api.reset()


def test_a_value_passed_again_is_stored_once_and_the_kernel_keeps_no_copy(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.arange(20_000, dtype=float)
    r = api.runner()
    taken = [r.take([((a, i), None)], r_options()) for i in range(3)]
    stored = [t[0][0][0] for t in taken]
    assert all(type(s) is values.Stored for s in stored)
    assert len({s.refs for s in stored}) == 1 and stored[0].nbytes == a.nbytes
    assert len(stored[0].skeleton) < 1000  # the runner holds no copy of the data
    assert "ndarray float64 (20000,)" in repr(stored[0])
    assert len(value_files(tmp_path)) == 1
    api.reset()


def r_options():
    from nbgroups.jobs import Options

    return Options()


def test_a_stored_value_removed_by_hand_fails_only_the_tasks_that_take_it(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a, b = np.random.default_rng().random(10_000), np.full(10_000, 2.0)  # a: new content
    with api.runner().flushes_held():  # stored, not yet sent: the file goes first
        ta = nbgroups.async_task(total, a, group="gone")
        tb = nbgroups.async_task(total, b, group="gone")
        path = tmp_path / "values" / xxhash.xxh3_128_hexdigest(memoryview(a).cast("B"))
        path.unlink()
    nbgroups.result_group("gone", count=2, wait=-1)
    failed, ok = nbgroups.fetch(ta), nbgroups.fetch(tb)
    assert ok.success and ok.result == 20_000.0
    assert failed.success is False and isinstance(failed.result, ValueMissing)
    assert str(path) in str(failed.result) and "ndarray float64 (10000,)" in str(failed.result)
    # reading the record does not fail: its argument shows what was stored
    assert "stored ndarray float64 (10000,)" in repr(failed.args)
    assert "(10000,)" in repr(nbgroups.fetch_group("gone").to_dataframe())
    api.reset()


def test_reuse_keys_a_stored_value_by_its_digest(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.arange(10_000, dtype=float)
    plain = [nbgroups.async_task(total, a, i, group="re") for i in range(3)]  # no reuse
    nbgroups.result_group("re", wait=-1)
    again = [nbgroups.async_task(total, a, i, group="re", reuse=True) for i in range(3)]
    assert again == plain  # keyed from the stored pages: the same calls
    a[0] = 1.0  # a new content: a new call
    new = nbgroups.async_task(total, a, 0, group="re", reuse=True)
    assert new not in plain
    assert nbgroups.result(new, wait=-1) == total(a)
    assert len(value_files(tmp_path)) == 2
    api.reset()


SUBMIT = """
import sys, numpy as np, nbgroups
from nbgroups import api
from tests.test_values import total
nbgroups.configure(store={store!r}, workers=2, progress=False, large_value=4096)
a = np.arange(30_000, dtype=float)
group = sys.argv[1]
for i in range(4):
    nbgroups.async_task(total, a, i, group=group)
print(nbgroups.result_group(group, wait=-1))
"""


def test_two_processes_share_one_store_and_its_values(tmp_path):
    code = SUBMIT.format(store=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, g], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for g in "ab"]
    outs = [p.communicate(timeout=120) for p in procs]
    expected = [total(np.arange(30_000, dtype=float), i) for i in range(4)]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert eval(out.strip()) == expected
    assert len(value_files(tmp_path)) == 1  # the same value: one file for both
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False)
    assert nbgroups.result_group("a") == nbgroups.result_group("b") == expected
    api.reset()


FIRST_RUN = """
import os, sys, numpy as np, nbgroups
from tests.test_values import total_once_ready
nbgroups.configure(store={store!r}, workers=2, progress=False, large_value=4096)
a = np.arange(30_000, dtype=float)
ids = [nbgroups.async_task(total_once_ready, a, i, {flag!r}, group="later") for i in range(3)]
nbgroups.result_group("later", wait=-1)
"""


def total_once_ready(a, i, flag):
    if not os.path.exists(flag):
        raise RuntimeError("not ready")
    return total(a, i)


def test_a_new_process_retries_with_the_stored_value(tmp_path):
    """A kernel restart: the next process re-runs the failed calls, and finds
    their stored values in the store (the first process is gone)."""
    flag = tmp_path / "ready"
    store = tmp_path / "store"
    code = FIRST_RUN.format(store=str(store), flag=str(flag))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False, large_value=4096)
    assert nbgroups.count_group("later", failures=True) == 3
    flag.touch()
    assert nbgroups.retry_group("later") == 3
    a = np.arange(30_000, dtype=float)
    assert nbgroups.result_group("later", wait=-1) == [total(a, i) for i in range(3)], \
        nbgroups.fetch_group("later")[0].traceback
    task = nbgroups.fetch_group("later")[0]
    assert np.array_equal(task.args[0], a)
    api.reset()


def test_debug_runs_the_call_with_the_stored_value(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.arange(10_000, dtype=float)
    tid = nbgroups.async_task(total, a, 5)
    nbgroups.result(tid, wait=-1)
    assert nbgroups.debug(tid) == total(a, 5)
    api.reset()


def test_large_value_setting_is_checked():
    assert Settings().large_value == 1 << 20
    assert Settings(large_value=None).large_value is None
    with pytest.raises(ArgumentTypeError, match="large_value must be a number of bytes"):
        Settings(large_value="1MB")
    with pytest.raises(ConfigurationError, match="large_value must be a number of bytes >= 1024"):
        Settings(large_value=10)
    from nbgroups.config import from_environment

    assert from_environment({"NBGROUPS_LARGE_VALUE": "none"}).large_value is None
    assert from_environment({"NBGROUPS_LARGE_VALUE": "4096"}).large_value == 4096


def test_snapshot_without_a_writer_copies_as_before():
    a = np.arange(10_000, dtype=float)
    (args, _), = snapshot.take([((a,), None)])
    assert type(args[0]) is np.ndarray and args[0] is not a


def test_dataframe_to_many_calls_in_a_real_kernel(tmp_path):
    from tests.kernels import kernel

    with kernel(tmp_path) as k:
        out = k.run(textwrap.dedent(f"""
            import numpy as np, pandas as pd, nbgroups, os
            nbgroups.configure(store={str(tmp_path / 'store')!r}, workers=2, progress=False)
            df = pd.DataFrame({{"x": np.arange(400_000, dtype=float),
                               "y": np.ones(400_000)}})  # 6.4 MB
            def f(df, i):
                return float(df["x"].iloc[i] + df["y"].sum())
            for i in range(50):
                nbgroups.async_task(f, df, i, group="frames")
            df["x"] = -1.0  # after submission: not seen by the calls
            out = nbgroups.result_group("frames", wait=-1)
            print(out == [float(i + 400_000) for i in range(50)],
                  len(os.listdir({str(tmp_path / 'store' / 'values')!r})))
        """), timeout=120)
    assert out.split() == ["True", "1"]


# ---------------------------------------------------------------- large results, mapped
def big_result(i):
    return {"a": np.full(300_000, float(i)), "i": i}  # 2.4 MB: framed, in its own file


def test_large_results_read_back_memory_mapped(tmp_path, backend):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, **backend)
    ids = [nbgroups.async_task(big_result, i, group="res") for i in range(3)]
    read = nbgroups.result_group("res", wait=-1)
    mapped = nbgroups.result_group("res", mmap=True)
    for i, (r, m) in enumerate(zip(read, mapped, strict=True)):
        assert r["i"] == m["i"] == i
        assert np.array_equal(r["a"], m["a"]) and m["a"][0] == i
        assert r["a"].flags.writeable and not m["a"].flags.writeable  # a map of the file
    assert not nbgroups.result(ids[1], mmap=True)["a"].flags.writeable
    assert nbgroups.result(ids[1])["a"].flags.writeable
    records = nbgroups.fetch_group("res", mmap=True)
    assert [t.result["i"] for t in records] == [0, 1, 2]
    assert not records[2].result["a"].flags.writeable
    with pytest.raises(ArgumentTypeError, match="mmap"):
        nbgroups.result_group("res", mmap="yes")
    api.reset()


def test_a_tampered_framed_result_head_is_refused(tmp_path):
    from nbgroups.errors import SignatureError

    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, backend="thread")
    tid = nbgroups.async_task(big_result, 7, group="tamper")
    assert nbgroups.result(tid, wait=-1)["i"] == 7
    files = [p for p in (tmp_path).rglob("*.val")]
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    at = data.index(b"NBGFRAM1") + 40  # inside the pickle (the head): signed
    data[at] ^= 0xFF
    files[0].write_bytes(bytes(data))
    for mmap in (False, True):
        with pytest.raises(SignatureError):
            nbgroups.result(tid, mmap=mmap)
    api.reset()


def test_the_awaitable_reads_map_too(tmp_path):
    import asyncio

    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False)
    tid = nbgroups.async_task(big_result, 4, group="aio")
    got = asyncio.run(nbgroups.aresult(tid, wait=-1, mmap=True))
    assert got["i"] == 4 and not got["a"].flags.writeable
    (mapped,) = asyncio.run(nbgroups.aresult_group("aio", wait=-1, mmap=True))
    assert not mapped["a"].flags.writeable
    (task,) = asyncio.run(nbgroups.afetch_group("aio", mmap=True))
    assert not task.result["a"].flags.writeable
    assert asyncio.run(nbgroups.afetch(tid, mmap=True)).result["i"] == 4
    api.reset()


# ---------------------------------------------------------------- collection
def test_delete_group_with_tasks_removes_the_values_no_task_takes(tmp_path, monkeypatch):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    shared, own = np.arange(10_000, dtype=float), np.ones(20_000)
    nbgroups.async_task(total, shared, group="keep")
    nbgroups.async_task(total, shared, group="drop")
    nbgroups.async_task(total, own, group="drop")
    nbgroups.result_group("keep", wait=-1), nbgroups.result_group("drop", wait=-1)
    assert len(value_files(tmp_path)) == 2
    # passed within the last minute: a page may still be on its way somewhere
    assert nbgroups.delete_group("drop", tasks=True) == 2
    assert len(value_files(tmp_path)) == 2
    monkeypatch.setattr(values, "GRACE_SECONDS", 0.0)  # the minute has passed
    nbgroups.delete_group("drop", tasks=True)
    (left,) = value_files(tmp_path)  # the shared one: "keep" still takes it
    assert left == xxhash.xxh3_128_hexdigest(memoryview(shared).cast("B"))
    assert nbgroups.result_group("keep") == [total(shared)]
    nbgroups.delete_group("keep", tasks=False)  # the label only: its tasks stay
    assert len(value_files(tmp_path)) == 1
    assert nbgroups.fetch_group("keep") is None
    api.reset()


def total_when(a, flag):
    while not os.path.exists(flag):
        time.sleep(0.01)
    return total(a)


def test_collection_spares_what_running_tasks_and_other_processes_take(tmp_path, fake_clock):
    """Two kernels on one store: what the other's pages take stays; what this
    process's running task takes stays even though its group was deleted."""
    from nbgroups.store import DiskStore

    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    code = SUBMIT.format(store=str(tmp_path))  # another process: arange(30_000), kept
    done = subprocess.run([sys.executable, "-c", code, "other"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    running, finished = np.arange(10_000, dtype=float), np.arange(12_000, dtype=float)
    flag = tmp_path / "go"
    slow = nbgroups.async_task(total_when, running, str(flag), group="slow")
    nbgroups.result(nbgroups.async_task(total, finished, group="done"), wait=-1)
    r = api.runner()
    r.wait(lambda: slow in r.running_ids(), 60)
    assert nbgroups.delete_group("done", tasks=True) == 1
    assert nbgroups.delete_group("slow", tasks=True) == 1  # running: not cancelled
    store = DiskStore(tmp_path, clock=fake_clock)
    fake_clock.advance(3600)  # every file is old now
    digest = {n: xxhash.xxh3_128_hexdigest(memoryview(x).cast("B"))
              for n, x in (("running", running), ("finished", finished))}
    assert store.collect_values(keep=r.values_held()) == [digest["finished"]]
    assert len(store.values.digests()) == 2  # the other process's, and the running one's
    flag.touch()
    r.wait(lambda: not r.pending(slow), 60)
    assert store.collect_values(keep=r.values_held()) == [digest["running"]]
    (other,) = store.values.digests()
    assert other == xxhash.xxh3_128_hexdigest(memoryview(np.arange(30_000, dtype=float)).cast("B"))
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False)
    assert nbgroups.result_group("other") == [total(np.arange(30_000, dtype=float), i)
                                              for i in range(4)]
    api.reset()


def _scattered(dask_scheduler):
    return sorted(str(k) for k, ts in dask_scheduler.tasks.items()
                  if str(k).startswith("bytes-") and ts.state == "memory")


def test_dask_scatters_each_stored_value_once(tmp_path, request):
    pytest.importorskip("distributed")
    lc, client = request.getfixturevalue("dask_cluster")
    client.wait_for_workers(2, timeout=60)
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, backend="dask",
                       address=lc.scheduler_address, large_value=SMALL)
    before = client.run_on_scheduler(_scattered)
    a = np.random.default_rng().random(50_000)
    for i in range(12):
        nbgroups.async_task(total, a, i, group="dask-once")
    nbgroups.sweep(total, "dask-once-sweep", a=[a], i=list(range(12)))
    expected = [total(a, i) for i in range(12)]
    assert nbgroups.result_group("dask-once", wait=-1) == expected
    assert nbgroups.result_group("dask-once-sweep", wait=-1) == expected
    sent = [k for k in client.run_on_scheduler(_scattered) if k not in before]
    assert len(sent) == 1  # one value, sent once, used by 24 calls in many batches
    api.reset()


def gated_total(a, i, gate):
    while not os.path.exists(gate):
        time.sleep(0.01)
    return total(a, i)


def test_tasks_moved_to_another_store_take_their_values_along(tmp_path):
    """The store's database goes away while tasks wait (its directory, with the
    values, stays); another store is configured: the tasks held move there
    with their stored values, and run."""
    first, gate = tmp_path / "first", tmp_path / "gate"
    api.reset()
    nbgroups.configure(store=str(first), workers=2, progress=False, large_value=SMALL)
    a = np.arange(10_000, dtype=float)
    try:
        for i in range(6):
            nbgroups.async_task(gated_total, a, i, str(gate), group="moved")
        assert api.runner().wait(lambda: nbgroups.group_counts("moved").running >= 2, 60)
        for name in os.listdir(first):
            if name.startswith("cache.db"):
                os.unlink(first / name)  # the database, not the values
        gate.touch()
        with pytest.raises(nbgroups.StoreError):
            nbgroups.result_group("moved", wait=30_000)
        nbgroups.configure(store=str(tmp_path / "second"))
        assert nbgroups.result_group("moved", wait=60_000) == [total(a, i) for i in range(6)]
        assert len(value_files(tmp_path / "second")) == 1
    finally:
        api.reset()


KILLED = """
import os, numpy as np, nbgroups
from nbgroups import api
from tests.test_values import gated_total
nbgroups.configure(store={store!r}, workers=2, progress=False, large_value=4096)
a = np.arange(30_000, dtype=float)
for i in range(5):
    nbgroups.async_task(gated_total, a, i, {gate!r}, group="left")
r = api.runner()
r.wait(lambda: len(r.running_ids()) >= 2, 60)
os._exit(0)  # the kernel dies with every task unfinished
"""


def test_resume_after_the_kernel_died_finds_the_stored_value(tmp_path):
    store, gate = tmp_path / "store", tmp_path / "gate"
    log = tmp_path / "stderr"
    with open(log, "w") as err:  # not a pipe: loky's helper processes outlive the kernel
        done = subprocess.run([sys.executable, "-c",
                               KILLED.format(store=str(store), gate=str(gate))],
                              stdout=subprocess.DEVNULL, stderr=err, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, log.read_text()
    gate.touch()
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        assert nbgroups.count_group("left") == 0
        assert nbgroups.resume_group("left") == 5
        a = np.arange(30_000, dtype=float)
        assert nbgroups.result_group("left", wait=60_000) == [total(a, i) for i in range(5)]
    finally:
        api.reset()


def test_a_store_that_cannot_take_a_value_keeps_a_copy_instead(tmp_path):
    """The value directory cannot be written (as on a full disk): the call keeps
    a copy in memory, as before, and runs."""
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    (tmp_path / "values").write_text("not a directory")  # writing a value fails (OSError)
    try:
        a = np.arange(10_000, dtype=float)
        tid = nbgroups.async_task(total, a, 1)
        a[:] = 0  # after the call: still not seen
        assert nbgroups.result(tid, wait=-1) == total(np.arange(10_000, dtype=float), 1)
    finally:
        api.reset()


# ---------------------------------------------------------------- captured by a function
def notebook_function(source: str, name: str, **globals_):
    """A function defined as in a notebook cell: its module is not importable, so
    cloudpickle pickles it by value, with the globals it reads and its closure."""
    namespace = {"__name__": "notebook_cell", **globals_}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


CAPTURING = """
    def make(c):
        def closure(i):  # c: a closure cell; a, items: globals of the cell
            return float(np.asarray(a).sum()) + float(c.sum()) + sum(items) + i
        return closure
    def via_global(i):
        return float(a[::2].sum()) + i
"""


def _run_captured(store, settings):
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False, **settings)
    a = np.arange(20_000, dtype=float)
    ns = {"np": np, "a": a, "items": [float(i) for i in range(3000)]}
    make = notebook_function(CAPTURING, "make", **ns)
    via_global = notebook_function(CAPTURING, "via_global", **ns)
    closure = make(np.full(6000, 2.0)[::2])  # a non-contiguous array: pickled in band
    ids = [nbgroups.async_task(closure, i, group="cap") for i in range(4)]
    nbgroups.sweep(via_global, "cap-sweep", i=[0, 1, 2])
    tid = nbgroups.async_iter(via_global, [5, 6], group="cap-iter")
    a[:] = -1  # after submission: not seen by the calls
    out = [nbgroups.result_group(g, wait=-1) for g in ("cap", "cap-sweep")]
    out.append(nbgroups.result(tid, wait=-1))
    for g in ("cap", "cap-sweep", "cap-iter"):
        assert nbgroups.count_group(g, failures=True) == 0, nbgroups.fetch_group(g)[0].traceback
    assert nbgroups.debug(ids[1]) == out[0][1]  # here, from the store
    api.reset()
    return out


def test_captured_values_same_results_under_and_over_the_threshold(tmp_path, backend):
    under = _run_captured(tmp_path / "under", {**backend, "large_value": None})
    over = _run_captured(tmp_path / "over", {**backend, "large_value": SMALL})
    a = np.arange(20_000, dtype=float)
    expected_closure = [float(a.sum()) + 6000.0 + sum(range(3000)) + i for i in range(4)]
    assert under == over == [expected_closure, [float(a[::2].sum()) + i for i in range(3)],
                             [float(a[::2].sum()) + i for i in (5, 6)]]
    assert not value_files(tmp_path / "under")
    # a (raw buffer), the non-contiguous closure cell and the list (both pickles)
    assert len(value_files(tmp_path / "over")) == 3


def captured_pages_bytes(store) -> int:
    """Bytes of the store's database and entries, its value files left out."""
    return sum(p.stat().st_size for p in Path(store).rglob("*")
               if p.is_file() and "values" not in p.parts)


def test_a_captured_value_is_stored_once_for_every_page(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.random.default_rng().random(200_000)  # 1.6 MB
    f = notebook_function("def f(i):\n    return float(a.sum()) + i\n", "f", a=a)
    r = api.runner()
    for i in range(6):  # a page each: the callable is pickled once per page
        nbgroups.async_task(f, i, group="pages")
        r.flush()
    assert nbgroups.result_group("pages", wait=-1) == [float(a.sum()) + i for i in range(6)]
    (digest,) = value_files(tmp_path)
    assert digest == xxhash.xxh3_128_hexdigest(memoryview(a).cast("B"))
    assert captured_pages_bytes(tmp_path) < a.nbytes  # six pages, without a copy each
    entries = api.runner().store.group_entries("pages")
    pages = {page.prefix: page for page, _, _ in entries}
    assert len(pages) == 6  # the callable pickled again for each page, the array not
    for _name, blob, (stored,) in (page.funcs[0] for page in pages.values()):
        assert len(blob) < 10_000 and stored.refs == ((digest, a.nbytes),)
    api.reset()


def test_a_captured_value_is_kept_while_a_stored_task_takes_it(tmp_path, monkeypatch):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.arange(10_000, dtype=float)
    f = notebook_function("def f(i):\n    return float(a.sum()) + i\n", "f", a=a)
    nbgroups.async_task(f, 1, group="keep")
    nbgroups.async_task(f, 2, group="drop")
    nbgroups.result_group("keep", wait=-1), nbgroups.result_group("drop", wait=-1)
    monkeypatch.setattr(values, "GRACE_SECONDS", 0.0)
    nbgroups.delete_group("drop", tasks=True)
    assert len(value_files(tmp_path)) == 1  # "keep" still takes it
    nbgroups.delete_group("keep", tasks=True)
    assert value_files(tmp_path) == []
    api.reset()


CAPTURED_FIRST_RUN = """
import os, numpy as np, nbgroups
nbgroups.configure(store={store!r}, workers=2, progress=False, large_value=4096)
a = np.arange(30_000, dtype=float)
def f(i):  # __main__: pickled by value, with the global a
    if not os.path.exists({flag!r}):
        raise RuntimeError("not ready")
    return float(a.sum()) + i
for i in range(3):
    nbgroups.async_task(f, i, group="later")
nbgroups.result_group("later", wait=-1)
"""


def test_a_new_process_retries_a_function_with_its_captured_value(tmp_path):
    flag, store = tmp_path / "ready", tmp_path / "store"
    done = subprocess.run([sys.executable, "-c",
                           CAPTURED_FIRST_RUN.format(store=str(store), flag=str(flag))],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert len(value_files(store)) == 1
    api.reset()
    nbgroups.configure(store=str(store), workers=2, progress=False)
    try:
        assert nbgroups.count_group("later", failures=True) == 3
        flag.touch()
        assert nbgroups.retry_group("later") == 3
        total_a = float(np.arange(30_000, dtype=float).sum())
        assert nbgroups.result_group("later", wait=-1) == [total_a + i for i in range(3)]
    finally:
        api.reset()


def test_a_global_dataframe_captured_in_a_real_kernel(tmp_path):
    """A notebook cell's function reads a global DataFrame: 50 calls, the frame
    stored once (not with each page and batch); a notebook class holding an
    array, passed as an argument, is rebuilt in the workers (pickled by value)."""
    from tests.kernels import kernel

    store = tmp_path / "store"
    with kernel(tmp_path) as k:
        out = k.run(textwrap.dedent(f"""
            import numpy as np, pandas as pd, nbgroups, os
            nbgroups.configure(store={str(store)!r}, workers=2, progress=False)
            df = pd.DataFrame({{"x": np.arange(400_000, dtype=float),
                               "y": np.ones(400_000)}})  # 6.4 MB
            def f(i):
                return float(df["x"].iloc[i] + df["y"].sum())
            for i in range(50):
                nbgroups.async_task(f, i, group="frames")
            df["x"] = -1.0  # after submission: not seen by the calls
            out = nbgroups.result_group("frames", wait=-1)
            class Box:
                def __init__(self, a):
                    self.a = a
            def unbox(b):
                return float(b.a.sum())
            boxed = nbgroups.result(nbgroups.async_task(unbox, Box(np.ones(300_000))),
                                    wait=-1)
            print(out == [float(i + 400_000) for i in range(50)], boxed,
                  len(os.listdir({str(store / 'values')!r})))
        """), timeout=120)
    ok, boxed, files = out.split()
    assert (ok, boxed, files) == ("True", "300000.0", "2")
    assert captured_pages_bytes(store) < 6_400_000  # the pages hold no copy of the frame


def test_a_large_pickle_is_stored_once_and_checked_before_it_is_loaded(tmp_path):
    from nbgroups.errors import StoreError

    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    floats = [float(i) for i in range(5000)]
    (args, _), = api.runner().take([((floats,), None)], r_options())
    stored = args[0]
    assert type(stored) is values.Stored and stored.skeleton == b"" and not stored.refs
    digest, size = stored.pickled
    path = tmp_path / "values" / digest
    assert digest == values.pickle_digest(path.read_bytes()) and size == path.stat().st_size
    ids = [nbgroups.async_task(sum, floats, group="pickles") for _ in range(3)]
    floats.append(1e9)  # after submission: not seen
    assert nbgroups.result_group("pickles", wait=-1) == [sum(range(5000))] * 3
    assert value_files(tmp_path) == [digest]
    assert nbgroups.fetch(ids[0]).args == (floats[:-1],)
    data = bytearray(path.read_bytes())  # changed by hand: refused, never unpickled
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    values._checked.clear()  # (what this process checked already is kept)
    with pytest.raises(StoreError, match="does not match its digest"):
        values.load(stored, values.source(str(tmp_path / "values")))
    api.reset()


def test_the_same_content_passed_again_reuses_its_reference(tmp_path, monkeypatch):
    files = values.ValueFiles(tmp_path / "values")
    writer = values.Writer(files, SMALL)
    a = np.arange(10_000, dtype=float)
    first = writer.store(a)
    assert writer.store(a) is first  # no new file-system call, nor description
    a[0] = 5.0
    changed = writer.store(a)
    assert changed is not first and changed.refs != first.refs
    assert len(files.digests()) == 2
    monkeypatch.setattr(values, "GRACE_SECONDS", 0.0)  # collection may take anything old:
    os.unlink(files.path(changed.refs[0][0]))         # the file is checked each time
    assert writer.store(a) is not changed and len(files.digests()) == 2


def test_captured_containers_of_large_items_are_stored_and_small_ones_are_not(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL,
                       backend="thread")
    pair = ("x" * 3000, "y" * 3000)  # few items, each under the threshold: 6 KB together
    table = {i: f"value {i} " * 10 for i in range(100)}  # 100 small items: ~9 KB
    small = {i: i for i in range(10)}
    f = notebook_function("""
        def f(i):
            return len(pair[0]) + len(pair[1]) + sum(map(len, table.values())) + small[i]
    """, "f", pair=pair, table=table, small=small)
    expected = [6000 + sum(map(len, table.values())) + i for i in range(3)]
    assert nbgroups.result_group(nbgroups.sweep(f, "boxes", i=[0, 1, 2]), wait=-1) == expected
    (entry,) = {page.funcs[0] for page, _, _ in api.runner().store.group_entries("boxes")}
    assert sorted(v.about.split()[0] for v in entry[2]) == ["dict", "tuple"]
    assert len(value_files(tmp_path)) == 2  # the pair and the table; small stays inline
    api.reset()


def test_a_captured_value_removed_by_hand_fails_the_tasks_clearly(tmp_path):
    api.reset()
    nbgroups.configure(store=str(tmp_path), workers=2, progress=False, large_value=SMALL)
    a = np.random.default_rng().random(10_000)  # new content: no worker has it loaded
    f = notebook_function("def f(i):\n    return float(a.sum()) + i\n", "f", a=a)
    with api.runner().flushes_held():  # stored, not yet sent: the file goes first
        ids = [nbgroups.async_task(f, i, group="gone-captured") for i in range(2)]
        (tmp_path / "values" / xxhash.xxh3_128_hexdigest(memoryview(a).cast("B"))).unlink()
    nbgroups.result_group("gone-captured", count=2, wait=-1)
    for tid in ids:
        failed = nbgroups.fetch(tid)
        assert failed.success is False and isinstance(failed.result, ValueMissing)
        assert "ndarray float64 (10000,)" in str(failed.result)
        assert "a value its function captures" in str(failed.result)
    api.reset()
