"""The Dask backend on a real ``distributed.LocalCluster`` (2 worker processes, 127.0.0.1).

One cluster serves the whole module (it takes seconds to start). The core API
suite of ``tests/test_api.py`` runs here again on this backend (its ``nb``
fixture is overridden below), and so do the Executor/as_completed/awaitable tests of
``tests/test_futures.py`` and the joblib backend's, then the Dask-specific behaviour: batching,
timeouts (the worker is restarted), retries, a worker killed mid-task, a task
that kills every worker it runs on, the progress view's counts in an IPython
shell, and the clear error when ``distributed`` is missing.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import nbgroups  # noqa: E402
from nbgroups import api  # noqa: E402
from nbgroups.errors import ConfigurationError, TaskTimeout, WorkerDied  # noqa: E402
from nbgroups.executors import dask as dask_backend  # noqa: E402

pytestmark = [
    pytest.mark.dask,
]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    # allowed-failures=1: the scheduler gives up on a task after its second
    # worker death (default 3), which keeps the "kills every worker" test short.
    # dashboard_address=":0": any free port (None means :8787, which a test run
    # in another checkout on the same machine may hold: "Port 8787 is already in use").
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=":0")
    _tolerate_double_removal(lc)
    client = distributed.Client(lc, set_as_default=False)
    client.wait_for_workers(2, timeout=60)
    yield lc, client
    client.close()
    lc.close()


def _tolerate_double_removal(lc) -> None:
    """distributed's SpecCluster raises KeyError when the scheduler reports the
    removal of a worker it has already dropped (dask/distributed#5407). The tests
    here kill workers, so the report can race the cluster's close: the error then
    ended the cluster's status watcher, close() raised it, and Cluster.__del__
    raised again during a later test (one CI rehearsal in about twenty). A removal
    of an unknown worker is nothing to update."""
    update = lc._update_worker_status

    def tolerant(op, msg):
        try:
            update(op, msg)
        except KeyError:
            if op != "remove":
                raise

    lc._update_worker_status = tolerant


@pytest.fixture
def client(cluster):
    _, client = cluster
    client.wait_for_workers(2, timeout=60)  # a test before may have restarted one
    return client


@pytest.fixture
def nb(cluster, store_dir, monkeypatch):
    """nbgroups on the module's LocalCluster, through its address (as a user would).

    The address is also in the environment, so tests that reset and
    reconfigure (a kernel "restart") stay on this backend.
    """
    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    monkeypatch.setenv("NBGROUPS_BACKEND", "dask")
    monkeypatch.setenv("NBGROUPS_ADDRESS", lc.scheduler_address)
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="dask", address=lc.scheduler_address,
                       workers=2, progress=False)
    yield nbgroups
    api.reset()


@pytest.fixture
def nbc(client, store_dir):
    """nbgroups on the module's cluster through a ``client=`` the user made."""
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="dask", client=client, progress=False)
    yield nbgroups
    api.reset()


# ---------------------------------------------------------------- the core suite, on dask
from tests import test_api as _core  # noqa: E402

_NOT_ON_DASK = {
    # runs a loky-only subprocess and the environment parser: not backend code
    "test_true_main_functions_in_a_subprocess", "test_configure_from_environment",
    # assumes the first task started before cancel_group() returned; the first
    # dispatch to a cluster takes longer: test_cancel_group_on_dask waits for it
    "test_cancel_group",
}
for _name in dir(_core):
    _f = getattr(_core, _name)
    if _name.startswith("test_") and callable(_f) and _name not in _NOT_ON_DASK:
        globals()[_name] = _f
del _name, _f

# ---------------------------------------------------------------- futures, asyncio, joblib on dask
from tests import test_futures as _futures  # noqa: E402
from tests import test_joblib_backend as _joblib  # noqa: E402
from tests.test_futures import pipes  # noqa: E402, F401 - fixture of the futures tests


@pytest.fixture
def pooled(nb):
    """The futures tests' pool-only fixture: on this module, the cluster."""
    return nb

from tests.test_joblib_backend import data  # noqa: E402, F401 - fixture of the joblib tests

for _module, _names in (
    (_futures, [n for n in dir(_futures) if n.startswith("test_")]),
    (_joblib, ["test_parallel_calls_are_tasks_of_the_group", "test_gridsearch_scores_equal_lokys",
               "test_a_failure_raises_and_cancels_the_rest"]),
):
    for _name in _names:
        globals()[f"{_name}_on_dask" if _name in globals() else _name] = getattr(_module, _name)
del _module, _names, _name


# ---------------------------------------------------------------- configuration
def test_missing_distributed_raises_clear_error(store_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    api.reset()
    with pytest.raises(ConfigurationError, match=r"pip install 'nbgroups\[dask\]'"):
        nbgroups.configure(store=str(store_dir), backend="dask", address="tcp://127.0.0.1:1")
    assert api.settings().backend != "dask"  # nothing half-configured
    api.reset()


def test_unreachable_scheduler_fails_at_configure(store_dir, monkeypatch):
    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT", "1s")
    api.reset()
    with pytest.raises(ConfigurationError, match="cannot reach the Dask scheduler"):
        nbgroups.configure(store=str(store_dir), backend="dask", address="tcp://127.0.0.1:9")
    with pytest.raises(ValueError, match="needs address="):
        nbgroups.configure(store=str(store_dir), backend="dask")
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        nbgroups.configure(store=str(store_dir), backend="dask", client="not a client")
    api.reset()


# ---------------------------------------------------------------- the group API on dask
def test_result_group_order_with_failures_client_given(nbc, client):
    def f(x):
        if x % 3 == 0:
            raise ValueError(f"bad {x}")
        return x * 10

    ids = [nbc.async_task(f, i, group="g") for i in range(12)]
    assert nbc.result_group("g", wait=-1) == [i * 10 for i in range(12) if i % 3]
    with_failures = nbc.result_group("g", failures=True)
    assert [type(r) if i % 3 == 0 else r for i, r in enumerate(with_failures)] == \
        [ValueError if i % 3 == 0 else i * 10 for i in range(12)]
    assert nbc.count_group("g") == 8 and nbc.count_group("g", failures=True) == 4
    tasks = nbc.fetch_group("g")
    assert [t.id for t in tasks] == ids
    assert "bad 3" in tasks[3].traceback and tasks[3].success is False
    it = nbc.async_iter(f, range(1, 30, 3), group="g")
    assert nbc.result(it, wait=-1) == [x * 10 for x in range(1, 30, 3)]
    assert len(client.get_events(api.runner().executor.topic)) >= 1  # events flowed


def test_tiny_tasks_are_batched_into_few_dask_tasks(nbc, client):
    n = 3000
    for i in range(n):
        nbc.async_task(abs, -i, group="many")
    assert nbc.result_group("many", wait=-1) == list(range(n))
    events = client.get_events(api.runner().executor.topic)
    assert 1 <= len(events) <= n // 10, len(events)  # one "started" event per Dask task


def test_executor_sizes_batches_with_cluster_threads(nbc, client):
    nbc.async_task(abs, -1, group="one")
    nbc.result_group("one", wait=-1)
    assert api.runner().executor.workers == sum(client.nthreads().values()) == 2


def test_cancel_group_on_dask(nbc, tmp_path):
    release = tmp_path / "go"
    w = _core.waiter(str(release))
    ids = [nbc.async_task(w, i, group="cx") for i in range(20)]
    assert api.runner().wait(lambda: api.group_counts("cx").running >= 1, 60)
    cancelled = nbc.cancel_group("cx")
    release.touch()
    assert 1 <= cancelled <= 19
    tasks = nbc.fetch_group("cx", wait=-1)
    assert [t.id for t in tasks] == ids
    assert [t.state for t in tasks].count(nbgroups.State.CANCELLED) == cancelled
    assert nbc.count_group("cx") == 20 - cancelled
    assert nbc.result_group("cx") == [t.args[0] for t in tasks if t.success]


# ---------------------------------------------------------------- faults
def _pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_timeout_fails_the_task_and_restarts_its_worker(nbc, client):
    before = _pids(client)

    def maybe_sleep(x):
        if x == 0:
            time.sleep(300)
        return x

    ids = [nbc.async_task(maybe_sleep, i, group="to", timeout=3) for i in range(4)]
    tasks = nbc.fetch_group("to", wait=-1)
    assert [t.id for t in tasks] == ids
    assert tasks[0].success is False and isinstance(tasks[0].result, TaskTimeout)
    assert "timeout of 3 s" in str(tasks[0].result)
    assert [t.result for t in tasks[1:]] == [1, 2, 3]
    # The stuck thread is freed: its worker process was replaced by its nanny.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            client.wait_for_workers(2, timeout=30)
            after = _pids(client)
        except Exception:  # a worker mid-restart
            after = before
        if len(after) == 2 and after != before:
            break
        time.sleep(0.5)
    assert len(after) == 2 and after != before
    assert nbc.result(nbc.async_task(abs, -5), wait=60_000) == 5  # the cluster still works


def test_retries_on_dask(nbc, tmp_path):
    counter = tmp_path / "runs"

    def flaky(x):
        with open(counter, "a") as f:
            f.write("x")
        if os.path.getsize(counter) < 3:
            raise RuntimeError("flaky")
        return x

    tid = nbc.async_task(flaky, 7, retries=2, group="re")
    task = nbc.fetch(tid, wait=60_000)
    assert task.success is True and task.result == 7 and task.attempt_count == 3


def test_worker_killed_mid_task_group_completes_nothing_lost(nbc, client, tmp_path):
    pidfile = tmp_path / "pid"

    def long_once(x):
        if x == 99 and not pidfile.exists():
            pidfile.write_text(str(os.getpid()))
            time.sleep(300)  # killed from outside during this sleep
        return x

    for i in range(10):
        nbc.async_task(long_once, i, group="kill")
    assert nbc.result_group("kill", count=10, wait=60_000) == list(range(10))
    done_before = {t.id: t.result for t in nbc.fetch_group("kill")}
    tid = nbc.async_task(long_once, 99, group="kill")
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = int(pidfile.read_text())
    assert victim in _pids(client)
    os.kill(victim, signal.SIGKILL)
    # Dask reruns the batch on the surviving worker; the second run is quick.
    task = nbc.fetch(tid, wait=90_000)
    assert task.success is True and task.result == 99
    tasks = nbc.fetch_group("kill", wait=-1)
    assert {t.id: t.result for t in tasks if t.id in done_before} == done_before
    assert nbc.count_group("kill") == 11 and nbc.count_group("kill", failures=True) == 0


def test_task_killing_every_worker_fails_alone_with_clear_cause(nbc, client):
    def deadly(x):
        if x == 2:
            os._exit(3)
        return x

    ids = [nbc.async_task(deadly, i, group="deadly") for i in range(5)]
    tasks = nbc.fetch_group("deadly", wait=-1)
    assert [t.id for t in tasks] == ids
    assert [t.result for t in tasks if t.success] == [0, 1, 3, 4]
    assert tasks[2].success is False and isinstance(tasks[2].result, WorkerDied)
    assert "Dask worker running this task died" in str(tasks[2].result)
    assert nbc.count_group("deadly", failures=True) == 1


def test_batch_given_up_by_dask_is_split_so_only_the_culprit_fails(nbc, client):
    # Learn that calls are tiny first, so the next calls travel in big batches.
    for i in range(400):
        nbc.async_task(abs, i, group="warm")
    nbc.result_group("warm", wait=-1)

    def deadly(x):
        if x == 150:
            os._exit(5)
        return x

    ids = [nbc.async_task(deadly, i, group="split") for i in range(300)]
    tasks = nbc.fetch_group("split", wait=-1)
    assert [t.id for t in tasks] == ids
    assert [t.result for t in tasks if t.success] == [i for i in range(300) if i != 150]
    assert isinstance(tasks[150].result, WorkerDied)


# ---------------------------------------------------------------- progress view
def test_progress_view_counts_in_an_ipython_shell(nbc):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("import nbgroups", store_history=False)

    def f(x):
        if x == 4:
            raise KeyError(x)
        return x

    shell.user_ns["f"] = f
    res = shell.run_cell(
        "for i in range(10): nbgroups.async_task(f, i, group='pv')\n"
        "nbgroups.result_group('pv', wait=-1)", store_history=False)
    res.raise_error()
    assert res.result == [i for i in range(10) if i != 4]
    try:
        from nbgroups import display
    except ImportError:  # no display package yet: the counts it would be fed
        c = api.group_counts("pv")
        assert (c.submitted, c.done, c.failed, c.running, c.queued) == (10, 9, 1, 0, 0)
        return
    view = display.progress("pv", display=False, mode="widget")
    view.refresh(force=True)
    m = view.meter
    assert (m.submitted, m.done, m.failed, m.running, m.queued) == (10, 9, 1, 0, 0)
    assert m.state == "failed"
    view.close()


# ---------------------------------------------------------------- magics
def test_backend_magic_moves_a_notebook_to_the_cluster(cluster, store_dir, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    lc, _ = cluster
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="loky", workers=2, progress=False)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nbgroups")
        shell.run_line_magic("nbgroups", f"backend dask {lc.scheduler_address}")
        assert f"backend: dask at {lc.scheduler_address}" in capsys.readouterr().out
        assert nbgroups.settings().backend == "dask"
        result = shell.run_cell("import nbgroups, os\n"
                                "nbgroups.sweep(pow, 'magic', base=[2, 3], exp=[2])\n"
                                "nbgroups.result_group('magic', wait=60000)")
        assert result.result == [4, 9]
        from nbgroups.executors.dask import DaskExecutor

        assert isinstance(api.runner().executor, DaskExecutor)
        shell.run_line_magic("nbgroups", "backend loky")
        assert nbgroups.settings().backend == "loky"
    finally:
        shell.run_line_magic("unload_ext", "nbgroups")
        InteractiveShell.clear_instance()
        api.reset()
