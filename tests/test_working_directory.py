"""A notebook changes its working directory (``os.chdir``, ``%cd``) after the
pool started: its tasks run in the new one, as the calls it makes itself do.
(Before, loky workers stayed where they were started, and a relative path that
opened in the notebook was a FileNotFoundError in every task.)"""

from __future__ import annotations

import os
import textwrap

import nbgroups


def test_tasks_follow_the_notebooks_chdir(ip, tmp_path, monkeypatch):
    first, data = tmp_path / "first", tmp_path / "data"
    first.mkdir()
    data.mkdir()
    (data / "values.txt").write_text("1 2 3")
    monkeypatch.chdir(first)
    ip.run_cell(textwrap.dedent("""
        import os
        def read(name):
            with open(name) as f:
                return os.getcwd(), sum(map(int, f.read().split()))
        nbgroups.result(nbgroups.async_task(os.getcwd, group="cwd"), wait=-1)  # pool up
    """)).raise_error()
    ip.run_cell(f"os.chdir({str(data)!r})").raise_error()
    out = ip.run_cell("nbgroups.result(nbgroups.async_task(read, 'values.txt', "
                      "group='cwd'), wait=-1)")
    out.raise_error()
    assert out.result == (str(data), 6)
    ip.run_cell(f"os.chdir({str(first)!r})").raise_error()  # and back
    out = ip.run_cell("nbgroups.result(nbgroups.async_task(os.getcwd, group='cwd'), wait=-1)")
    assert out.result == str(first)
    assert nbgroups.count_group("cwd", failures=True) == 0
    assert os.getcwd() == str(first)
