"""Runner mechanisms: re-run accounting, hooks on re-runs, large results, batch statistics."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import nbgroups
from nbgroups import api
from nbgroups.store import LARGE_RESULT, SEP

REPO = Path(__file__).resolve().parents[1]


def flaky(x, flag):
    """Fails until ``flag`` exists (a fix the notebook can make between runs)."""
    if not os.path.exists(flag):
        raise ValueError(f"not yet: {x}")
    return x


def test_retry_counts_show_reruns_as_unfinished(nb, tmp_path):
    flag = str(tmp_path / "fixed")
    for i in range(4):
        nb.async_task(flaky, i, flag, group="r")
    nb.result_group("r", wait=-1)
    assert nb.group_counts("r").failed == 4
    open(flag, "w").close()
    assert nb.retry_group("r") == 4
    c = nb.group_counts("r")
    if nb.settings().backend == "sync":  # ran inline, already final
        assert (c.done, c.failed) == (4, 0)
    else:
        assert c.failed == 0 and c.queued + c.running + c.done == 4, c
    assert nb.result_group("r", wait=-1) == [0, 1, 2, 3]
    c = nb.group_counts("r")
    assert (c.submitted, c.done, c.failed, c.queued, c.running) == (4, 4, 0, 0, 0)


def test_retry_calls_this_kernels_hook_object(nb, tmp_path):
    flag = str(tmp_path / "fixed")
    seen = []

    def hook(task):
        seen.append((task.id, task.success, type(task)))

    ids = [nb.async_task(flaky, i, flag, group="h", hook=hook) for i in range(3)]
    nb.result_group("h", wait=-1)
    open(flag, "w").close()
    nb.retry_group("h")
    nb.result_group("h", wait=-1)
    api.runner().wait(lambda: len(seen) == 6, 30)
    assert [s[0] for s in seen[3:]] == ids or sorted(s[0] for s in seen[3:]) == sorted(ids)
    assert [s[1] for s in seen] == [False] * 3 + [True] * 3
    assert all(s[2] is nbgroups.Task for s in seen)


def big_bytes(i, size):
    return bytes([i]) * size


def test_large_results_have_their_own_entry_and_read_back(nb):
    size = LARGE_RESULT + 10
    ids = [nb.async_task(big_bytes, i, size, group="big") for i in range(3)]
    out = nb.result_group("big", wait=-1)
    assert [len(b) for b in out] == [size] * 3 and [b[0] for b in out] == [0, 1, 2]
    assert nb.fetch(ids[1]).result == bytes([1]) * size
    store = api.runner().store
    blobs = store._scan_keys(f"b{SEP}big{SEP}0{SEP}")
    assert len(blobs) == 3
    # deleting the tasks deletes their large results too
    assert nb.delete_group("big", tasks=True) == 3
    assert store._scan_keys(f"b{SEP}big{SEP}0{SEP}") == []


def test_batch_statistics_are_per_function(nb_loky):
    nb = nb_loky
    for i in range(200):
        nb.async_task("math.floor", i + 0.5, group="tiny")
    assert nb.result_group("tiny", count=200)[:3] == [0, 1, 2]
    r = api.runner()
    assert r.stats().funcs["math.floor"].result_bytes < LARGE_RESULT
    # a function with large results starts from its own (unknown) statistics,
    # so it is sent one call per batch and one batch per worker
    nb.async_task(big_bytes, 1, LARGE_RESULT, group="large")
    nb.result_group("large", wait=-1)
    stats = r.stats()
    assert stats.funcs[f"{__name__}.big_bytes"].result_bytes >= LARGE_RESULT
    assert stats.batch_sizes[f"{__name__}.big_bytes"] == 1


@pytest.mark.parametrize("n", [0, 1, 7])
def test_async_iter_small_sizes(nb, n):
    assert nb.result(nb.async_iter("math.floor", [i + 0.5 for i in range(n)]), wait=-1) == \
        list(range(n))


def gate(i, started_dir, release):
    """Says it began (a file), then waits for ``release``."""
    open(os.path.join(started_dir, str(i)), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.01)
    return i


def test_cancel_stops_every_call_not_begun_even_in_loky_queue(nb_loky, tmp_path):
    nb = nb_loky
    warm, started = tmp_path / "warm", tmp_path / "started"
    warm.mkdir()
    started.mkdir()
    release = tmp_path / "go"
    # learn gate's statistics (small results): then two batches per worker go to
    # loky, several calls each, and loky's own queue holds one of them
    nb.sweep(gate, "warm", i=range(4), started_dir=[str(warm)], release=[str(tmp_path)])
    nb.result_group("warm", wait=-1)
    nb.sweep(gate, "c", i=range(20), started_dir=[str(started)], release=[str(release)])
    r = api.runner()
    assert r.wait(lambda: len(os.listdir(started)) >= r.stats().workers, 60)
    cancelled = nb.cancel_group("c")
    begun = {int(name) for name in os.listdir(started)}  # both workers wait at the gate
    release.touch()
    tasks = nb.fetch_group("c", wait=-1)
    ran = {t.result for t in tasks if t.success}
    assert ran == begun  # exactly the calls that had begun ran; nothing else started
    assert [t.state for t in tasks].count(nbgroups.State.CANCELLED) == cancelled == 20 - len(ran)


def interrupt_at(x, at):
    if x == at:
        raise KeyboardInterrupt  # what Ctrl-C raises in the kernel's main thread
    return x


def test_ctrl_c_in_an_inline_task_stops_the_cell(store_dir):
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            nbgroups.sweep(interrupt_at, "ctrl-c", x=[0, 1, 2, 3], at=[1])
        tasks = nbgroups.fetch_group("ctrl-c")
        assert [t.state.value for t in tasks] == ["success", "failure", "cancelled", "cancelled"]
        assert "interrupted" in tasks[1].error
        assert nbgroups.result_group("ctrl-c", wait=-1) == [0]  # nothing left waiting
    finally:
        api.reset()


def test_a_tasks_own_keyboardinterrupt_in_a_pool_worker_is_a_failure(nb_loky):
    nb = nb_loky
    nb.sweep(interrupt_at, "own", x=[0, 1, 2], at=[1])
    assert nb.result_group("own", wait=-1) == [0, 2]
    assert nb.count_group("own", failures=True) == 1


def test_attempt_count_goes_on_across_retry_group(nb, tmp_path):
    flag = str(tmp_path / "fixed")
    tid = nb.async_task(flaky, 1, flag, group="a", retries=1)
    assert nb.fetch(tid, wait=-1).attempt_count == 2  # the run and its retry failed
    open(flag, "w").close()
    nb.retry_group("a")
    task = nb.fetch(tid, wait=-1)
    assert task.success and task.attempt_count == 3
    assert [t.attempt_count for t in task.history()] == [2, 3]


class Point:
    """A class defined in the test module: pickled by value on its way to workers' results."""

    def __init__(self, x):
        self.x = x


def double_point(p):
    return Point(p.x * 2)


def lock_at_one(i):
    import threading

    return threading.Lock() if i == 1 else i


def test_async_iter_results_of_user_classes_and_unpicklable_items(nb):
    out = nb.result(nb.async_iter(double_point, [Point(1), Point(2)]), wait=-1)
    assert [p.x for p in out] == [2, 4]
    task = nb.fetch(nb.async_iter(lock_at_one, [0, 1, 2]), wait=-1)
    assert task.success is False
    assert task.result[0] == 0 and task.result[2] == 2
    assert isinstance(task.result[1], nbgroups.TaskError)
    assert task.error.startswith("UnpicklableResult:") and "lock" in task.error


def test_names_of_a_page_are_distinct_and_lead_back_to_their_ids():
    from nbgroups import names

    prefix = names.new_prefix()
    all_names = [names.name_of(names.task_id(prefix, i)) for i in range(names.PAGE_CAPACITY)]
    assert len(set(all_names)) == names.PAGE_CAPACITY
    # neighbours differ in both of the last two words, not just the last one
    first = all_names[:50]
    assert all(first[i].split("-")[2] != first[i + 1].split("-")[2] for i in range(49))
    for i in (0, 1, 255, 256, 40_000, names.PAGE_CAPACITY - 1):
        family, w2, w3 = names.parse_name(all_names[i])
        assert family == names.name_family(prefix)
        assert names.index_in_page(prefix, w2, w3) == i


def test_count_waits_for_retried_tasks(nb_loky, tmp_path):
    nb = nb_loky
    flag = str(tmp_path / "fixed")
    for i in range(3):
        nb.async_task(flaky, i, flag, group="rc")
    assert nb.result_group("rc", count=3) == []
    open(flag, "w").close()
    assert nb.retry_group("rc") == 3
    # the three failures are being re-run: they are not "finished" until they end
    assert nb.result_group("rc", count=3) == [0, 1, 2]


def add(a, b):
    return a + b


def test_async_iter_unpacks_namedtuples(nb):
    from collections import namedtuple

    P = namedtuple("P", "a b")
    assert nb.result(nb.async_iter(add, [P(1, 2), P(3, 4)]), wait=-1) == [3, 7]


def test_async_task_builder_follows_configured_defaults(nb):
    nb.configure(cached=True)
    with api.default_group("dg"):
        a = nbgroups.AsyncTask("math.floor", 2.5)
        a.run()
    assert a.group == "dg"
    assert a.result(wait=-1) == 2 and a.result_group(wait=-1) == [2] and a.group_count() == 1


def test_shared_task_name_after_the_newest_is_deleted(nb):
    old = nb.async_task("math.floor", 1.5, task_name="job", group="A")
    nb.result(old, wait=-1)
    new = nb.async_task("math.floor", 2.5, task_name="job", group="B")
    assert nb.fetch("job", wait=-1).id == new
    nb.delete_group("B", tasks=True)
    assert nb.fetch("job").id == old


# ---------------------------------------------------------------- durability (review)
def test_an_unpicklable_argument_fails_its_task_only(nb):
    import threading

    good = [nb.async_task(add, i, 1, group="good") for i in range(5)]
    bad = nb.async_task(add, threading.Lock(), 1, group="bad")
    assert nb.result_group("good", wait=-1) == [1, 2, 3, 4, 5]
    task = nb.fetch(bad, wait=-1)
    assert task.success is False and task.error.startswith("SerializationError:")
    assert "cannot be pickled" in task.error and task.attempt_count == 1
    assert nb.fetch(good[0]).success


def test_an_unpicklable_callable_raises_before_anything_is_stored(nb):
    import threading

    lock = threading.Lock()
    with pytest.raises(nbgroups.SerializationError, match="cannot be pickled") as info:
        nb.async_task(lambda: lock, group="u")
    assert isinstance(info.value, TypeError)
    assert nb.group_counts("u").submitted == 0 and "u" not in nb.list_groups()


def test_a_failed_outcome_write_is_retried_not_lost(nb_loky):
    nb = nb_loky
    r = api.runner()
    real = r.store.write_outcomes
    failures = [OSError(28, "No space left on device")] * 2

    def flaky(*args, **kwargs):  # fault injection: the disk is full, twice
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    r.store.write_outcomes = flaky
    for i in range(3):
        nb.async_task(add, i, 1, group="w")
    deadline = time.monotonic() + 60
    while True:  # a wait meanwhile says why it cannot end yet, then succeeds
        try:
            out = nb.result_group("w", wait=-1)
            break
        except nbgroups.StoreError as exc:
            assert "could not be written" in str(exc)
            assert time.monotonic() < deadline
    assert out == [1, 2, 3] and not failures
    assert nb.group_counts("w").done == 3


def test_close_right_after_submitting_keeps_every_returned_id(store_dir):
    api.reset()
    nbgroups.configure(store=str(store_dir), workers=2, progress=False)
    try:
        ids = [nbgroups.async_task(add, i, 1, group="c") for i in range(2000)]
        api.runner().close()
        api.reset()
        nbgroups.configure(store=str(store_dir), workers=2, progress=False)
        assert all(nbgroups.fetch(i) is not None for i in ids[-10:])
        assert nbgroups.group_counts("c").submitted == 2000
        nbgroups.resume_group("c")
        assert nbgroups.result_group("c", wait=-1) == [i + 1 for i in range(2000)]
    finally:
        api.reset()


def test_a_hook_that_exits_does_not_stop_the_runner(nb_loky):
    nb = nb_loky
    nb.result(nb.async_task(add, 1, 1, hook=lambda t: sys.exit(1)), wait=-1)
    assert nb.result(nb.async_task(add, 2, 2), wait=30_000) == 4


def test_cancel_in_the_cache_layer_whatever_the_ttl(nb_loky, tmp_path):
    nb = nb_loky
    release = tmp_path / "go"
    from tests.test_api import waiter

    w = waiter(str(release))
    for i in range(8):
        nb.async_task(w, i, group="c60", cached=60)
    n = nb.cancel_group("c60", cached=True)  # the layer, not the exact TTL
    release.touch()
    assert n >= 1
    assert len(nb.result_group("c60", wait=-1, cached=True)) == 8 - n
    assert nb.count_group("c60", cached=True) == 8 - n
    c = nb.group_counts("c60", cached=True)
    assert c.cancelled == n and c.queued == 0 and c.running == 0


def test_resume_leaves_a_live_kernels_tasks_alone(store_dir, tmp_path):
    import signal
    import subprocess

    ready = tmp_path / "submitted"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "import nbgroups, time, pathlib\n"
        f"nbgroups.configure(store={str(store_dir)!r}, workers=1, progress=False)\n"
        "for i in range(6):\n"
        "    nbgroups.async_task(time.sleep, 30, group='owned')\n"
        "nbgroups.api.runner().flush()\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(120)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert other.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        api.reset()
        nbgroups.configure(store=str(store_dir), workers=1, progress=False)
        assert nbgroups.group_counts("owned").submitted == 6
        assert nbgroups.resume_group("owned") == 0  # its kernel is alive: not orphans
        os.killpg(other.pid, signal.SIGKILL)
        other.wait(30)
        assert nbgroups.resume_group("owned") == 6  # now they are orphans: resumed, once
        assert nbgroups.resume_group("owned") == 0
        nbgroups.cancel_group("owned")
    finally:
        if other.poll() is None:
            os.killpg(other.pid, signal.SIGKILL)
        api.reset()


def test_a_store_removed_while_running_is_a_clear_error_not_silent_loss(store_dir):
    import shutil

    api.reset()
    nbgroups.configure(store=str(store_dir), workers=2, progress=False)
    try:
        assert nbgroups.result(nbgroups.async_task(add, 1, 1, group="s"), wait=-1) == 2
        shutil.rmtree(store_dir)
        nbgroups.async_task(add, 2, 2, group="s")
        with pytest.raises(nbgroups.StoreError, match="removed or replaced"):
            nbgroups.result_group("s", wait=-1)
        # a wait on one task the runner thread could not write says so too (it used to
        # wait out its time: the caller no longer writes the page itself)
        tid = nbgroups.async_task(add, 3, 3, group="s")
        with pytest.raises(nbgroups.StoreError, match="submitted tasks could not be written"):
            nbgroups.result(tid, wait=-1)
    finally:
        api.reset()


def test_cache_layer_counts_expire_with_their_entries(nb):
    nb.async_task("math.floor", 1.5, group="cg", cached=1)
    nb.result_group("cg", wait=-1, cached=True)
    time.sleep(1.2)  # past the first task's TTL (correctness, not timing: it must be gone)
    nb.async_task("math.floor", 2.5, group="cg", cached=60)
    assert nb.result_group("cg", wait=-1, cached=True) == [2]
    assert nb.count_group("cg", cached=True) == 1
    assert nb.group_counts("cg", cached=True).submitted == 1


def kilobytes_or_fail(i):
    if i == 777:
        raise ValueError("777")
    return i.to_bytes(4, "big") * 256  # 1 KiB, distinct (b"x" * 1024 is one shared constant)


def test_a_large_async_iter_result_gets_its_own_entry(nb):
    from nbgroups.store import SEP

    ok = nb.async_iter(kilobytes_or_fail, range(2000), group="li")  # ~2 MB of results
    out = nb.result(ok, wait=-1)
    assert len(out) == 2000 and out[1] == (1).to_bytes(4, "big") * 256
    assert isinstance(out[777], ValueError)
    task = nb.fetch(ok)
    assert task.success is False and task.error == "ValueError: 777"
    assert nb.result_group("li", failures=True)[0][776] == (776).to_bytes(4, "big") * 256
    entries = api.runner().store._scan_keys(f"b{SEP}li{SEP}0{SEP}")
    assert len(entries) == 1 and entries[0].endswith(f"{SEP}c")


def test_monitor_files_are_reused_and_removed_at_close(store_dir):
    api.reset()
    nbgroups.configure(store=str(store_dir), workers=2, progress=False)
    try:
        r = api.runner()
        for i in range(20):  # one at a time: each batch could reuse the last one's file
            assert nbgroups.result(nbgroups.async_task(add, i, 1), wait=-1) == i + 1
        folder = Path(r.stats().monitor_directory)
        assert 1 <= len(list(folder.iterdir())) <= 4  # not one file per batch
        r.close()
        assert not folder.exists()
    finally:
        api.reset()


def test_a_task_not_yet_written_is_pending_and_waited_for(nb_loky):
    r = api.runner()
    with r.flushes_held():  # the runner thread cannot write the page meanwhile
        tid = nbgroups.async_task(add, 1, 2)
        assert r.pending(tid)  # in its open page, not in the store yet
        assert not r.pending("f" * len(tid))
    assert nbgroups.result(tid, wait=-1) == 3
    assert not r.pending(tid)


def _nap(x):
    time.sleep(0.03)
    return x


def test_running_counts_the_calls_workers_have_begun(nb_loky):
    """Calls are sent to workers in batches, several per worker; only the call a
    worker has begun (its monitor file's newest stamp) is running, the rest queued."""
    nb = nb_loky
    nb.sweep(_nap, "begun", x=range(120))
    seen = []

    def settled():
        c = nb.group_counts("begun")
        seen.append((c.running, c.queued, c.submitted - c.finished - c.cancelled))
        return c.settled

    assert api.runner().wait(settled, 60)
    assert max(running for running, _, _ in seen) <= 2, seen  # 2 workers
    assert any(running for running, _, _ in seen), seen
    assert all(running + queued == left for running, queued, left in seen), seen
