"""The notebooks of ``notebooks/``, run by a real kernel (nbclient), level 2.

Each notebook runs in a fresh ``python3`` kernel with a temp working directory
(its store lands there), and must finish without error. Its saved widget state
(recorded by nbclient while cells ran) must show every progress view in its
final state: the bar full, the counts matching what the notebook computed.
"""

from __future__ import annotations

import ast
import html
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.jupyter_env import REPO_ROOT, run_notebook, widget_states

NOTEBOOKS = REPO_ROOT / "notebooks"
ALL_NOTEBOOKS = sorted(NOTEBOOKS.glob("*.ipynb"))


def execute(name: str | Path, workdir: Path, base: Path) -> Any:
    """Copy a notebook into ``workdir`` and run it there; return the executed notebook.

    The kernel gets the environment conftest's ``_signing_key`` gives tests (which, being
    function-scoped, is not yet in force for module-scoped fixtures): the signing key
    under ``<base>/xdg-config``, no ``NBGROUPS_*`` settings from outside.
    """
    src = NOTEBOOKS / name
    dest = workdir / Path(name).name
    shutil.copy(src, dest)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
        for var in [v for v in os.environ if v.startswith("NBGROUPS_")]:
            mp.delenv(var)
        return run_notebook(dest, workdir, timeout=120)


# ------------------------------------------------------------------ reading widget state


def _refs(value: Any) -> list[str]:
    """Model ids referenced by a ``children``-like state value (``"IPY_MODEL_<id>"``)."""
    if isinstance(value, str):
        return [value[len("IPY_MODEL_"):]] if value.startswith("IPY_MODEL_") else []
    if isinstance(value, list | tuple):
        return [ref for v in value for ref in _refs(v)]
    return []


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup or ""))


def progress_views(nb: Any) -> list[dict[str, Any]]:
    """The nbgroups progress views in an executed notebook's saved widget state.

    A view is the widget tree under a box with the ``nbgroups-progress`` class; for each:
    ``group`` (its bar's title), ``value``/``max``/``bar_style`` of its progress bar, ``counts``
    (``{"done": n, "failed": n, ...}`` read from its labels), ``texts`` (every label and
    title in it, tags stripped).
    """
    models = {m["model_id"]: m for m in widget_states(nb)}
    views = []
    for model in models.values():
        if "nbgroups-progress" not in model["state"].get("_dom_classes", []):
            continue
        seen: list[dict[str, Any]] = []
        todo = [model["model_id"]]
        while todo:
            child = models.get(todo.pop(0))
            if child is None or child in seen:
                continue
            seen.append(child)
            todo.extend(_refs(child["state"].get("children", [])))
        bars = [m for m in seen if m["model_name"] in ("IntProgressModel", "FloatProgressModel")]
        assert len(bars) == 1, f"one progress bar per view, got {bars}"
        labels = [m for m in seen if m["model_name"] in ("HTMLModel", "LabelModel")]
        texts = [_text(m["state"].get("value", "")) for m in labels]
        for m in seen:
            texts.extend(_text(t) for t in m["state"].get("titles", []) or [] if t)
        counts: dict[str, int] = {}
        for text in texts:
            for label, n in re.findall(r"\b(done|failed|running|queued|cancelled)\s+(\d+)", text):
                counts.setdefault(label, int(n))
        bar = bars[0]["state"]
        views.append({
            "group": _text(bar.get("description", "")).strip(),  # the bar's title
            "value": bar["value"],
            "max": bar["max"],
            "bar_style": bar.get("bar_style", ""),
            "counts": counts,
            "texts": texts,
        })
    return views


def outputs_text(cell: Any) -> str:
    """Everything a code cell printed or displayed as text, widgets left out."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif (out["output_type"] in ("execute_result", "display_data")
              and "application/vnd.jupyter.widget-view+json" not in out["data"]):
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def cell_with(nb: Any, snippet: str) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(cells) == 1, f"expected one code cell containing {snippet!r}, got {len(cells)}"
    return cells[0]


def assigned_literal(nb: Any, name: str) -> Any:
    """The literal value of ``NAME = [...]`` in the notebook's code cells."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if line.startswith(f"{name} = "):
                return ast.literal_eval(line.split("=", 1)[1].split("#")[0].strip())
    raise AssertionError(f"no `{name} = ...` in the notebook")


# ------------------------------------------------------------------ every notebook


def test_notebooks_exist():
    assert {p.name for p in ALL_NOTEBOOKS} >= {"quickstart.ipynb", "sweep.ipynb"}


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_clean(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    assert nb.cells[-1].cell_type == "code" and "wait=-1" in nb.cells[-1].source, (
        "the last cell must wait for the notebook's groups, so the saved widget state is final"
    )


DETAILED = ("quickstart.ipynb", "sweep.ipynb")  # run and checked in detail below
OTHER_NOTEBOOKS = [p for p in ALL_NOTEBOOKS if p.name not in DETAILED]


def test_every_notebook_is_run():
    """The detailed tests below run their notebooks; any other notebook in notebooks/
    gets test_other_notebook_runs (defined only when there is one: an empty
    parameter set would be reported as a skip)."""
    names = {p.name for p in ALL_NOTEBOOKS}
    assert set(DETAILED) <= names, "a detailed notebook test names a notebook that is gone"


if OTHER_NOTEBOOKS:
    # A notebook added to notebooks/ must at least run to the end with every
    # progress view complete.
    @pytest.mark.parametrize("path", OTHER_NOTEBOOKS, ids=lambda p: p.stem)
    def test_other_notebook_runs(path, tmp_path, tmp_path_factory):
        nb = execute(path.name, tmp_path, tmp_path_factory.getbasetemp())
        for view in progress_views(nb):
            assert view["value"] == view["max"] > 0, (path.name, view)


# ------------------------------------------------------------------ quickstart


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    return execute("quickstart.ipynb", workdir, tmp_path_factory.getbasetemp()), workdir


def test_quickstart_prints_the_documented_results(quickstart):
    nb, workdir = quickstart
    first = outputs_text(cell_with(nb, "result = result_group('modf', count=4)"))
    assert first.strip() == "[(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]"
    assert outputs_text(cell_with(nb, "successes == also")).strip() == (
        "0 failures; [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]"
    )
    by_name = outputs_text(cell_with(nb, "task = fetch(name)")).splitlines()
    assert re.fullmatch(r"first task of the group: [a-z]+(-[a-z]+){3}", by_name[0]), by_name
    assert by_name[1:] == ["[(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]",
                           "Deleted group modf"]
    cached = outputs_text(cell_with(nb, "a.result_group(count=10)"))
    assert cached.strip() == str(list(range(10)))
    # the store is beside the notebook, where git ignores it; nothing else is left there
    assert sorted(p.name for p in workdir.iterdir()) == [".nbgroups", "quickstart.ipynb"]


def test_quickstart_progress_views_are_final(quickstart):
    nb, _ = quickstart
    views = {v["group"]: v for v in progress_views(nb)}
    assert set(views) == {"modf", "math"}, progress_views(nb)
    # the cached group: ten tasks, all done
    math = views["math"]
    assert math["value"] == math["max"] == 10, math
    assert math["counts"] == {"done": 10, "failed": 0, "running": 0, "queued": 0}, math
    assert math["bar_style"] == "success", math
    # 'modf' had its label deleted by task.group_delete() in a later cell: the view
    # keeps the run it showed (its four results, printed under it) and says so
    modf = views["modf"]
    assert modf["value"] == modf["max"] == 4, modf
    assert modf["counts"] == {"done": 4, "failed": 0, "running": 0, "queued": 0}, modf
    assert any("group deleted" in t for t in modf["texts"]), modf["texts"]


def test_quickstart_rerun_gives_the_same_output(quickstart, tmp_path_factory):
    # Same working directory, so the same store: the groups deleted at the start
    # keep results from adding up.
    nb, workdir = quickstart
    again = execute("quickstart.ipynb", workdir, tmp_path_factory.getbasetemp())
    for before, after in zip(nb.cells, again.cells, strict=True):
        if before.cell_type == "code" and "task = fetch(name)" not in before.source:
            assert outputs_text(after) == outputs_text(before), before.source


# ------------------------------------------------------------------ sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    nb = execute("sweep.ipynb", workdir, tmp_path_factory.getbasetemp())
    k, dt = assigned_literal(nb, "K"), assigned_literal(nb, "DT")
    points = [(a, b) for a in k for b in dt]
    return {
        "nb": nb,
        "workdir": workdir,
        "points": points,
        # the notebook's model: k <= 0 is invalid, k * dt >= 2 is unstable with 1 substep
        "invalid": [(a, b) for a, b in points if a <= 0],
        "unstable": [(a, b) for a, b in points if a > 0 and a * b >= 2],
    }


def test_sweep_grid_has_both_kinds_of_failure(sweep):
    assert len(sweep["points"]) >= 20
    assert sweep["invalid"] and sweep["unstable"]


def test_sweep_first_run_fails_exactly_the_bad_configurations(sweep):
    nb = sweep["nb"]
    failed = len(sweep["invalid"]) + len(sweep["unstable"])
    out = outputs_text(cell_with(nb, "results = nbgroups.result_group('grid', wait=-1)"))
    assert out.strip() == f"{len(sweep['points']) - failed} points succeeded, {failed} failed"
    table = outputs_text(cell_with(nb, "failed[['k', 'dt', 'error']]"))
    assert table.count("ValueError: k must be > 0") == len(sweep["invalid"]), table
    assert table.count("ValueError: unstable step") == len(sweep["unstable"]), table


def test_sweep_dataframe_has_one_row_per_point(sweep):
    out = outputs_text(cell_with(sweep["nb"], "df.pivot("))
    lines = out.strip().splitlines()
    # header lines, then one row per k value
    rows = [ln for ln in lines if re.match(r"^\d+\.\d+\s", ln)]
    assert len(rows) == len({k for k, _ in sweep["points"]}), out


def test_sweep_retry_fixes_the_unstable_points(sweep):
    nb = sweep["nb"]
    failed = len(sweep["invalid"]) + len(sweep["unstable"])
    assert outputs_text(cell_with(nb, "retry_group('grid')")).startswith(
        f"re-submitted {failed} failed points")
    left = outputs_text(cell_with(nb, "df.loc[~df['success']"))
    assert left.count("ValueError: k must be > 0") == len(sweep["invalid"]), left
    assert "unstable" not in left, left


def _runs(sweep) -> list[tuple[int, int]]:
    """(done, failed) at the end of the first run and of the retry."""
    n, invalid, unstable = (len(sweep[k]) for k in ("points", "invalid", "unstable"))
    return [(n - invalid - unstable, invalid + unstable), (n - invalid, invalid)]


def test_sweep_progress_views_show_the_final_counts(sweep):
    views = [v for v in progress_views(sweep["nb"]) if v["group"] == "grid"]
    # one shown by the sweep cell, one by retry_group('grid'): each keeps its own run
    assert len(views) == 2, progress_views(sweep["nb"])
    n = len(sweep["points"])
    for view, (done, failed) in zip(views, _runs(sweep), strict=True):
        assert view["value"] == view["max"] == n, view
        assert view["counts"]["done"] == done, view
        assert view["counts"]["failed"] == failed, view
        assert view["counts"].get("running", 0) == view["counts"].get("queued", 0) == 0, view
        assert view["bar_style"] == "danger", view
        # the failure list names the failing tasks' exception
        errors = [t for t in view["texts"] if "ValueError: k must be > 0" in t]
        assert errors, view["texts"]


def test_sweep_final_cell_reports_settled_counts(sweep):
    out = outputs_text(sweep["nb"].cells[-1]).splitlines()
    n, invalid = len(sweep["points"]), len(sweep["invalid"])
    grid = [line for line in out if line.startswith("GroupCounts('grid', ")]
    assert len(grid) == 1, out
    # times as a reader reads them, not epoch floats
    assert re.search(r"first_submitted=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}, ", grid[0]), grid
    assert f"submitted={n}," in grid[0] and f"done={n - invalid}," in grid[0], grid
    assert f"failed={invalid}," in grid[0], grid
    for line in out:
        assert "running=0," in line and "queued=0," in line, line


def test_sweep_leaves_only_its_store_beside_it(sweep):
    # the solver settings file is in a temporary directory; the store is ./.nbgroups,
    # which git ignores
    assert sorted(p.name for p in sweep["workdir"].iterdir()) == [".nbgroups", "sweep.ipynb"]


def test_sweep_reuse_runs_only_the_new_points(sweep):
    nb = sweep["nb"]
    first = outputs_text(cell_with(nb, "dt=[0.05, 0.1], paths=[200], reuse=True"))
    again = outputs_text(cell_with(nb, "dt=[0.05, 0.1, 0.2], paths=[200], reuse=True"))
    assert first.splitlines()[0] == "4 tasks, 4 done, 0 reused", first
    assert again.splitlines()[0] == "6 tasks, 6 done, 4 reused", again
    # each view shows its cell's run, as printed under it
    views = [v for v in progress_views(nb) if v["group"] == "fine"]
    assert [(v["value"], v["max"], v["counts"]["done"]) for v in views] == [
        (4, 4, 4), (6, 6, 6)], views
    assert [any("reused 4" in t for t in v["texts"]) for v in views] == [False, True]
    assert all(view["bar_style"] == "success" for view in views), views


# ------------------------------------------------------------------ read without a kernel


def _view_outputs(nb: Any) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]


def _without_widget_state(nb: Any) -> Any:
    """The notebook as JupyterLab saves it by default (widget state not saved)."""
    import copy

    saved = copy.deepcopy(nb)
    saved.metadata.pop("widgets", None)
    return saved


def test_saved_sweep_carries_a_static_rendering_of_each_view(sweep):
    n, invalid = len(sweep["points"]), len(sweep["invalid"])
    outputs = _view_outputs(sweep["nb"])
    grid = [o for o in outputs if o["data"]["text/plain"].startswith("grid ")]
    assert len(grid) == 2, [o["data"]["text/plain"] for o in outputs]
    for out, (done, failed) in zip(grid, _runs(sweep), strict=True):
        text = out["data"]["text/plain"]  # replaced when its run ended: not the first state
        assert text.splitlines()[0].startswith("grid 100%|") and \
            f"{n}/{n} [done {done}, failed {failed}," in text, text
        assert "HBox(" not in text
        assert text.count("ValueError: k must be > 0") == invalid, text
        # each failure named by its call, so a reader sees which points failed
        assert text.count("failed simulate(k=0.0, dt=") == invalid, text
        page = out["data"]["text/html"]
        assert f'<progress value="{n}" max="{n}">' in page and f"done <b>{done}</b>" in page
        assert "<details><summary>" in page and "Traceback" in page


def test_saved_sweep_converted_to_html_shows_the_final_counts(sweep):
    from nbconvert import HTMLExporter

    n = len(sweep["points"])
    page, _ = HTMLExporter().from_notebook_node(_without_widget_state(sweep["nb"]))
    assert "HBox(children" not in page
    statics = re.findall(r'<div class="nbgroups-static">.*?</div>\s*(?=<|$)', page, re.S)
    grid = [s for s in statics if s.startswith('<div class="nbgroups-static"><b>grid</b>')]
    assert len(grid) == 2, statics
    for block, (done, failed) in zip(grid, _runs(sweep), strict=True):
        assert f"<b>100%</b> {n}/{n}" in block and f"done <b>{done}</b>" in block
        assert f"failed <b>{failed}</b>" in block and "ValueError: k must be &gt; 0" in block
        assert block.count("<code>simulate(k=0.0, dt=") == len(sweep["invalid"]), block
    fine = [s for s in statics if s.startswith('<div class="nbgroups-static"><b>fine</b>')]
    assert len(fine) == 2 and "done <b>4</b>" in fine[0] and "reused" not in fine[0], fine
    assert "done <b>6</b>" in fine[1] and "reused <b>4</b>" in fine[1], fine
    # Markdown (previews, nbconvert --to markdown) takes the same HTML
    from nbconvert import MarkdownExporter

    text, _ = MarkdownExporter().from_notebook_node(_without_widget_state(sweep["nb"]))
    assert '<div class="nbgroups-static"><b>grid</b>' in text and "HBox(" not in text
