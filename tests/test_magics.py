"""%load_ext nbgroups in a real in-process IPython shell: magics, auto progress, UsageError."""

from __future__ import annotations

import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbgroups
from nbgroups import api, display


@pytest.fixture
def ip(nb):
    """A real IPython shell with the extension loaded, widgets as the progress view."""
    display.reset()
    api.configure(progress="widget")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbgroups")
    shell.run_cell("import nbgroups\n"
                   "def f(x):\n"
                   "    if x == 3:\n"
                   "        raise ValueError('three')\n"
                   "    return x\n")
    yield shell
    shell.run_line_magic("unload_ext", "nbgroups")
    InteractiveShell.clear_instance()
    display.reset()


def run(shell, code):
    r = shell.run_cell(code)
    assert r.success, r.error_in_exec or r.error_before_exec
    return r.result


def test_import_nbgroups_stays_light():
    code = ("import sys, nbgroups; nbgroups.group_counts; "
            "print('IPython' in sys.modules, 'ipywidgets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_table_of_groups(ip):
    run(ip, "nbgroups.sweep(f, 'ta', x=range(6)); nbgroups.sweep(f, 'tb', x=[1])\n"
            "nbgroups.result_group('ta', wait=60000); nbgroups.result_group('tb', wait=60000)")
    table = ip.run_line_magic("nbgroups", "")
    rows = {r["group"]: r for r in table.rows}
    assert set(rows) == {"ta", "tb"}
    assert {k: rows["ta"][k] for k in ("submitted", "done", "failed", "running", "queued")} == \
        {"submitted": 6, "done": 5, "failed": 1, "running": 0, "queued": 0}
    assert rows["tb"]["done"] == 1 and ":" in rows["tb"]["elapsed"]
    text = repr(table)
    assert text.splitlines()[0].split() == ["group", "submitted", "done", "failed", "cancelled",
                                            "running", "queued", "reused", "elapsed"]
    assert "<td>ta</td>" in table._repr_html_()


def test_first_submission_in_a_cell_shows_one_view_per_group(ip):
    run(ip, "for i in range(3):\n"
            "    nbgroups.async_task(f, i, group='auto1')\n"
            "nbgroups.async_task(f, 9, group='auto2')\n"
            "nbgroups.async_task(f, 9)\n")  # no group: no view
    assert len(display.views("auto1")) == 1 and len(display.views("auto2")) == 1
    assert len(display.views()) == 2
    run(ip, "nbgroups.async_task(f, 4, group='auto1')")  # a new cell: a new view
    assert len(display.views("auto1")) == 2
    run(ip, "nbgroups.result_group('auto1', wait=60000)")  # end of cell: views final
    view = display.view_of("auto1")
    assert (view.adapter.bar.value, view.adapter.bar.max) == (4, 4)
    assert view.adapter.bar.bar_style == "success"


def test_no_auto_view_when_progress_is_off(ip):
    api.configure(progress=False)
    run(ip, "nbgroups.async_task(f, 1, group='quiet')")
    assert display.views("quiet") == []


def test_group_cell_magic_sets_default_group(ip):
    result = ip.run_cell_magic("group", "cellg", "a = nbgroups.async_task(f, 1)\n"
                                                  "b = nbgroups.async_task(f, 3)\n"
                                                  "len(nbgroups.result_group('cellg', "
                                                  "failures=True, wait=60000))")
    assert result == 2
    ns = ip.user_ns
    assert nbgroups.fetch(ns["a"]).group == "cellg" and nbgroups.fetch(ns["b"]).group == "cellg"
    assert display.view_of("cellg") is not None
    run(ip, "c = nbgroups.async_task(f, 1)")  # outside the cell magic: no default group
    assert nbgroups.fetch(ip.user_ns["c"], wait=60000).group is None


def test_group_cell_magic_reuse_option_and_via_run_cell(ip):
    run(ip, "%%group reused --reuse\n"
            "from nbgroups import api\n"
            "grp, opts = api.SESSION.defaults()\n")
    assert ip.user_ns["opts"] == {"reuse": True} and ip.user_ns["grp"] == "reused"
    assert api.SESSION.defaults() == (None, {})  # restored after the cell


@pytest.mark.parametrize("line", ["", "a b", "--reuse", "a --bogus", "'unclosed"])
def test_group_cell_magic_usage_errors(ip, line):
    with pytest.raises(UsageError, match="usage: %%group NAME"):
        ip.run_cell_magic("group", line, "x = 1")


def test_progress_subcommand_shows_a_view(ip):
    run(ip, "nbgroups.sweep(f, 'pg', x=[1, 2]); nbgroups.result_group('pg', wait=60000)")
    display.reset()
    assert ip.run_line_magic("nbgroups", "progress pg") is None
    view = display.view_of("pg")
    assert view is not None and view.adapter.bar.value == 2


def test_cancel_retry_resume_delete_subcommands(ip, capsys):
    run(ip, "nbgroups.sweep(f, 'sub', x=range(5)); nbgroups.result_group('sub', wait=60000)")
    ip.run_line_magic("nbgroups", "cancel sub")
    assert "cancelled 0 tasks of 'sub'" in capsys.readouterr().out
    ip.run_line_magic("nbgroups", "retry sub")
    assert "re-submitted 1 failed tasks of 'sub'" in capsys.readouterr().out
    run(ip, "nbgroups.result_group('sub', wait=60000)")
    c = nbgroups.group_counts("sub")
    assert (c.done, c.failed, c.settled) == (4, 1, True)  # f(3) fails again
    ip.run_line_magic("nbgroups", "resume sub")
    assert "re-submitted 0 unfinished tasks" in capsys.readouterr().out
    ip.run_line_magic("nbgroups", "delete sub")
    assert "deleted group 'sub'; its 5 tasks stay" in capsys.readouterr().out
    assert "sub" not in nbgroups.list_groups()
    run(ip, "nbgroups.sweep(f, 'sub2', x=range(2)); nbgroups.result_group('sub2', wait=60000)")
    ip.run_line_magic("nbgroups", "delete sub2 --tasks")
    assert "deleted group 'sub2' and its 2 tasks" in capsys.readouterr().out


def test_group_subcommands_on_the_cache_layer(ip, capsys):
    run(ip, "nbgroups.sweep(f, 'cg', x=range(5), cached=True)\n"
            "nbgroups.result_group('cg', wait=60000, cached=True)")
    with pytest.raises(UsageError, match="there is a cached group 'cg': add --cached"):
        ip.run_line_magic("nbgroups", "progress cg")
    display.reset()
    ip.run_line_magic("nbgroups", "progress cg --cached")
    view = display.view_of("cg")
    assert view is not None and view.ttl is not None and view.adapter.bar.value == 5
    ip.run_line_magic("nbgroups", "cancel cg --cached")
    assert "cancelled 0 tasks of 'cg'" in capsys.readouterr().out
    ip.run_line_magic("nbgroups", "retry cg --cached")
    assert "re-submitted 1 failed tasks of 'cg'" in capsys.readouterr().out
    run(ip, "nbgroups.result_group('cg', wait=60000, cached=True)")
    assert nbgroups.count_group("cg", failures=True, cached=True) == 1  # f(3) fails again
    with pytest.raises(UsageError, match="cached tasks cannot be resumed"):
        ip.run_line_magic("nbgroups", "resume cg --cached")
    ip.run_line_magic("nbgroups", "delete cg --tasks --cached")
    assert "deleted group 'cg' and its 5 tasks" in capsys.readouterr().out
    assert nbgroups.result_group("cg", cached=True) is None
    with pytest.raises(UsageError, match="no cached group named 'cg'"):
        ip.run_line_magic("nbgroups", "cancel cg --cached")


def test_workers_and_store_subcommands(ip, tmp_path, capsys):
    ip.run_line_magic("nbgroups", "workers 3")
    assert nbgroups.settings().workers == 3
    other = tmp_path / "other-store"
    ip.run_line_magic("nbgroups", f"store '{other}'")
    assert nbgroups.settings().store == str(other) and other.is_dir()
    assert "workers: 3" in capsys.readouterr().out
    assert nbgroups.list_groups() == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown sub-command 'frobnicate'"),
        ("delete", "expected one GROUP"),
        ("delete a b", "expected one GROUP"),
        ("delete nosuch", "no group named 'nosuch'"),
        ("progress nosuch", "no group named 'nosuch'"),
        ("cancel", "expected one GROUP"),
        ("retry", "expected one GROUP"),
        ("resume", "expected one GROUP"),
        ("workers", "expected one N"),
        ("workers many", "workers must be an int >= 1"),
        ("workers 0", "workers must be an int >= 1"),
        ("store", "expected one PATH"),
        ("'unclosed", "usage: %nbgroups"),
        ("backend", "expected a backend name"),
        ("backend ray", "expected a backend name"),
        ("backend dask", "dask needs one ADDRESS"),
        ("backend loky tcp://127.0.0.1:1", "no ADDRESS expected"),
    ],
)
def test_line_magic_usage_errors(ip, line, message):
    run(ip, "nbgroups.sweep(f, 'exists', x=[1]); nbgroups.result_group('exists', wait=60000)")
    with pytest.raises(UsageError, match=message) as info:
        ip.run_line_magic("nbgroups", line)
    assert "\n" not in str(info.value) and "usage:" in str(info.value)


def test_unknown_flag_is_a_usage_error(ip):
    run(ip, "nbgroups.sweep(f, 'flagged', x=[1]); nbgroups.result_group('flagged', wait=60000)")
    with pytest.raises(UsageError, match="unknown option --hard"):
        ip.run_line_magic("nbgroups", "delete flagged --hard")
    assert "flagged" in nbgroups.list_groups()


def test_usage_error_shown_in_cell_without_traceback(ip, capsys):
    r = ip.run_cell("%nbgroups frobnicate")
    assert isinstance(r.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "UsageError: unknown sub-command 'frobnicate'" in err and "Traceback" not in err


def test_unload_stops_auto_views(ip):
    ip.run_line_magic("unload_ext", "nbgroups")
    run(ip, "nbgroups.async_task(f, 1, group='after-unload')")
    assert display.views("after-unload") == []
    ip.run_line_magic("load_ext", "nbgroups")


def test_retry_and_cancel_from_python_show_the_view_as_a_submission_does(ip):
    run(ip, "nbgroups.sweep(f, 'py', x=range(5)); nbgroups.result_group('py', wait=60000)")
    shown = len(display.views("py"))
    run(ip, "nbgroups.retry_group('py')")  # f(3) fails: one task re-submitted
    assert len(display.views("py")) == shown + 1
    run(ip, "nbgroups.result_group('py', wait=60000)")
    view = display.view_of("py")
    assert (view.adapter.bar.value, view.adapter.bar.max) == (5, 5)
    assert view.adapter.bar.bar_style == "danger"  # f(3) failed again
    run(ip, "nbgroups.resume_group('py'); nbgroups.cancel_group('py')")  # nothing to do
    assert len(display.views("py")) == shown + 1  # nothing re-submitted: no new view
    ip.run_line_magic("nbgroups", "retry py")  # the magic, in the same cell: one view
    run(ip, "nbgroups.result_group('py', wait=60000)")  # f(3) has failed again
    run(ip, "nbgroups.retry_group('py'); nbgroups.result_group('py', wait=60000)")
    assert len(display.views("py")) == shown + 3
    if api.settings().backend == "sync":
        return  # inline: nothing is ever queued, so nothing can be cancelled
    run(ip, "import time\n"
            "nbgroups.sweep(lambda x: time.sleep(0.2), 'slow', x=range(40))")
    assert len(display.views("slow")) == 1
    run(ip, "n = nbgroups.cancel_group('slow')")  # another cell: the view shows the cancel
    assert ip.user_ns["n"] > 0 and len(display.views("slow")) == 2
    run(ip, "nbgroups.result_group('slow', wait=60000)")
    view = display.view_of("slow")
    assert view.meter.cancelled == ip.user_ns["n"] and view.meter.settled
    assert view.adapter.bar.bar_style == "warning"


def test_a_view_keeps_its_run_when_the_group_runs_again_or_is_deleted(ip):
    run(ip, "nbgroups.sweep(f, 'keep', x=[0, 1]); nbgroups.result_group('keep', wait=60000)")
    first = display.view_of("keep")
    assert (first.adapter.bar.value, first.meter.done) == (2, 2)
    run(ip, "nbgroups.sweep(f, 'keep', x=[2, 3, 4]); nbgroups.result_group('keep', wait=60000)")
    second = display.view_of("keep")
    assert second is not first and (second.meter.submitted, second.meter.done) == (5, 4)
    assert (first.meter.submitted, first.meter.done, first.adapter.bar.max) == (2, 2, 2)
    assert first.frozen and not first.active
    # Retry failed, clicked on the second view: it follows its own re-run
    second.adapter.retry_button.click()
    run(ip, "nbgroups.result_group('keep', wait=60000)")
    assert (second.meter.done, second.meter.failed) == (4, 1)  # f(3) fails again
    assert first.meter.submitted == 2
    # the label deleted in a later cell: each view keeps what it showed, and says so
    run(ip, "nbgroups.delete_group('keep')")
    for view, done in ((first, 2), (second, 4)):
        assert view.meter.deleted and view.meter.done == done, view
        assert view.adapter.bar.value > 0
        assert "group deleted" in view.adapter.counts.value
    assert second.adapter.retry_button.disabled and second.adapter.cancel_button.disabled
    # a view made while its group runs follows it to the end, after its cell ended
    run(ip, "nbgroups.sweep(f, 'later', x=range(6))")
    run(ip, "nbgroups.result_group('later', wait=60000)")
    view = display.view_of("later")
    assert (view.meter.done, view.meter.failed, view.meter.settled) == (5, 1, True)
