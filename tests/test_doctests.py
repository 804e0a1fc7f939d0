"""The examples in every nbgroups module's docstrings run, as a reader would paste them.

Each module's examples run in a fresh process state (settings re-read from the
environment), on a real loky pool of 2 workers and a store in a temp dir:
``NBGROUPS_STORE`` stands in for the reader's ``./.nbgroups``. A module added to
the package is found by :func:`pkgutil.walk_packages`, so an example written
anywhere cannot rot unnoticed (this is the suite's ``--doctest-modules``,
with the fixture every example needs).
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import threading

import pytest

import nbgroups
from nbgroups import api

MODULES = ["nbgroups", *sorted(
    info.name for info in pkgutil.walk_packages(nbgroups.__path__, "nbgroups.")
)]


def _examples(module_name: str) -> list[doctest.DocTest]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # an optional extra (dask...) not installed
        if exc.name and exc.name.split(".")[0] != "nbgroups" and \
                os.environ.get("CI") not in ("true", "1"):  # CI installs every extra
            pytest.skip(f"{module_name} needs {exc.name}")
        raise
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    # Names the package re-exports from this module are found here, not again
    # under nbgroups (the finder only reports objects defined in the module).
    return [t for t in tests if t.examples]


@pytest.fixture
def reader_env(tmp_path, monkeypatch):
    """What a reader pasting the examples has: default settings, a fresh store."""
    for name in ("BACKEND", "PROGRESS", "TIMEOUT", "RETRIES", "CACHED", "REUSE", "ADDRESS"):
        monkeypatch.delenv(f"NBGROUPS_{name}", raising=False)
    monkeypatch.setenv("NBGROUPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("NBGROUPS_WORKERS", "2")
    api.reset()
    yield
    api.reset()


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, reader_env):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = _examples(module_name)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            for test in tests:
                runner.run(test)
        except BaseException as exc:  # reported below, on the test's thread
            crashed.append(exc)

    # On a thread of its own, as a reader's fresh interpreter: an event loop some
    # earlier test left running on this thread would make asyncio.run() refuse.
    thread = threading.Thread(target=run, name=f"doctest {module_name}")
    thread.start()
    thread.join()
    assert crashed == []
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} failing example(s) in {module_name}"


def test_every_public_name_has_an_example():
    """The API reference promises an example for each name of ``nbgroups.__all__``."""
    without = []
    for name in nbgroups.__all__:
        doc = getattr(nbgroups, name).__doc__ or ""
        if ">>>" not in doc:
            without.append(name)
    assert without == []


def test_modules_are_found():
    assert "nbgroups.api" in MODULES or any(m.startswith("nbgroups.api") for m in MODULES)
    assert "nbgroups.display.formatting" in MODULES


def test_package_docstrings_exist():
    missing = [n for n in nbgroups.__all__ if not getattr(nbgroups, n).__doc__]
    assert missing == []


def test_futures_and_aio_docstring_examples(tmp_path):
    import asyncio
    import concurrent.futures

    from nbgroups import aio, completed, futures

    def run(module):
        globs = {**vars(module), "nbgroups": nbgroups, "asyncio": asyncio}
        return doctest.testmod(module, globs=globs, report=True, optionflags=doctest.ELLIPSIS)

    api.reset()
    api.configure(backend="sync", store=str(tmp_path / "store"), progress=False)
    try:
        tried_all = 0
        for module in (futures, completed, aio):
            # on a thread of its own: asyncio.run() refuses a thread where a loop is
            # marked running (Playwright's sync API does that, in the browser tests)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                failures, tried = pool.submit(run, module).result()
            assert failures == 0, module.__name__
            tried_all += tried
    finally:
        api.reset()
    assert tried_all >= 4, "the futures lost their examples"
