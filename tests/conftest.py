"""Shared pytest configuration for the nbgroups test suite."""

import sys
from pathlib import Path

# `tests.jupyter_env` must import the same way under `pytest` and `python -m pytest`.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

# Jupyter harness: jupyter_dirs (autouse), jupyterlab_server, browser_page, lab_notebook.
pytest_plugins = ["tests.jupyter_env"]


# ---------------------------------------------------------------- core fixtures
import pytest  # noqa: E402

import nbgroups  # noqa: E402
from nbgroups import api  # noqa: E402


@pytest.fixture(autouse=True)
def _signing_key(tmp_path_factory, monkeypatch):
    """Keep the per-user signing key out of the real home directory."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
    monkeypatch.delenv("NBGROUPS_SECRET", raising=False)
    for name in ("STORE", "WORKERS", "BACKEND", "PROGRESS", "TIMEOUT", "RETRIES", "CACHED"):
        monkeypatch.delenv(f"NBGROUPS_{name}", raising=False)


class FakeClock:
    """A store clock a test moves forward: TTL expiry without sleeping (Store(clock=...))."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock():
    return FakeClock()


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


def _configured(store_dir, backend):
    api.reset()
    nbgroups.configure(store=str(store_dir), backend=backend, workers=2, progress=False)
    return nbgroups


@pytest.fixture(params=["loky", "sync"])
def nb(request, store_dir):
    """nbgroups on a real store in a temp dir, once on a 2-worker loky pool, once inline."""
    yield _configured(store_dir, request.param)
    api.reset()


@pytest.fixture(params=["loky", "thread", "sync"])
def nb_local(request, store_dir):
    """nbgroups on a real store in a temp dir, on each local backend: a 2-worker
    loky pool, 2 threads, inline (the futures and joblib adapters run on all three)."""
    yield _configured(store_dir, request.param)
    api.reset()


@pytest.fixture
def here(tmp_path):
    """This process's runner on ``tmp_path/store`` (thread backend): the side of the
    dashboard tests whose owner is another process (``dashboard_env.start_owner``)."""
    api.reset()
    nbgroups.configure(store=str(tmp_path / "store"), backend="thread", progress=False)
    yield api.runner()
    api.reset()


@pytest.fixture
def nb_loky(store_dir):
    """nbgroups on a real 2-worker loky pool and a real store in a temp dir."""
    yield _configured(store_dir, "loky")
    api.reset()


# ---------------------------------------------------------------- dask
@pytest.fixture
def ip(nb_loky, tmp_path):
    """A real IPython shell over ``nb_loky``: what its cells define lives in
    ``__main__``, as in a notebook (cloudpickle carries it by value).
    ``LOG`` in its namespace names a file calls may log to."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns["LOG"] = str(tmp_path / "calls.log")
    shell.run_cell("import nbgroups").raise_error()
    yield shell
    InteractiveShell.clear_instance()


@pytest.fixture(scope="module")
def dask_cluster():
    """A 2-process LocalCluster on 127.0.0.1 for one test module: ``(cluster, client)``.

    distributed is imported here, not at conftest import (it is optional and
    heavy); without it the tests using this fixture skip. allowed-failures=1:
    the scheduler gives up on a task after its second worker death (default 3),
    which keeps test_dask's "kills every worker" test short.
    dashboard_address=":0": any free port (None means :8787, which a test run
    in another checkout on the same machine may hold).
    """
    distributed = pytest.importorskip("distributed")
    import dask

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
    removal of a worker it has already dropped (dask/distributed#5407). Tests
    kill workers, so the report can race the cluster's close: the error then
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
