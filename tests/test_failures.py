"""Failures are data (DESIGN §4): failed records with clear messages; the group goes
on and the pool survives. Loky and sync backends, real store."""

from __future__ import annotations

import copyreg
import os
import threading

import pytest

import nbgroups
from nbgroups import api


class Unpicklable(Exception):
    """An exception whose instances cannot be pickled (a lock inside)."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


class Unrebuildable(Exception):
    """Pickles, but its constructor needs two arguments: unpickling fails."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raise_unpicklable():
    raise Unpicklable("holds a lock")


def raise_unrebuildable():
    raise Unrebuildable("left", "right")


def _gen():
    yield 1


def _check_group_went_on(nb, group, n_ok):
    assert nb.result_group(group, wait=-1) == list(range(n_ok))
    assert nb.count_group(group) == n_ok
    # the pool survived: a fresh task still runs
    assert nb.result(nb.async_task("math.floor", 5.5), wait=-1) == 5


def _submit_around(nb, group, bad, *args):
    """Two good tasks, the bad one, one more good task; returns the bad task's id."""
    nb.async_task(abs, 0, group=group)
    tid = nb.async_task(bad, *args, group=group)
    nb.async_task(abs, 1, group=group)
    nb.async_task(abs, 2, group=group)
    return tid


def test_task_that_raises(nb):
    tid = _submit_around(nb, "f-raise", lambda: int("nope"))
    task = nb.fetch(tid, wait=-1)
    assert task.success is False and isinstance(task.result, ValueError)
    assert "invalid literal" in str(task.result) and "ValueError" in task.traceback
    assert task.attempt_count == 1 and task.error.startswith("ValueError: invalid literal")
    _check_group_went_on(nb, "f-raise", 3)
    assert nb.count_group("f-raise", failures=True) == 1


@pytest.mark.parametrize("make", [threading.Lock, _gen], ids=["lock", "generator"])
def test_unpicklable_result(nb, make):
    tid = _submit_around(nb, "f-unpick", make)
    task = nb.fetch(tid, wait=-1)
    assert task.success is False
    assert isinstance(task.result, nbgroups.TaskError)
    assert task.result.type_name == "UnpicklableResult"
    assert "cannot be pickled" in str(task.result)
    assert type(make()).__name__ in str(task.result)
    _check_group_went_on(nb, "f-unpick", 3)


def test_unpicklable_item_result_in_async_iter(nb):
    tid = nb.async_iter(lambda x: threading.Lock() if x == 2 else x, range(4))
    task = nb.fetch(tid, wait=-1)
    assert task.success is False
    assert task.result[:2] == [0, 1] and task.result[3] == 3
    assert isinstance(task.result[2], nbgroups.TaskError)
    assert "cannot be pickled" in str(task.result[2])


@pytest.mark.parametrize("path,words", [
    ("math.no_such_function", "math.no_such_function"),
    ("no_such_module_xyz.func", "no_such_module_xyz"),
    ("math.pi", "not a callable"),
    ("nosuchbuiltin", "nosuchbuiltin"),
])
def test_dotted_path_that_does_not_resolve(nb, path, words):
    tid = _submit_around(nb, "f-path", path, 1)
    task = nb.fetch(tid, wait=-1)
    assert task.success is False and task.func == path
    assert words in str(task.result) and words in task.traceback
    _check_group_went_on(nb, "f-path", 3)


def test_exception_that_does_not_pickle(nb):
    tid = _submit_around(nb, "f-exc", raise_unpicklable)
    task = nb.fetch(tid, wait=-1)
    assert task.success is False
    exc = task.result
    assert isinstance(exc, nbgroups.TaskError)
    assert exc.type_name.endswith("Unpicklable") and exc.message == "holds a lock"
    assert "raise_unpicklable" in exc.traceback and "raise_unpicklable" in task.traceback
    assert task.error.endswith("Unpicklable: holds a lock")
    _check_group_went_on(nb, "f-exc", 3)


def test_exception_that_pickles_but_does_not_rebuild(nb):
    tid = _submit_around(nb, "f-rebuild", raise_unrebuildable)
    exc = nb.result(tid, wait=-1)
    inline = nb.settings().backend == "sync"
    if inline and Unrebuildable in copyreg.dispatch_table:
        # importing distributed (test_dask) runs tblib's pickling install(), which
        # registers the exception classes that exist by then: if this one did, an
        # inline task's exception rebuilds, and is kept as is
        assert type(exc).__name__ == "Unrebuildable" and str(exc) == "left/right"
    else:
        assert isinstance(exc, nbgroups.TaskError)
        assert exc.type_name.endswith("Unrebuildable") and exc.message == "left/right"
    _check_group_went_on(nb, "f-rebuild", 3)


def test_system_exit_in_a_task_is_a_failure(nb):
    tid = _submit_around(nb, "f-exit", lambda: exec("raise SystemExit(3)"))
    task = nb.fetch(tid, wait=-1)
    assert task.success is False and isinstance(task.result, SystemExit)
    _check_group_went_on(nb, "f-exit", 3)


def test_worker_that_dies_fails_only_its_task(nb_loky):
    nb = nb_loky
    tid = _submit_around(nb, "f-die", lambda: os._exit(7))
    task = nb.fetch(tid, wait=-1)
    assert task.success is False and isinstance(task.result, nbgroups.WorkerDied)
    assert "died" in str(task.result)
    _check_group_went_on(nb, "f-die", 3)
    assert api.runner().restarts >= 1


def test_failing_hook_does_not_stop_the_runner(nb, caplog):
    def bad_hook(task):
        raise RuntimeError("hook broke")

    tid = nb.async_task("math.floor", 1.5, group="f-hook", hook=bad_hook)
    assert nb.result(tid, wait=-1) == 1
    _submit_around(nb, "f-hook2", abs, -7)
    assert nb.result_group("f-hook2", wait=-1) == [0, 7, 1, 2]
