"""Imports go one way (STYLE habit 1): a lower layer never imports a higher one.

api > reuse > runner > recovery/control/completion/dispatch >
executors/dask_backend/shutdown/arguments > store/worker/jobs >
serialize/records/names/config/keys > errors; display, magics, cli, dashboard (and the package's
own ``__init__``/``__main__``) sit at the edge and may import the api. Imports inside
functions count too: a lazy import still ties the layers together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nbgroups"

RANK = {
    "errors": 0,
    "names": 1, "records": 1, "config": 1, "serialize": 1, "keys": 1,
    "store": 2, "worker": 2, "jobs": 2,
    "executors": 3, "dask_backend": 3, "shutdown": 3, "arguments": 3,
    "recovery": 4, "control": 4, "completion": 4, "dispatch": 4,  # the runner's mixins
    "runner": 5,
    "reuse": 6,
    "api": 7,
    "display": 8, "magics": 8, "cli": 8, "dashboard": 8, "__init__": 8, "__main__": 8,
}
EDGE = {"display", "magics", "cli", "dashboard", "__init__", "__main__"}
# Same-rank imports that are part of the design: executors picks the dask backend
# by name (lazily), the dask backend subclasses executors.Executor.
ALLOWED_SIDEWAYS = {("executors", "dask_backend"), ("dask_backend", "executors")}


def module_of(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return rel.parts[0]  # nbgroups/display/widget.py -> display


def nbgroups_imports(path: Path) -> set[str]:
    """Top-level nbgroups modules imported anywhere in ``path`` (relative or absolute)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["nbgroups", *path.relative_to(PKG).parent.parts]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            else:
                target = (node.module or "").split(".")
            if target[0] != "nbgroups":
                continue
            if len(target) > 1:
                found.add(target[1])
            else:  # from . import api, names
                found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "nbgroups" and len(parts) > 1:
                    found.add(parts[1])
    return found


FILES = sorted(PKG.rglob("*.py"))


def test_every_module_has_a_rank():
    assert {module_of(f) for f in FILES} <= set(RANK), "give the new module a layer in RANK"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_import_of_a_higher_layer(path):
    me = module_of(path)
    for target in nbgroups_imports(path):
        if target == me or target not in RANK:
            continue
        if me in EDGE:
            continue  # the edge may use anything below it
        ok = RANK[target] < RANK[me] or (me, target) in ALLOWED_SIDEWAYS
        assert ok, f"nbgroups/{path.relative_to(PKG)} ({me}) imports {target}: a higher layer"
        assert target not in {"api", "display", "magics", "cli"}


def test_checker_sees_relative_and_lazy_imports():
    """The check itself works: top-level, function-level and ``from . import`` forms."""
    # a subpackage's module: ``..names`` is nbgroups.names, ``.layout`` its own package
    assert {"names", "errors", "records", "serialize", "store"} <= \
        nbgroups_imports(PKG / "store" / "base.py")
    assert {"reuse", "runner", "names"} <= nbgroups_imports(PKG / "api.py")  # reuse is lazy


def loaded_after(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``imports``."""
    code = f"import sys\n{imports}\nprint([m for m in {modules!r} if m in sys.modules])\n"
    return _python(code)


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(PKG.parent), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_nbgroups_stays_light():
    assert loaded_after("import nbgroups", (
        "IPython", "ipywidgets", "pandas", "distributed", "dask", "loky",
        "nbgroups.display", "nbgroups.magics")) == "[]"


def test_a_worker_imports_no_api():
    """Every pool worker imports nbgroups.worker (hence the package): the API,
    the runner and the store must not come with it (~60 ms of a cold first result)."""
    assert loaded_after("import nbgroups.worker", (
        "nbgroups.api", "nbgroups.runner", "nbgroups.store", "nbgroups.records",
        "diskcache")) == "[]"


def test_lazy_api_names_resolve_whatever_was_imported_first():
    """The package's API names load on first use; a submodule imported first (as
    ``from nbgroups import api`` does with all of them) must not shadow one."""
    assert _python(
        "from nbgroups import api\n"
        "import nbgroups\n"
        "assert callable(nbgroups.settings) and nbgroups.settings().workers >= 1\n"
        "assert all(not type(getattr(nbgroups, n)).__name__ == 'module' "
        "for n in nbgroups.__all__)\n"
        "assert set(nbgroups.__all__) <= set(dir(nbgroups))\n"
        "print('ok')\n"
    ) == "ok"
