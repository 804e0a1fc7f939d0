"""The examples in nbgroups.api's docstrings run, on the sync backend and a temp store."""

from __future__ import annotations

import doctest

import nbgroups
from nbgroups import api
from nbgroups.api import handle, manage, read, session, submit


def test_api_docstring_examples(tmp_path):
    api.reset()
    globs = {**vars(api), "tmp_store": tmp_path / "store"}
    api.configure(backend="sync", store=str(tmp_path / "store"), progress=False)
    failures = tried = 0
    try:
        for module in (api, session, submit, read, manage, handle):  # doctest: own names only
            f, t = doctest.testmod(module, globs=globs, verbose=False, report=True,
                                   optionflags=doctest.ELLIPSIS)
            failures += f
            tried += t
    finally:
        api.reset()
    assert tried >= 5, "the api lost its examples"
    assert failures == 0


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
