"""``nbgroups.Executor``, ``as_completed`` and the awaitable waits, on loky, thread and sync.

The standard ``concurrent.futures`` behaviours (results, exceptions, cancel,
shutdown with and without wait and cancel_futures, map order and timeouts, the
context manager, ``concurrent.futures.as_completed``/``wait``, asyncio's
``wrap_future`` and ``run_in_executor``), and that every call is a task of its
group as ``async_task`` makes one. ``tests/test_dask.py`` runs these again on a
Dask LocalCluster.

Tasks that must stay running block on a named pipe (``open()`` waits for a
writer): the test releases them by opening it for writing, an event rather than
a sleep, and one that crosses processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import math
import os

import pytest

import nbgroups
from nbgroups import api
from nbgroups.errors import ArgumentTypeError, ConfigurationError


@pytest.fixture
def nb(nb_local):
    """nbgroups on each local backend (conftest's nb_local)."""
    return nb_local


@pytest.fixture(params=["loky", "thread"])
def pooled(request, store_dir):
    """nbgroups on a pool (loky or threads): for tests whose tasks must still be running
    when they act (inline, every call has finished when submit() returns)."""
    api.reset()
    nbgroups.configure(store=str(store_dir), backend=request.param, workers=2, progress=False)
    yield nbgroups
    api.reset()


def run_async(coro):
    """``asyncio.run(coro)`` on a thread of its own: a session that ran Playwright's sync
    API (the browser tests) has an event loop marked running on the main thread."""
    with cf.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_on_pipe(path: str) -> str:
    """Block until someone opens ``path`` for writing, then return what was written."""
    with open(path) as f:
        return f.read()


def started_then_wait(started: str, path: str) -> str:
    """Say so on the pipe ``started`` (the test reads it), then :func:`wait_on_pipe`."""
    with open(started, "w") as f:
        f.write("started")
    return wait_on_pipe(path)


def release(path: str) -> None:
    """Let the task blocked on ``path`` return (waits until it is reading)."""
    with open(path, "w") as f:
        f.write("go")


def fail(x):
    raise ValueError(f"bad {x}")


@pytest.fixture
def pipes(tmp_path):
    made = []

    def make() -> str:
        path = str(tmp_path / f"pipe{len(made)}")
        os.mkfifo(path)
        made.append(path)
        return path
    return make


def blocked(nb, ex, pipes, n=2):
    """``n`` tasks that run until released (one per worker), and their pipes;
    returns once every one of them runs in a worker."""
    paths = [(pipes(), pipes()) for _ in range(n)]
    futures = [ex.submit(started_then_wait, started, go) for started, go in paths]
    for started, _ in paths:
        assert wait_on_pipe(started) == "started"
    return [go for _, go in paths], futures


# ---------------------------------------------------------------- submit
def test_submit_results_and_exceptions(nb):
    with nb.Executor(group="ex") as ex:
        futures = [ex.submit(math.modf, i + 0.5) for i in range(50)]
        bad = ex.submit(fail, 3)
        assert isinstance(futures[0], cf.Future)
        assert [f.result(timeout=60) for f in futures] == [math.modf(i + 0.5) for i in range(50)]
        with pytest.raises(ValueError, match="bad 3"):
            bad.result(timeout=60)
        assert isinstance(bad.exception(timeout=60), ValueError)
        # the worker's traceback, as ProcessPoolExecutor gives it
        assert "in fail" in str(bad.exception().__cause__)
        # keywords go to the function (even an option's name: the executor has its options)
        assert ex.submit(dict, group="mine", timeout=3).result(timeout=60) == \
            {"group": "mine", "timeout": 3}


def test_every_call_is_a_task_of_the_group(nb):
    with nb.Executor(group="rows", retries=1) as ex:
        f = ex.submit(pow, 2, 5)
        assert f.result(timeout=60) == 32
        g = ex.submit(fail, 1)
        cf.wait([g], timeout=60)
    task = nb.fetch(f.task_id)
    assert task.group == "rows" and task.args == (2, 5) and task.result == 32
    assert task.time_taken() is not None
    assert nb.fetch(g.task_id).attempt_count == 2  # retries=1: the executor's options apply
    tasks = nb.fetch_group("rows")
    assert [t.id for t in tasks] == [f.task_id, g.task_id]
    assert nb.count_group("rows") == 1 and nb.count_group("rows", failures=True) == 1


def test_standard_as_completed_and_wait(nb):
    with nb.Executor(group="std") as ex:
        futures = {ex.submit(math.sqrt, i): i for i in range(20)}
        futures[ex.submit(fail, 0)] = -1
        seen = {}
        for f in cf.as_completed(futures, timeout=60):
            seen[futures[f]] = f.exception() or f.result()
        assert len(seen) == 21 and seen[16] == 4.0 and isinstance(seen[-1], ValueError)
        done, not_done = cf.wait(futures, timeout=60)
        assert len(done) == 21 and not not_done


def test_asyncio_wrap_future_and_run_in_executor(nb):
    async def main():
        with nb.Executor(group="aio") as ex:
            loop = asyncio.get_running_loop()
            a = await loop.run_in_executor(ex, math.modf, 1.5)
            b = await asyncio.wrap_future(ex.submit(pow, 3, 3))
            c = await asyncio.gather(*(asyncio.wrap_future(ex.submit(abs, -i)) for i in range(5)))
            return a, b, c
    assert run_async(main()) == ((0.5, 1.0), 27, [0, 1, 2, 3, 4])


# ---------------------------------------------------------------- cancel and shutdown
def test_cancel_a_queued_task_not_a_running_one(pooled, pipes):
    ex = pooled.Executor(group="cancel")
    paths, running = blocked(pooled, ex, pipes)
    queued = [ex.submit(math.modf, i) for i in range(5)]
    assert queued[2].cancel() is True
    assert queued[2].cancelled() and queued[2].done()
    with pytest.raises(cf.CancelledError):
        queued[2].result()
    assert running[0].cancel() is False  # running: not stopped
    for p in paths:
        release(p)
    assert [f.result(timeout=60) for f in running] == ["go", "go"]
    assert [queued[i].result(timeout=60) for i in (0, 1, 3, 4)] == \
        [math.modf(i) for i in (0, 1, 3, 4)]
    assert queued[0].cancel() is False  # finished
    assert pooled.fetch(queued[2].task_id).state == pooled.State.CANCELLED
    assert pooled.group_counts("cancel").cancelled == 1
    ex.shutdown()


def test_shutdown_waits_for_every_call(nb):
    ex = nb.Executor(group="shut")
    futures = [ex.submit(math.modf, i) for i in range(30)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures) and ex.closed
    with pytest.raises(nbgroups.ExecutorShutdown, match="after shutdown") as info:
        ex.submit(math.modf, 1)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(nbgroups.ExecutorShutdown, match="after shutdown"):
        ex.map(abs, [1])
    ex.shutdown()  # again: nothing happens


def test_a_submit_racing_shutdown_is_refused(nb, monkeypatch):
    # shutdown() lands while submit() is inside async_task (after its open check):
    # before, the future joined the executor after shutdown(wait=True) had returned
    ex = nb.Executor(group="shut-race")
    submit = api.async_task

    def shut_meanwhile(*args, **kwargs):
        tid = submit(*args, **kwargs)
        ex.shutdown(wait=True)
        return tid

    monkeypatch.setattr(api, "async_task", shut_meanwhile)
    with pytest.raises(nbgroups.ExecutorShutdown):
        ex.submit(abs, -1)
    monkeypatch.undo()
    # its task ran (inline, or it had started) or was cancelled: none is left waiting
    nb.result_group("shut-race", wait=-1)
    c = nb.group_counts("shut-race")
    assert c.finished + c.cancelled == c.submitted == 1


def test_shutdown_cancel_futures_without_wait(pooled, pipes):
    ex = pooled.Executor(group="shut-cancel")
    paths, running = blocked(pooled, ex, pipes)
    queued = [ex.submit(math.modf, i) for i in range(10)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not any(f.done() for f in running)  # without wait: they go on
    for p in paths:
        release(p)
    assert [f.result(timeout=60) for f in running] == ["go", "go"]
    assert pooled.group_counts("shut-cancel").cancelled == 10


def test_context_manager_shuts_down_and_waits(nb):
    with nb.Executor(group="ctx") as ex:
        futures = [ex.submit(pow, i, 2) for i in range(10)]
    assert all(f.done() for f in futures)
    with pytest.raises(RuntimeError):
        ex.submit(pow, 1, 1)


# ---------------------------------------------------------------- map
def test_map_in_input_order_in_chunks(nb):
    with nb.Executor(group="map") as ex:
        assert list(ex.map(abs, range(-3000, 3000))) == [abs(i) for i in range(-3000, 3000)]
        assert list(ex.map(pow, [2, 3, 4], [2, 2, 2, 9])) == [4, 9, 16]  # shortest wins
        assert list(ex.map(len, [(1, 2), (3,)])) == [2, 1]  # a tuple item is one argument
        assert list(ex.map(pow, [2, 3], [3, 3], chunksize=1)) == [8, 27]
        assert list(ex.map(abs, [-1, -2, -3, -4, -5], chunksize=2)) == [1, 2, 3, 4, 5]
        assert list(ex.map(abs, [])) == []
    counts = nb.group_counts("map")
    # 6000 calls in growing chunks (8, 16, ... 4096): a dozen async_iter tasks
    assert 2 + 3 + 2 < counts.done < 30, counts


def test_map_raises_the_first_failure_in_place(nb):
    with nb.Executor(group="map-fail") as ex:
        for chunksize in (None, 1):
            it = ex.map(math.sqrt, [4, 9, -1, 16], chunksize=chunksize)
            assert next(it) == 2.0 and next(it) == 3.0
            with pytest.raises(ValueError, match="math domain error"):
                next(it)


def test_map_timeout(pooled, pipes):
    ex = pooled.Executor(group="map-timeout")
    path = pipes()
    for chunksize in (None, 1):
        it = ex.map(wait_on_pipe, [path], timeout=0.05, chunksize=chunksize)
        with pytest.raises(cf.TimeoutError):
            next(it)
        release(path)
    ex.shutdown(wait=True)


def test_map_reads_its_input_as_results_are_read(nb):
    """A million calls never make a million futures: a window is in flight."""
    read = itertools.count()
    endless = (next(read) for _ in itertools.count())  # counts what map took
    ex = nb.Executor(group="map-lazy")
    it = ex.map(abs, endless)
    assert [next(it) for _ in range(300)] == list(range(300))
    assert next(read) < 20_000  # three chunks ahead at most (8, 16, 32, ...)
    it.close()  # what has not started is cancelled
    it = ex.map(abs, range(10**6), chunksize=1)
    assert next(it) == 0
    assert nb.group_counts("map-lazy").submitted <= 1_100  # ahead: one window, no more
    it.close()
    ex.shutdown(wait=True)
    c = nb.group_counts("map-lazy")
    assert c.submitted < 30_000 and c.finished + c.cancelled == c.submitted


# ---------------------------------------------------------------- as_completed
def test_as_completed_yields_every_record_once(nb):
    with nb.Executor(group="ac") as ex:
        futures = [ex.submit(math.sqrt, i) for i in (4, 9, -1)]
    records = list(nb.as_completed("ac", timeout=60))
    assert sorted(r.id for r in records) == sorted(f.task_id for f in futures)
    by_id = {r.id: r for r in records}
    assert by_id[futures[0].task_id].result == 2.0
    assert by_id[futures[2].task_id].success is False
    assert isinstance(by_id[futures[2].task_id], nb.Task)
    # by ids, futures or records
    assert len(list(nb.as_completed([futures[0].task_id, futures[1]]))) == 2
    assert list(nb.as_completed([])) == []
    assert list(nb.as_completed("no-such-group")) == []


def test_as_completed_while_running(pooled, pipes):
    ex = pooled.Executor(group="ac-live")
    paths, running = blocked(pooled, ex, pipes, n=1)
    quick = ex.submit(math.modf, 2.5)  # on the other worker
    it = pooled.as_completed("ac-live", timeout=60)
    first = next(it)  # the quick one ends while the other is held
    assert first.id == quick.task_id and first.result == (0.5, 2.0)
    release(paths[0])
    assert next(it).id == running[0].task_id
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_timeout(pooled, pipes):
    ex = pooled.Executor(group="ac-timeout")
    path = pipes()
    f = ex.submit(wait_on_pipe, path)
    with pytest.raises(cf.TimeoutError, match="1 \\(of 1\\) tasks did not finish"):
        next(pooled.as_completed([f], timeout=0.05))

    async def late():
        async for _ in pooled.as_completed([f], timeout=0.05):
            pass
    with pytest.raises(cf.TimeoutError):
        run_async(late())
    release(path)
    assert f.result(timeout=60) == "go"


def test_as_completed_async_for(nb):
    with nb.Executor(group="ac-async") as ex:
        ids = [ex.submit(pow, i, 2).task_id for i in range(30)]

    async def collect():
        return [r async for r in nb.as_completed(ids, timeout=60)]
    records = run_async(collect())
    assert sorted(r.result for r in records) == [i * i for i in range(30)]


def test_as_completed_async_while_running(pooled, pipes):
    ex = pooled.Executor(group="ac-async-live")
    paths, running = blocked(pooled, ex, pipes, n=1)

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        async for rec in pooled.as_completed([running[0]], timeout=60):
            got.append(rec)
        return got, loop

    async def both():
        consumer = asyncio.ensure_future(main())
        await asyncio.sleep(0)  # the consumer now awaits; the loop is free
        await asyncio.get_running_loop().run_in_executor(None, release, paths[0])
        return await consumer
    got, _ = run_async(both())
    assert [r.result for r in got] == ["go"]


# ---------------------------------------------------------------- awaitables
def test_awaitable_twins(nb):
    tid = nb.async_task(pow, 2, 8, group="aw")
    nb.async_task(fail, 1, group="aw")

    async def main():
        return (await nb.aresult(tid, wait=-1), (await nb.afetch(tid, wait=-1)).result,
                await nb.aresult_group("aw", wait=-1),
                await nb.aresult_group("aw", failures=True, count=2),
                [t.success for t in await nb.afetch_group("aw", wait=60_000)],
                await nb.aresult("no-such-task"), await nb.aresult_group("no-such-group"))
    r, f, results, with_failures, successes, unknown, no_group = run_async(main())
    assert (r, f, results) == (256, 256, [256])
    assert with_failures[0] == 256 and isinstance(with_failures[1], ValueError)
    assert successes == [True, False]
    assert unknown is None and no_group is None


def test_afetch_by_name_returns_the_task_it_waited_on(pooled, pipes):
    # it read the task again by name after waiting: a newer task of that name,
    # submitted meanwhile, came back instead of the one it waited on
    started, go = pipes(), pipes()
    waited = pooled.async_task(started_then_wait, started, go, group="named", task_name="dup")
    assert wait_on_pipe(started) == "started"

    async def main():
        fetching = asyncio.ensure_future(pooled.afetch("dup", wait=-1))
        await asyncio.sleep(0)  # one loop turn: afetch resolves the name to the running task
        newer = pooled.async_task(abs, -1, group="named", task_name="dup")
        assert pooled.result(newer, wait=-1) == 1
        release(go)
        return await fetching, newer
    record, newer = run_async(main())
    assert record.id == waited != newer and record.result == "go"

def test_awaitables_check_arguments_at_the_call(nb):
    with pytest.raises(ArgumentTypeError):
        nb.aresult(42)
    with pytest.raises(ConfigurationError):
        nb.afetch("x", wait=-5)
    with pytest.raises(ArgumentTypeError):
        nb.aresult_group(3)
    with pytest.raises(ConfigurationError):
        nb.afetch_group("g", count=0)
    with pytest.raises(ArgumentTypeError):
        nb.aresult_group("g", failures="yes")


def test_executor_arguments_checked_at_the_call(nb):
    with pytest.raises(ArgumentTypeError):
        nb.Executor(group=3)
    with pytest.raises(ArgumentTypeError, match="unknown option"):
        nb.Executor(workers=3)
    with pytest.raises(ArgumentTypeError, match=r"did you mean timeout=\?"):
        nb.Executor(timout=3)
    with pytest.raises(ConfigurationError, match="sync"):
        nb.Executor(sync=True)
    ex = nb.Executor()
    with pytest.raises(ArgumentTypeError, match="chunksize"):
        ex.map(abs, [1], chunksize=0)
    with pytest.raises(ArgumentTypeError, match="timeout"):
        ex.map(abs, [1], timeout=-1)
    with pytest.raises(ArgumentTypeError):
        nb.as_completed(42)
    with pytest.raises(ArgumentTypeError, match="task ids"):
        nb.as_completed(["not-an-id"])


def test_reuse_resolves_from_the_earlier_task(nb):
    with nb.Executor(group="reuse", reuse=True) as ex:
        first = ex.submit(pow, 3, 4)
        assert first.result(timeout=60) == 81
        again = ex.submit(pow, 3, 4)  # done already in the group: not run again
        assert again.result(timeout=60) == 81
    assert again.task_id == first.task_id
    assert nb.group_counts("reuse").submitted == 1



def test_reuse_of_a_running_task_resolves_every_future(pooled, pipes):
    # both submissions get the running task's id: each future must resolve, and
    # shutdown(wait=True) must return (it waited forever on the first one)
    go = pipes()
    ex = pooled.Executor(group="reuse-running", reuse=True)
    first = ex.submit(wait_on_pipe, go)
    again = ex.submit(wait_on_pipe, go)
    assert again.task_id == first.task_id
    release(go)
    assert first.result(timeout=60) == again.result(timeout=60) == "go"
    ex.shutdown(wait=True)
    assert pooled.group_counts("reuse-running").submitted == 1



def test_as_completed_raises_for_ids_nobody_knows(nb):
    # an id neither stored nor running here would be waited on forever
    with nb.Executor(group="known") as ex:
        known = ex.submit(abs, -1)
    with pytest.raises(nbgroups.UnknownTasks, match=r"0{32}") as info:
        nb.as_completed([known, "0" * 32])
    assert isinstance(info.value, LookupError) and known.task_id not in str(info.value)
    assert [t.result for t in nb.as_completed([known], timeout=60)] == [1]


def test_as_completed_raises_for_tasks_whose_kernel_is_gone(nb, tmp_path, store_dir):
    from tests.test_api import waiter

    backend = nb.settings().backend
    go = tmp_path / "go"
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="loky", workers=2, progress=False)
    ids = [nbgroups.async_task(waiter(str(go)), i, group="orphans") for i in range(3)]
    api.runner().flush()  # stored, none finished
    api.reset()  # the kernel stops: its workers go, its tasks never finish
    nbgroups.configure(store=str(store_dir), backend=backend, workers=2, progress=False)
    for arg in ("orphans", ids, ids[:1]):
        with pytest.raises(nbgroups.OrphanedTasks, match=r"resume_group\('orphans'\)"):
            nbgroups.as_completed(arg)
    go.touch()
    assert nbgroups.resume_group("orphans") == 3
    assert sorted(t.result for t in nbgroups.as_completed("orphans", timeout=60)) == [0, 1, 2]


def test_as_completed_reads_the_store_once_per_poll(nb, store_dir):
    # tasks this kernel does not run (stored by an earlier "kernel"): one flush and
    # one store read for all of them, not one per task
    backend = nb.settings().backend
    ids = [nbgroups.async_task(abs, -i, group="polled") for i in range(20)]
    assert nbgroups.result_group("polled", wait=-1) == list(range(20))
    api.reset()
    nbgroups.configure(store=str(store_dir), backend=backend, workers=2, progress=False)
    runner = api.runner()
    calls = {"flush": 0, "read": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    runner.flush = counted("flush", runner.flush)
    runner.store.task_entries = counted("read", runner.store.task_entries)
    runner.store.task = counted("read", runner.store.task)
    got = nbgroups.as_completed(ids, timeout=60)
    assert sorted(t.result for t in got) == list(range(20))
    assert calls == {"flush": 1, "read": 1}

FEEDER = """
import sys, nbgroups
from tests.test_futures import wait_on_pipe
nbgroups.configure(store=sys.argv[1], backend='thread', workers=1, progress=False)
tid = nbgroups.async_task(wait_on_pipe, sys.argv[2], group='fed')
nbgroups.fetch(tid)  # a read writes the task's page: as_completed() knows ids once stored
print(tid, flush=True)
nbgroups.result(tid, wait=-1)
"""


def test_as_completed_reads_tasks_of_another_process(nb, pipes, store_dir):
    """A task another kernel runs on the same store: read from the store as it ends."""
    import subprocess
    import sys
    from pathlib import Path

    path = pipes()
    feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(store_dir), path],
                              stdout=subprocess.PIPE, text=True,
                              cwd=str(Path(__file__).resolve().parents[1]))
    released = False
    try:
        tid = feeder.stdout.readline().strip()
        it = nb.as_completed([tid], timeout=60)
        assert len(it) == 1
        release(path)
        released = True
        (record,) = list(it)
        assert record.id == tid and record.result == "go"
    finally:
        if not released:
            release(path)
        feeder.wait(timeout=60)
        feeder.stdout.close()
