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
