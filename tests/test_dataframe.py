"""fetch_group(g).to_dataframe(): one row per task, one column per keyword parameter."""

import math
import time

import pytest

import nbgroups
from nbgroups.records import TaskList

pd = pytest.importorskip("pandas")


def metrics(lr, depth):
    if depth == 3 and lr > 0.05:
        raise ValueError(f"diverged at lr={lr}")
    return {"loss": lr * depth, "depth_sq": depth * depth}


def halve(x):
    return x / 2


def shape_of(frame, grid):
    return frame.shape, grid.shape


def test_sweep_of_dict_results(nb):
    g = nbgroups.sweep(metrics, "df-sweep", lr=[0.01, 0.1], depth=[2, 3])
    nbgroups.result_group(g, wait=-1)
    df = nbgroups.fetch_group(g).to_dataframe()
    assert len(df) == 4
    # what a reader compares first (parameters, results), the task's identity last
    assert list(df.columns) == ["lr", "depth", "loss", "depth_sq", "success", "error",
                                "time_taken", "attempt_count", "state", "id", "name", "group",
                                "stdout", "stderr", "worker", "memory", "submitted", "started",
                                "stopped"]
    assert list(zip(df["lr"], df["depth"], strict=True)) == [
        (0.01, 2), (0.01, 3), (0.1, 2), (0.1, 3)]  # submission order
    assert list(df["success"]) == [True, True, True, False]
    assert df["loss"].iloc[:3].tolist() == pytest.approx([0.02, 0.03, 0.2])
    assert math.isnan(df["loss"].iloc[3])  # a failure has no result
    assert df["error"].iloc[3] == "ValueError: diverged at lr=0.1"
    assert df["error"].iloc[:3].isna().all()
    assert (df["time_taken"] >= 0).all()
    # the times are dates a reader can read and subtract (UTC)
    assert str(df["started"].dtype) == "datetime64[ns, UTC]"
    assert ((df["stopped"] - df["started"]).dt.total_seconds() >= 0).all()
    assert (df["submitted"] <= df["started"]).all()
    assert (df["attempt_count"] == 1).all()
    assert (df["group"] == "df-sweep").all()
    # the usual pandas follow-ups work on it
    best = df[df["success"]].sort_values("loss").iloc[0]
    assert (best["lr"], best["depth"]) == (0.01, 2)


def test_plain_results_and_positional_arguments(nb):
    for x in (2, 4, 6):
        nbgroups.async_task(halve, x, group="df-plain")
    nbgroups.async_task(halve, "text", group="df-plain")
    nbgroups.result_group("df-plain", wait=-1)
    df = nbgroups.fetch_group("df-plain").to_dataframe()
    assert list(df.columns)[:2] == ["arg", "result"]
    assert df["arg"].tolist() == [2, 4, 6, "text"]
    assert df["result"].iloc[:3].tolist() == [1.0, 2.0, 3.0]
    assert pd.isna(df["result"].iloc[3])
    assert df["error"].iloc[3].startswith("TypeError")
    assert df["success"].tolist() == [True, True, True, False]


def test_retries_show_in_attempt_count(nb, tmp_path):
    marker = tmp_path / "tried"

    def flaky(x, path=str(marker)):
        import os

        if not os.path.exists(path):
            open(path, "w").close()
            raise RuntimeError("first try fails")
        return {"x": x}

    nbgroups.async_task(flaky, 1, group="df-retry", retries=2)
    nbgroups.result_group("df-retry", wait=-1)
    df = nbgroups.fetch_group("df-retry").to_dataframe()
    assert df["attempt_count"].tolist() == [2]
    assert df["x"].tolist() == [1]  # the dict result, expanded
    assert df["success"].tolist() == [True]


def test_parameter_and_result_names_never_clobber_task_columns(nb):
    def echo(name, error, value):
        return {"name": name.upper(), "success": "kept", "value": value}

    nbgroups.sweep(echo, "df-names", name=["a"], error=["e"], value=[1])
    nbgroups.result_group("df-names", wait=-1)
    df = nbgroups.fetch_group("df-names").to_dataframe()
    row = df.iloc[0]
    assert row["name"] == "a"  # the parameter
    assert len(row["task.name"].split("-")) == 4  # the task's derived name
    assert row["param.error"] == "e"
    assert row["error"] is None
    assert (row["result.name"], row["result.success"], row["result.value"]) == ("A", "kept", 1)
    assert bool(row["success"]) is True


def test_empty_list_has_the_documented_columns():
    df = TaskList().to_dataframe()
    assert len(df) == 0
    assert list(df.columns) == ["result", "success", "error", "time_taken", "attempt_count",
                                "state", "id", "name", "group", "stdout", "stderr", "worker",
                                "memory", "submitted", "started", "stopped"]


def test_a_record_shows_each_value_on_one_short_line(nb):
    """A Task shown in a cell names a DataFrame or 2-d array argument by type and
    shape, not by its printed rows; times read as dates."""
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = pd.DataFrame({"a": range(5000)})
    tid = nbgroups.async_task(shape_of, frame, grid=np.zeros((3, 3)), group="df-repr")
    task = nbgroups.fetch(tid, wait=-1)
    text = repr(task)
    assert "\n" not in text and len(text) < 700, text
    assert "args=(<DataFrame (5000, 1)>,)" in text and "'grid': <ndarray (3, 3)>" in text
    assert f"started={time.strftime('%Y-%m-%d', time.localtime(task.started))}" in text
    assert task.call == "shape_of(<DataFrame (5000, 1)>, grid=<ndarray (3, 3)>)"
