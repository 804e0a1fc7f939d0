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


@pytest.fixture
def nb_loky(store_dir):
    """nbgroups on a real 2-worker loky pool and a real store in a temp dir."""
    yield _configured(store_dir, "loky")
    api.reset()
