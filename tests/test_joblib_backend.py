"""The joblib backend ``'nbgroups'`` through joblib's own API, and scikit-learn on it.

Real joblib (``Parallel``, ``parallel_config``), real scikit-learn
(``GridSearchCV``, ``cross_val_score``, ``cross_validate``): the scores must be
the ones joblib's loky backend gives, and every call a row of the group.
"""

from __future__ import annotations

import math

import pytest

joblib = pytest.importorskip("joblib")
sklearn = pytest.importorskip("sklearn")

from joblib import Parallel, delayed  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate  # noqa: E402

import nbgroups.joblib_backend  # noqa: E402, F401 - registers 'nbgroups'
from nbgroups import api  # noqa: E402
from nbgroups.errors import ArgumentTypeError  # noqa: E402


@pytest.fixture
def nb(nb_local):
    """nbgroups on each local backend (conftest's nb_local)."""
    return nb_local


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=120, n_features=8, random_state=0)


def inner_parallel(n):
    """A Parallel inside a task: must run in the task itself."""
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return type(backend).__name__, sum(Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(n)))


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


def test_parallel_calls_are_tasks_of_the_group(nb):
    with joblib.parallel_config(backend="nbgroups", group="jl"):
        out = Parallel(n_jobs=-1)(delayed(math.modf)(i + 0.5) for i in range(40))
    assert out == [math.modf(i + 0.5) for i in range(40)]
    tasks = nb.fetch_group("jl")
    assert len(tasks) == 40 and all(t.success for t in tasks)  # one task per call
    assert [t.args for t in tasks] == [(i + 0.5,) for i in range(40)]
    assert tasks[0].func == "math.modf"


def test_options_go_to_the_tasks_and_are_checked(nb):
    with joblib.parallel_config(backend="nbgroups", group="jl-opts", retries=1):
        out = Parallel(n_jobs=2, return_as="generator")(delayed(abs)(-i) for i in range(5))
        assert list(out) == [0, 1, 2, 3, 4]
    assert nb.count_group("jl-opts") == 5
    with pytest.raises(ArgumentTypeError, match="unknown option"), \
            joblib.parallel_config(backend="nbgroups", nonsense=1):
        pass


def test_n_jobs_minus_one_means_the_configured_workers(nb):
    with joblib.parallel_config(backend="nbgroups"):
        assert joblib.effective_n_jobs(-1) == 2
        assert joblib.effective_n_jobs(3) == 3


def test_nested_parallel_runs_sequentially_in_the_task(nb):
    with joblib.parallel_config(backend="nbgroups", group="jl-nested"):
        out = Parallel(n_jobs=2)(delayed(inner_parallel)(n) for n in (3, 4))
    assert out == [("SequentialBackend", 3), ("SequentialBackend", 6)]


def test_a_failure_raises_and_cancels_the_rest(nb):
    with pytest.raises(ValueError, match="bad 3"), \
            joblib.parallel_config(backend="nbgroups", group="jl-fail"):
        Parallel(n_jobs=2, batch_size=1)(delayed(fail_on)(i, 3) for i in range(200))
    nb.result_group("jl-fail", wait=60_000)
    c = nb.group_counts("jl-fail")
    assert c.failed == 1
    assert c.finished + c.cancelled == c.submitted  # none left behind
    if api.settings().backend != "sync":
        assert c.submitted < 200  # joblib stopped dispatching at the failure


def test_gridsearch_scores_equal_lokys(nb, data):
    X, y = data
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    with joblib.parallel_config(backend="nbgroups", group="cv"):
        ours = GridSearchCV(LogisticRegression(max_iter=200), grid, cv=3, n_jobs=2).fit(X, y)
    theirs = GridSearchCV(LogisticRegression(max_iter=200), grid, cv=3, n_jobs=2).fit(X, y)
    assert list(ours.cv_results_["mean_test_score"]) == \
        list(theirs.cv_results_["mean_test_score"])
    assert ours.best_params_ == theirs.best_params_
    fits = nb.fetch_group("cv")
    assert len(fits) == 4 * 3  # each fit of each split (the refit runs in the kernel)
    assert fits[0].func.endswith("_fit_and_score")
    assert all(f.success and f.time_taken() is not None for f in fits)
    # the fit's parameters are among its recorded arguments
    params = [f.kwargs.get("parameters") for f in fits if f.kwargs]
    assert {"C": 0.01} in params and {"C": 10.0} in params


def test_cross_val_score_and_cross_validate(nb, data):
    X, y = data
    model = LogisticRegression(max_iter=200)
    with joblib.parallel_config(backend="nbgroups", group="cvs"):
        ours = cross_val_score(model, X, y, cv=4, n_jobs=-1)
        ours_cv = cross_validate(model, X, y, cv=4, n_jobs=2)
    assert list(ours) == list(cross_val_score(model, X, y, cv=4, n_jobs=2))
    assert list(ours_cv["test_score"]) == list(ours)
    assert nb.count_group("cvs") == 8
