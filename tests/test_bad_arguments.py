"""Bad arguments fail at the call (DESIGN §4), name the argument, and store nothing."""

from __future__ import annotations

import pytest

import nbgroups
from nbgroups import api

G = "bad-args"

SUBMISSIONS = [
    # (call, exception, words the message must contain)
    (lambda nb: nb.async_task(42, group=G), TypeError, "func"),
    (lambda nb: nb.async_task(None, group=G), TypeError, "func"),
    (lambda nb: nb.async_task("", group=G), ValueError, "func"),
    (lambda nb: nb.async_task("math..modf", group=G), ValueError, "func"),
    (lambda nb: nb.async_task("not a path", group=G), ValueError, "dotted path"),
    (lambda nb: nb.async_task("math.modf", 1, group=3), TypeError, "group"),
    (lambda nb: nb.async_task("math.modf", 1, group=""), ValueError, "group"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, cached="yes"), TypeError, "cached"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, cached=0), ValueError, "cached"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, cached=-3), ValueError, "cached"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, timeout=0), ValueError, "timeout"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, timeout="1"), TypeError, "timeout"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, retries=-1), ValueError, "retries"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, retries=1.5), TypeError, "retries"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, hook=5), TypeError, "hook"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, hook="nosuch.path"), ValueError,
     "hook 'nosuch.path' cannot be resolved"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, hook="math.pi"), TypeError,
     "hook 'math.pi' names float"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, save="no"), TypeError, "save"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, sync=1), TypeError, "sync"),
    (lambda nb: nb.async_task("math.modf", 1, group=G, task_name=""), ValueError, "task_name"),
    (lambda nb: nb.async_task("math.modf", 1, q_options={"group": G, "colour": 1}), TypeError,
     "colour"),
    (lambda nb: nb.async_task("math.modf", 1, q_options=[("group", G)]), TypeError, "q_options"),
    (lambda nb: nb.async_iter("math.modf", 5, group=G), TypeError, "args_iter"),
    (lambda nb: nb.async_iter("math.modf", "abc", group=G), TypeError, "args_iter"),
    (lambda nb: nb.async_iter(3, [1], group=G), TypeError, "func"),
    (lambda nb: nb.async_iter("math.modf", [1], group=G, unknown=1), TypeError, "unknown"),
    (lambda nb: nb.sweep("math.modf", G, x=5), TypeError, "x"),
    (lambda nb: nb.sweep("math.modf", G), ValueError, "keyword list"),
    (lambda nb: nb.sweep("math.modf", 7, x=[1]), TypeError, "group"),
    (lambda nb: nb.AsyncTask("math.modf", 1, group=G, retries=-2), ValueError, "retries"),
    (lambda nb: nb.AsyncTask(object(), group=G), TypeError, "func"),
]


@pytest.mark.parametrize("call,exc,words", SUBMISSIONS)
def test_bad_submission_raises_and_stores_nothing(nb, call, exc, words):
    with pytest.raises(exc, match=words):
        call(nb)
    api.runner().flush()
    assert nb.count_group(G) == 0
    assert nb.result_group(G) is None
    assert nb.result_group(G, cached=True) is None
    assert nb.list_groups() == []
    assert not api.runner().pending_ids()


READS = [
    (lambda nb: nb.result_group(G, wait=-5), ValueError, "wait"),
    (lambda nb: nb.result_group(G, wait="x"), TypeError, "wait"),
    (lambda nb: nb.result_group(G, wait=True), TypeError, "wait"),
    (lambda nb: nb.result_group(G, count=0), ValueError, "count"),
    (lambda nb: nb.result_group(G, count=-1), ValueError, "count"),
    (lambda nb: nb.result_group(G, count="3"), TypeError, "count"),
    (lambda nb: nb.result_group(3), TypeError, "group_id"),
    (lambda nb: nb.result_group(""), ValueError, "group_id"),
    (lambda nb: nb.result_group(G, failures="yes"), TypeError, "failures"),
    (lambda nb: nb.result_group(G, cached="x"), TypeError, "cached"),
    (lambda nb: nb.fetch_group(G, wait=-2), ValueError, "wait"),
    (lambda nb: nb.fetch_group(G, count=0), ValueError, "count"),
    (lambda nb: nb.fetch_group(None), TypeError, "group_id"),
    (lambda nb: nb.count_group(["g"]), TypeError, "group_id"),
    (lambda nb: nb.delete_group(G, tasks="all"), TypeError, "tasks"),
    (lambda nb: nb.delete_group(1), TypeError, "group_id"),
    (lambda nb: nb.cancel_group(b"g"), TypeError, "group_id"),
    (lambda nb: nb.retry_group(None), TypeError, "group_id"),
    (lambda nb: nb.resume_group(""), ValueError, "group_id"),
    (lambda nb: nb.result(12), TypeError, "task_id"),
    (lambda nb: nb.result("x", wait=-5), ValueError, "wait"),
    (lambda nb: nb.fetch("x", wait="soon"), TypeError, "wait"),
    (lambda nb: nb.fetch("x", cached=0), ValueError, "cached"),
]


@pytest.mark.parametrize("call,exc,words", READS)
def test_bad_read_arguments(nb, call, exc, words):
    with pytest.raises(exc, match=words):
        call(nb)


CONFIGS = [
    ({"colour": "red"}, TypeError, "colour"),
    ({"workers": 0}, ValueError, "workers"),
    ({"workers": "2"}, TypeError, "workers"),
    ({"backend": "celery"}, ValueError, "backend"),
    ({"progress": "loud"}, ValueError, "progress"),
    ({"progress": True}, ValueError, "progress"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"retries": -1}, ValueError, "retries"),
    ({"cached": 0}, ValueError, "cached"),
    ({"cached": 1.5}, TypeError, "cached"),
    ({"cache_ttl": 0}, ValueError, "cache_ttl"),
    ({"store": ""}, TypeError, "store"),
    ({"reuse": "yes"}, TypeError, "reuse"),
]


@pytest.mark.parametrize("changes,exc,words", CONFIGS)
def test_bad_configure_keeps_settings(nb, changes, exc, words):
    before = nb.settings()
    with pytest.raises(exc, match=words):
        nb.configure(**changes)
    assert nb.settings() is before


def test_unwritable_store_is_a_clear_store_error(nb, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(nbgroups.StoreError, match="store directory"):
        nb.configure(store=str(blocker / "sub"))


def test_errors_are_nbgroups_errors_or_builtins():
    assert issubclass(nbgroups.ConfigurationError, ValueError)
    assert issubclass(nbgroups.StoreError, OSError)
    assert issubclass(nbgroups.TaskTimeout, TimeoutError)
    for cls in (nbgroups.ConfigurationError, nbgroups.StoreError, nbgroups.SignatureError,
                nbgroups.TaskError, nbgroups.TaskTimeout, nbgroups.WorkerDied,
                nbgroups.TaskCancelled):
        assert issubclass(cls, nbgroups.NbgroupsError)


def test_every_error_and_warning_is_in_the_tree():
    """errors.py holds one tree: each exception under NbgroupsError, each warning
    under NbgroupsWarning (ReuseWarning included); and keys' internal Unkeyable too."""
    import inspect

    from nbgroups import errors
    from nbgroups.keys import Unkeyable

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if c.__module__ == errors.__name__]
    assert nbgroups.ReuseWarning in classes
    for cls in classes:
        root = nbgroups.NbgroupsWarning if issubclass(cls, Warning) else nbgroups.NbgroupsError
        assert issubclass(cls, root), cls
    assert issubclass(Unkeyable, nbgroups.NbgroupsError)


# Built-in exceptions nbgroups may still raise itself, each for a reason of its own
BUILTIN_RAISES_ALLOWED = {
    ("store/base.py", "NotImplementedError"),  # the abstract primitives of a store
    ("executors/base.py", "NotImplementedError"),  # and of a backend
    ("completed.py", "StopIteration"),  # the iterator protocols
    ("completed.py", "StopAsyncIteration"),
    ("__init__.py", "AttributeError"),  # module __getattr__'s protocol
    ("cli.py", "FloatingPointError"),  # the demo sweep's task failing as such sweeps do
    ("snapshot.py", "TypeError"),  # pickling an Unpicklable fails as pickling does
    ("records.py", "ImportError"),  # to_dataframe() without pandas installed
    ("capture.py", "TypeError"),  # a task writing bytes to sys.stdout fails as a real stream does
}


def test_nbgroups_raises_no_bare_builtin_error():
    """Every ``raise SomeBuiltin(...)`` in nbgroups/ is in the list above (re-raises of
    a caught exception are not constructions and pass): new ones use errors.py's tree."""
    import ast
    import builtins
    from pathlib import Path

    root = Path(nbgroups.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            exc = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(exc, ast.Call):
                exc = exc.func
            if isinstance(exc, ast.Name) and isinstance(getattr(builtins, exc.id, None), type) \
                    and issubclass(getattr(builtins, exc.id), BaseException):
                found.add((path.relative_to(root).as_posix(), exc.id))
    assert found - BUILTIN_RAISES_ALLOWED == set()


# ---------------------------------------------------------------- found in review
def test_option_memo_tells_true_from_one(nb):
    """True == 1 and hash alike: a memo keyed on values alone mixed them up."""
    nb.async_task("math.floor", 1.5, sync=True)
    with pytest.raises(TypeError, match="sync"):
        nb.async_task("math.floor", 1.5, sync=1)
    a = api.SESSION.options({"cached": True})[0]
    b = api.SESSION.options({"cached": 1})[0]
    assert (a.ttl, b.ttl) == (nb.settings().cache_ttl, 1)


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -float("inf")])
def test_wait_must_be_finite(nb, wait):
    with pytest.raises(ValueError, match="wait"):
        nb.result_group("g", wait=wait)


def test_progress_zero_is_not_false():
    with pytest.raises(ValueError, match="progress"):
        nbgroups.settings().replace(progress=0)


@pytest.mark.parametrize(("env", "field", "value"), [
    ({"NBGROUPS_CACHED": "1"}, "cached", True),
    ({"NBGROUPS_CACHED": "off"}, "cached", False),
    ({"NBGROUPS_CACHED": "30"}, "cached", 30),
    ({"NBGROUPS_REUSE": "yes"}, "reuse", True),
    ({"NBGROUPS_REUSE": "0"}, "reuse", False),
])
def test_environment_flags(env, field, value):
    from nbgroups.config import from_environment

    assert getattr(from_environment(env), field) == value


def test_environment_flag_that_is_not_one():
    from nbgroups.config import from_environment

    with pytest.raises(nbgroups.ConfigurationError, match="NBGROUPS_REUSE"):
        from_environment({"NBGROUPS_REUSE": "maybe"})
