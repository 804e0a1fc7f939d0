"""Issue 13, items 11 and 14: arguments that used to go wrong far from the call.

* A misspelt option (``grop='x'``) used to go to the callable as a keyword:
  the task landed in no group and failed in the worker (or, with
  ``**kwargs``, ran outside the group). Now it is a ``TypeError`` at the call
  naming it and the nearest option, where the callable's signature can be read.
* A group name with a lone surrogate (``os.fsdecode`` of a non-UTF-8 file
  name) made every later write of the kernel fail, other groups' included.
  Now it is refused at the call.

Real store in a temp dir, real loky pool and the inline backend (the ``nb``
fixture); every task appends to a marker file per run, so "nothing ran" is
counted, not inferred from results.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import textwrap

import pytest

from nbgroups import api
from nbgroups.arguments import check_keywords
from nbgroups.errors import ArgumentTypeError, ConfigurationError, NbgroupsError

G = "rel-args"


def _marking(marks):
    """A task that records each of its runs as a line of ``marks`` (works in workers)."""
    path = str(marks)

    def task(x, scale=1):
        with open(path, "a") as f:
            f.write(f"{x}\n")
        return x * scale

    return task


def _runs(marks) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


def _assert_nothing_stored(nb):
    api.runner().flush()
    assert nb.list_groups() == []
    assert nb.count_group(G) == 0
    assert not api.runner().pending_ids()


# ---------------------------------------------------------------- item 14
def test_misspelt_option_is_a_type_error_naming_the_nearest_option(nb, tmp_path):
    marks = tmp_path / "marks"
    task = _marking(marks)
    with pytest.raises(TypeError, match=r"'grop'.*did you mean the option group=\?") as info:
        nb.async_task(task, 1, grop=G)
    assert isinstance(info.value, NbgroupsError)
    assert "task" in str(info.value) and "nothing was submitted" in str(info.value)
    _assert_nothing_stored(nb)
    # the same call spelt right runs once, and only it ran
    tid = nb.async_task(task, 1, group=G, scale=3)
    assert nb.result(tid, wait=30_000) == 3
    assert _runs(marks) == ["1"]


def test_misspelt_option_of_async_task_builder(nb, tmp_path):
    marks = tmp_path / "marks"
    task = _marking(marks)
    with pytest.raises(ArgumentTypeError, match=r"'timout'.*option timeout="):
        nb.AsyncTask(task, 2, group=G, timout=5)
    _assert_nothing_stored(nb)
    a = nb.AsyncTask(task, 2, group=G, scale=2)
    a.run()
    assert a.result(wait=30_000) == 4
    assert _runs(marks) == ["2"]


def test_a_wrong_keyword_that_is_no_option_names_the_nearest_parameter(nb, tmp_path):
    task = _marking(tmp_path / "marks")
    with pytest.raises(TypeError, match=r"'scal'.*did you mean scale=\?.*takes scale, x"):
        nb.async_task(task, 1, group=G, scal=2)
    _assert_nothing_stored(nb)


def test_dotted_path_the_kernel_can_import_is_checked(nb, tmp_path, monkeypatch):
    (tmp_path / "relmod_kw.py").write_text(textwrap.dedent("""
        def power(base, exp=2):
            return base ** exp
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the workers import it too
    with pytest.raises(TypeError, match=r"relmod_kw.power\(\).*'grup'.*option group="):
        nb.async_task("relmod_kw.power", 3, grup=G)
    with pytest.raises(TypeError, match=r"math.modf\(\).*'retry'.*option retries="):
        nb.async_task("math.modf", 1.5, retry=2)
    _assert_nothing_stored(nb)
    assert nb.result(nb.async_task("math.modf", 2.5, group=G), wait=30_000) == (0.5, 2.0)
    sys.modules.pop("relmod_kw", None)


def test_sweep_axis_the_callable_cannot_take_is_refused(nb, tmp_path):
    task = _marking(tmp_path / "marks")
    with pytest.raises(TypeError, match=r"'timout'.*option timeout="):
        nb.sweep(task, G, x=[1, 2], timout=[5])
    with pytest.raises(TypeError, match=r"'scales'.*did you mean scale=\?"):
        nb.sweep(task, G, x=[1, 2], scales=[5])
    _assert_nothing_stored(nb)
    assert nb.result_group(nb.sweep(task, G, x=[1, 2], scale=[3]), wait=30_000) == [3, 6]


def test_unreadable_signatures_are_left_to_the_worker(nb):
    """A dotted path this process cannot import, and a callable taking ``**kwargs``,
    are not second-guessed: the keyword goes to the call, as before."""
    def anything(**kw):
        return sorted(kw)

    tid = nb.async_task(anything, group=G, grop="x")
    assert nb.result(tid, wait=30_000) == ["grop"]
    tid = nb.async_task("no_such_module_rel.f", group=G, grop="x")
    task = nb.fetch(tid, wait=30_000)
    assert task.success is False and "no_such_module_rel" in task.error


def _with_verbose(f):
    @functools.wraps(f)
    def wrapper(*args, verbose=False, **kwargs):
        return ("verbose", f(*args, **kwargs)) if verbose else f(*args, **kwargs)

    return wrapper


def test_a_decorated_callable_is_judged_by_its_wrapper(nb):
    """functools.wraps copies the inner signature; the wrapper takes more keywords."""
    wrapped = _with_verbose(pow)
    assert nb.result(nb.async_task(wrapped, 2, 3, group=G, verbose=True), wait=30_000) == \
        ("verbose", 8)


def test_q_options_keywords_go_to_func_and_are_checked_too(nb, tmp_path):
    task = _marking(tmp_path / "marks")
    with pytest.raises(TypeError, match="'colour'"):
        nb.async_task(task, 1, q_options={"group": G}, colour="red")
    _assert_nothing_stored(nb)
    tid = nb.async_task(task, 5, q_options={"group": G}, scale=2)
    assert nb.result(tid, wait=30_000) == 10


def test_signature_is_read_once_per_callable_and_keyword_names():
    """The hot path: a 10,000-call loop reads the signature once."""
    reads = []

    class Counted:
        @property
        def __signature__(self):
            reads.append(1)
            return inspect.Signature([inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY)])

        def __call__(self, *, x):
            return x

    f = Counted()
    for i in range(10_000):
        check_keywords(f, {"x": i})
    assert len(reads) == 1
    with pytest.raises(TypeError, match="'y'"):
        check_keywords(f, {"y": 1})
    with pytest.raises(TypeError, match="'y'"):  # a refusal is not remembered as accepted
        check_keywords(f, {"y": 1})
    assert len(reads) == 3


# ---------------------------------------------------------------- item 11
SURROGATE = os.fsdecode(b"run-\xff")  # 'run-\udcff'


def test_group_with_a_lone_surrogate_is_refused_and_harms_no_other_group(nb, tmp_path):
    marks = tmp_path / "marks"
    task = _marking(marks)
    first = nb.async_task(task, 1, group=G)
    with pytest.raises(ValueError, match=r"group must be text that UTF-8 can encode") as info:
        nb.async_task(task, 2, group=SURROGATE)
    assert isinstance(info.value, ConfigurationError)
    with pytest.raises(ValueError, match="task_name"):
        nb.async_task(task, 3, group=G, task_name=SURROGATE)
    with pytest.raises(ValueError, match="group"):
        nb.sweep(task, SURROGATE, x=[4])
    with pytest.raises(ValueError, match="group_id"):
        nb.result_group(SURROGATE)
    second = nb.async_task(task, 5, group=G)
    assert nb.result_group(G, wait=30_000) == [1, 5]
    assert nb.fetch(first).success and nb.fetch(second).success
    assert nb.list_groups() == [G]
    assert sorted(_runs(marks)) == ["1", "5"]
    assert nb.fetch(SURROGATE) is None  # no task can have that name: nothing found


def test_misspelt_option_in_a_real_ipython_shell(nb, tmp_path):
    """As in a notebook: the function is defined in a cell (``__main__``), the
    misspelt call fails in its own cell with the hint, and nothing is stored."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nbgroups")
        assert shell.run_cell(f"import nbgroups\n"
                              f"def f(x):\n"
                              f"    with open({str(tmp_path / 'marks')!r}, 'a') as m:\n"
                              f"        m.write('x')\n"
                              f"    return x\n").success
        r = shell.run_cell("nbgroups.async_task(f, 1, grop='g')")
        assert isinstance(r.error_in_exec, ArgumentTypeError)
        assert "did you mean the option group=?" in str(r.error_in_exec)
        with pytest.raises(ArgumentTypeError, match="option timeout="):  # %%group: the same
            shell.run_cell_magic("group", "g", "nbgroups.async_task(f, 2, timout=3)")
        _assert_nothing_stored(nb)
        assert not (tmp_path / "marks").exists()
        assert shell.run_cell("nbgroups.result(nbgroups.async_task(f, 3, group='g'), "
                              "wait=30000)").result == 3
    finally:
        shell.run_line_magic("unload_ext", "nbgroups")
        InteractiveShell.clear_instance()
