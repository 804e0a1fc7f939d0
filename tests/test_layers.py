"""Imports go one way (STYLE habit 1): a lower layer never imports a higher one.

joblib_backend > futures/aio > completed (the adapters for concurrent.futures, asyncio
and joblib) > api (its ``__init__`` > handle > read > submit/manage > session) > reuse >
runner (the façade) > inline > control > completion > recovery > dispatch/pages >
live/stores/executors (a package)/shutdown/arguments > store/worker/jobs > records >
outcome > serialize/names/config/keys/monitor > errors; display, magics, cli, dashboard
(and the package's own ``__init__``/``__main__``) sit at the edge and may import the api. The api
package's modules are ranked one by one (``api.session``...); other subpackages
(display, store, executors) are one layer each. Imports inside functions count too: a
lazy import still ties the layers together.
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
    "signalsafe": 0,  # waking threads from the main thread, Ctrl-C safe (stdlib only)
    "names": 1, "config": 1, "serialize": 1, "keys": 1, "monitor": 1,
    "capture": 1, "tracebacks": 1,  # worker side, standard library only
    "triage": 1,  # failures by cause: duck-typed records
    "values": 1.5,  # large arguments stored by digest: the snapshot, store and worker use it
    "outcome": 2, "reporting": 2, "timeline": 2, "snapshot": 2, "pool_compat": 2,
    "funcstate": 2,  # what a notebook function's pickle takes, watched (pages use it)
    "records": 3,
    "forward": 3,  # live output: worker sinks (monitor, reporting), the kernel's hub
    "store": 4, "worker": 4, "jobs": 4,
    "executors": 5, "shutdown": 5, "arguments": 5, "live": 5, "stores": 5,
    "dispatch": 6, "pages": 6,  # the runner's parts, each above what it calls
    "recovery": 7,
    "completion": 8,
    "control": 9,
    "cancelling": 10,  # cancel requests between processes: control, over the store's board
    "presence": 10,  # what a runner runs now, published in the store for other processes
    "inline": 10,
    "runner": 11,
    "reuse": 12,
    "api.session": 13,  # the kernel's state: settings, runner, defaults, listeners
    "api.submit": 14, "api.manage": 14,
    "api.read": 15,  # Task's group helpers use manage
    "api.handle": 16,  # AsyncTask: submit, read and manage
    "api.rerun": 16,  # debug(): a stored call run again here; uses read
    "api": 17,  # the package: gathers the names
    "completed": 18,  # the adapters for concurrent.futures, asyncio, joblib, on the api
    "futures": 19, "aio": 19,
    "joblib_backend": 20,
    "display": 21, "magics": 21, "cli": 21, "dashboard": 21, "__init__": 21, "__main__": 21,
}
EDGE = {"display", "magics", "cli", "dashboard", "__init__", "__main__"}


API = PKG / "api"


def module_of(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    if rel.parts[0] == "api" and len(rel.parts) > 1 and rel.parts[1] != "__init__":
        return f"api.{rel.parts[1]}"  # nbgroups/api/read.py -> api.read
    return rel.parts[0]  # nbgroups/display/widget.py -> display


def _layer_of(target: list[str]) -> str:
    """The layer of ``nbgroups.X[.Y]``: ``api.Y`` for a module of the api package."""
    if target[1] == "api" and len(target) > 2 and (API / f"{target[2]}.py").exists():
        return f"api.{target[2]}"
    return target[1]


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
            if len(target) > 2 or (len(target) == 2 and target[1] != "api"):
                found.add(_layer_of(target))
            elif len(target) == 2:  # from nbgroups.api import read, SESSION
                found.update(_layer_of([*target, a.name]) for a in node.names)
            else:  # from . import api, names
                found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "nbgroups" and len(parts) > 1:
                    found.add(_layer_of(parts))
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
        ok = RANK[target] < RANK[me]
        assert ok, f"nbgroups/{path.relative_to(PKG)} ({me}) imports {target}: a higher layer"
        if RANK[me] <= RANK["api"]:  # the adapters above the api build on it
            assert target not in {"api", "display", "magics", "cli"}
        assert target not in {"display", "magics", "cli"}


def test_checker_sees_relative_and_lazy_imports():
    """The check itself works: top-level, function-level and ``from . import`` forms."""
    # a subpackage's module: ``..names`` is nbgroups.names, ``.layout`` its own package
    assert {"names", "errors", "records", "serialize", "store"} <= \
        nbgroups_imports(PKG / "store" / "base.py")
    assert {"reuse", "runner", "config"} <= nbgroups_imports(API / "session.py")  # reuse: lazy
    assert {"api.session", "api.manage", "names"} <= nbgroups_imports(API / "read.py")
    assert {"api.read", "api.submit", "api.session"} <= nbgroups_imports(API / "__init__.py")


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
