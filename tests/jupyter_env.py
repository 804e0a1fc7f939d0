"""Test harness for real Jupyter clients: nbclient kernels and JupyterLab in Chromium.

Registered as a pytest plugin by ``tests/conftest.py`` (``pytest_plugins``), so its
fixtures are available to every test; the plain helpers are imported from here::

    from tests.jupyter_env import run_notebook, widget_states, open_notebook_in_lab, ...

Recipe: /work/shared/TESTING-JUPYTER.md.  Three rules it encodes:

* Jupyter/IPython state lives in per-session temp dirs (``jupyter_dirs``, autouse):
  no user config, kernelspec, workspace or history leaks in, and the ``python3``
  kernelspec always launches ``sys.executable``.
* A notebook's last cell must block until its widgets are final, or nbclient stores
  stale widget state (it only records comm messages while a cell runs).
* Each browser test opens a uniquely named copy of its notebook (a fresh kernel) and
  deletes its session at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ARTIFACTS_DIR",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "REPO_ROOT",
    "LabServer",
    "cell_error_outputs",
    "no_running_loop",
    "copy_notebook",
    "open_notebook_in_lab",
    "read_progress_bars",
    "run_all_cells",
    "run_notebook",
    "save_screenshot",
    "wait_for_all_cells_run",
    "wait_for_kernel_idle",
    "wait_for_progress_bars",
    "watch_progress_bars",
    "widget_states",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
CHROMIUM = os.environ.get("NBGROUPS_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1700}
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"

# JupyterLab settings defaults applied to every server we start: no news pop-up,
# no update check (both would otherwise cover the notebook or reach the network).
LAB_SETTING_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


# --------------------------------------------------------------------------- pytest hooks


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    # Expose each phase's report on the item, so browser_page can screenshot failures.
    report = yield
    setattr(item, f"_nbg_report_{report.when}", report)
    return report


# --------------------------------------------------------------------------- Jupyter dirs


@dataclass(frozen=True)
class JupyterDirs:
    root: Path
    config: Path
    data: Path
    runtime: Path
    ipython: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "JUPYTER_CONFIG_DIR": str(self.config),
            "JUPYTER_DATA_DIR": str(self.data),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "IPYTHONDIR": str(self.ipython),
        }


@pytest.fixture(scope="session", autouse=True)
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterDirs]:
    """Per-session JUPYTER_CONFIG_DIR / DATA / RUNTIME and IPYTHONDIR, set in os.environ.

    Autouse: every test (in-process IPython shells included) runs without user state.
    The ``python3`` kernelspec is written into the temp data dir (searched first), so
    it launches this interpreter whatever other kernelspecs the machine has.
    """
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    dirs = JupyterDirs(
        root=root,
        config=root / "config",
        data=root / "data",
        runtime=root / "runtime",
        ipython=root / "ipython",
    )
    for p in (dirs.config, dirs.data, dirs.runtime, dirs.ipython):
        p.mkdir(parents=True, exist_ok=True)
    (dirs.data / "kernels").mkdir()
    # frozen_modules off, as ipykernel's own install() does (debugpy warns otherwise).
    write_kernel_spec(
        path=str(dirs.data / "kernels" / "python3"),
        python_arguments=["-Xfrozen_modules=off"] if sys.version_info >= (3, 11) else [],
    )
    (dirs.config / "labconfig").mkdir()
    # Honoured by jupyterlab_server (ConfigManager "labconfig" over jupyter_config_path()).
    (dirs.config / "labconfig" / "default_setting_overrides.json").write_text(
        json.dumps(LAB_SETTING_OVERRIDES, indent=1)
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in dirs.env.items():
            mp.setenv(key, value)
        mp.delenv("JUPYTER_PATH", raising=False)
        mp.delenv("JUPYTER_CONFIG_PATH", raising=False)
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences the path-migration warning
        # In a venv jupyter_core searches <sys.prefix>/share/jupyter before the user dirs
        # (whose kernels/python3 says argv "python"); make the temp dirs win.
        mp.setenv("JUPYTER_PREFER_ENV_PATH", "0")
        yield dirs


def no_running_loop() -> None:
    """Fail fast if this thread has a running asyncio loop.

    jupyter_client's sync API would then send every call to jupyter_core's one
    background runner thread, shared by all later tests: one abandoned call there
    hangs them all. A sync Playwright left running is the usual cause.
    """
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"a running asyncio loop in the test thread ({loop!r}): "
                       "is a sync Playwright session still open?")


def _check_python3_kernelspec() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    exe = spec.argv[0]
    # jupyter_client itself replaces a bare "python"/"python3"/"python3.X" by sys.executable.
    v = sys.version_info
    if exe in {"python", f"python{v[0]}", f"python{v[0]}.{v[1]}"}:
        exe = sys.executable
    if os.path.realpath(exe) != os.path.realpath(sys.executable):
        raise RuntimeError(
            f"kernelspec python3 resolves to {spec.argv[0]!r}, not {sys.executable!r} "
            f"(from {spec.resource_dir}); is the jupyter_dirs fixture active?"
        )


# --------------------------------------------------------------------------- nbclient


def run_notebook(
    path: str | os.PathLike[str] | Any,
    workdir: str | os.PathLike[str],
    timeout: int = 180,
    env: dict[str, str] | None = None,
) -> Any:
    """Execute a notebook in a fresh ``python3`` kernel; return the executed NotebookNode.

    ``path`` is an .ipynb file or a NotebookNode (not modified: a copy is executed).
    ``workdir`` is the kernel's working directory; ``timeout`` is per cell, seconds;
    ``env`` adds/overrides variables of the kernel's environment (os.environ + env).
    A failing cell raises ``nbclient.exceptions.CellExecutionError``.  Widget state is
    stored in ``nb.metadata["widgets"]`` (see ``widget_states``).
    """
    import nbformat
    from nbclient import NotebookClient

    if isinstance(path, (str, os.PathLike)):
        nb = nbformat.read(os.fspath(path), as_version=4)
    else:
        nb = nbformat.from_dict(json.loads(json.dumps(path)))
    _check_python3_kernelspec()
    no_running_loop()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": os.fspath(workdir)}},
        store_widget_state=True,
        shutdown_kernel="immediate",
    )
    kernel_env = None if env is None else {**os.environ, **env}
    if kernel_env is None:
        client.execute()
    else:
        client.execute(env=kernel_env)
    return nb


def widget_states(nb: Any) -> list[dict[str, Any]]:
    """The stored widget models of an executed notebook.

    One ``{"model_id", "model_name", "state"}`` dict per model, e.g.
    ``[w for w in widget_states(nb) if w["model_name"] == "IntProgressModel"]``.
    """
    store = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE_MIME, {})
    return [
        {
            "model_id": model_id,
            "model_name": model.get("model_name"),
            "state": dict(model.get("state", {})),
        }
        for model_id, model in store.get("state", {}).items()
    ]


# --------------------------------------------------------------------------- JupyterLab server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab server (see the ``jupyterlab_server`` fixture)."""

    url: str  # http://127.0.0.1:<port>  (no trailing slash)
    token: str
    root_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """Call the REST API (``path`` like ``/api/sessions``); return decoded JSON or None."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def lab_url(self, relpath: str) -> str:
        return f"{self.url}/lab/tree/{relpath}?reset&token={self.token}"

    def sessions(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/sessions")

    def delete_session(self, session_id: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):  # 404: already gone
            self.api("DELETE", f"/api/sessions/{session_id}")

    def delete_sessions_for(self, relpath: str) -> int:
        """Delete every session (and so its kernel) whose notebook is ``relpath``."""
        n = 0
        for s in self.sessions():
            if s.get("path") == relpath:
                self.delete_session(s["id"])
                n += 1
        return n

    def copy_notebook(
        self, src: str | os.PathLike[str] | Any, stem: str | None = None, clear_outputs: bool = True
    ) -> str:
        """Copy ``src`` (file or NotebookNode) into root_dir under a unique name."""
        return copy_notebook(src, self.root_dir, stem, clear_outputs)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


def copy_notebook(
    src: str | os.PathLike[str] | Any,
    dest_dir: str | os.PathLike[str],
    stem: str | None = None,
    clear_outputs: bool = True,
) -> str:
    """Write a uniquely named copy of ``src`` (an .ipynb path or a NotebookNode) into
    ``dest_dir``; return its file name (relative path), e.g. ``progress-1a2b3c4d.ipynb``.

    A missing kernelspec is set to ``python3`` so JupyterLab never asks for a kernel.
    ``clear_outputs`` (default) drops outputs, execution counts and saved widget state,
    so what the page shows afterwards comes from this run only."""
    import nbformat

    if isinstance(src, (str, os.PathLike)):
        nb = nbformat.read(os.fspath(src), as_version=4)
        stem = stem or Path(src).stem
    else:
        nb = nbformat.from_dict(json.loads(json.dumps(src)))
        stem = stem or "notebook"
    nb.metadata.setdefault(
        "kernelspec",
        {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
    )
    if clear_outputs:
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
    name = f"{stem}-{uuid.uuid4().hex[:8]}.ipynb"
    nbformat.write(nb, os.path.join(os.fspath(dest_dir), name))
    return name


def _stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    children = []
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        pass
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # jupyter_server shuts its kernels down
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Kernels run in their own sessions (jupyter_client start_new_session): reap leftovers.
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()


@pytest.fixture(scope="session")
def jupyterlab_server(
    jupyter_dirs: JupyterDirs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """A JupyterLab server on 127.0.0.1:<free port>, root_dir a session temp dir.

    Yields a ``LabServer`` (``.url``, ``.token``, ``.root_dir``, ``.api()``,
    ``.copy_notebook()``, ``.delete_sessions_for()``, ``.log_path``).  The news pop-up
    and update check are off (labconfig/default_setting_overrides.json in the temp
    JUPYTER_CONFIG_DIR).  The whole process group is stopped at teardown.
    """
    root = tmp_path_factory.mktemp("lab-root")
    log_path = tmp_path_factory.mktemp("lab-log") / "jupyterlab.log"
    token = secrets.token_hex(16)
    last_error = ""
    for _attempt in range(2):  # a second try covers a lost race for the free port
        port = _free_port()
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=root,
            )
        server = LabServer(
            url=f"http://127.0.0.1:{port}", token=token, root_dir=root, log_path=log_path, proc=proc
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.api("GET", "/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError) as e:
                last_error = repr(e)
                time.sleep(0.2)
        else:
            _stop_process_group(proc)
            last_error = f"exit={proc.returncode} {last_error}\n{server.log_tail()}"
            continue
        try:
            yield server
        finally:
            with contextlib.suppress(Exception):
                for s in server.sessions():
                    server.delete_session(s["id"])
            _stop_process_group(proc)
        return
    raise RuntimeError(f"JupyterLab did not start: {last_error}")


# --------------------------------------------------------------------------- browser


@pytest.fixture
def _chromium_browser() -> Iterator[Any]:
    """Headless Chromium under Playwright's sync API, for one test.

    Not shared across tests: while a sync Playwright runs, the test thread has a
    running asyncio loop (Playwright's, in a greenlet), so jupyter_client's sync
    calls in every later test would go through jupyter_core's one background
    runner thread; a call abandoned there (a test timing out) blocks every
    kernel test after it (seen in CI: 28 kernel tests timed out in a row).
    """
    if not os.path.exists(CHROMIUM):
        reason = (
            f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package "
            "(bash scripts/test.sh does that as root); `playwright install` cannot work here"
        )
        if os.environ.get("NBGROUPS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " [NBGROUPS_REQUIRE_BROWSER=1]", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


@pytest.fixture
def browser_page(_chromium_browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Playwright (sync API) page in headless Debian Chromium, viewport 1280x1700.

    Skips only when the Chromium binary is absent (fails instead when
    NBGROUPS_REQUIRE_BROWSER=1, as in CI).  One browser per test (see
    ``_chromium_browser``).  On test failure a screenshot ``FAILED-<test>.png`` goes
    to test-artifacts/.
    """
    context = _chromium_browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        _screenshot_if_failed(request, page)
        context.close()


def _screenshot_if_failed(request: pytest.FixtureRequest, page: Any) -> None:
    node = request.node
    rep = getattr(node, "_nbg_report_call", None)
    if rep is not None and rep.failed and not getattr(node, "_nbg_failure_shot", False):
        node._nbg_failure_shot = True
        with contextlib.suppress(Exception):
            save_screenshot(page, "FAILED-" + node.name)


@pytest.fixture
def lab_notebook(
    _chromium_browser: Any,
    browser_page: Any,
    jupyterlab_server: LabServer,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., str]]:
    """``open_copy(src, stem=None, clear_outputs=True) -> relpath``: copy a notebook (path
    or NotebookNode) into the server under a unique name, open it in ``browser_page`` and
    wait for its kernel to be idle.  The sessions of every copy are deleted at teardown."""
    # (_chromium_browser first: without Chromium we skip before starting JupyterLab.)
    opened: list[str] = []

    def open_copy(src: Any, stem: str | None = None, clear_outputs: bool = True) -> str:
        relpath = jupyterlab_server.copy_notebook(src, stem, clear_outputs)
        opened.append(relpath)
        open_notebook_in_lab(browser_page, jupyterlab_server, relpath)
        return relpath

    yield open_copy
    _screenshot_if_failed(request, browser_page)  # before the kernel goes away
    for relpath in opened:
        with contextlib.suppress(Exception):
            jupyterlab_server.delete_sessions_for(relpath)


_STATUS_IDLE = re.compile(r"\|\s*Idle\s*$")


def wait_for_kernel_idle(page: Any, timeout: float = 90_000) -> None:
    """Wait until the status bar's kernel item reads ``<kernel> | Idle``."""
    page.locator("#jp-main-statusbar .jp-StatusBar-TextItem").filter(
        has_text=_STATUS_IDLE
    ).first.wait_for(state="visible", timeout=timeout)


def open_notebook_in_lab(
    page: Any, server: LabServer, relpath: str, timeout: float = 120_000
) -> None:
    """Open ``/lab/tree/<relpath>?reset`` and wait for the notebook and an idle kernel."""
    page.goto(server.lab_url(relpath), wait_until="domcontentloaded", timeout=timeout)
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(
        state="visible", timeout=timeout
    )
    wait_for_kernel_idle(page, timeout=timeout)


_TRACK_RUN_JS = """() => {
    // Reset by each run_all_cells(): becomes true once any prompt shows [*] (queued or
    // running), so wait_for_all_cells_run() cannot return on stale execution counts.
    window.__nbBusySeen = false;
    const check = () => {
        for (const p of document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')) {
            if (p.textContent.includes('*')) { window.__nbBusySeen = true; return; }
        }
    };
    if (!window.__nbRunObserver) {
        window.__nbRunObserver = new MutationObserver(check);
        window.__nbRunObserver.observe(document.body,
            {subtree: true, childList: true, characterData: true});
    }
    check();
}"""


def run_all_cells(page: Any) -> None:
    """Run menu -> "Run All Cells" on the current notebook."""
    page.evaluate(_TRACK_RUN_JS)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu-content .lm-Menu-item", has_text=re.compile(r"^Run All Cells"))
    item.first.click()


def wait_for_all_cells_run(page: Any, timeout: float = 120_000) -> None:
    """After ``run_all_cells``: wait until the run started and every code cell shows an
    execution count (``[n]:``), then for the kernel to be Idle."""
    try:
        page.wait_for_function(
            """() => {
                if (!window.__nbBusySeen) return false;
                const prompts = [...document.querySelectorAll(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 &&
                       prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
            }""",
            timeout=timeout,
            polling=200,
        )
    except Exception as e:
        errors = cell_error_outputs(page)
        raise AssertionError(f"cells did not all run: {e}; stderr/error outputs: {errors}") from e
    wait_for_kernel_idle(page, timeout=timeout)


def cell_error_outputs(page: Any) -> list[str]:
    """Texts of the stderr / traceback outputs currently shown in the notebook."""
    return page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()


_WATCH_JS = """() => {
    if (window.__nbBarObserver) return;
    window.__nbBarWidths = [];
    const record = () => {
        for (const bar of document.querySelectorAll('.widget-hprogress .progress-bar')) {
            const w = bar.style.width;
            if (w && !window.__nbBarWidths.includes(w)) window.__nbBarWidths.push(w);
        }
    };
    window.__nbBarObserver = new MutationObserver(record);
    window.__nbBarObserver.observe(document.body, {
        subtree: true, childList: true, attributes: true, attributeFilter: ['style', 'class'],
    });
    record();
}"""

_READ_JS = """() => ({
    widths: [...(window.__nbBarWidths || [])],
    bars: [...document.querySelectorAll('.widget-hprogress .progress-bar')].map(b => ({
        width: b.style.width,
        classes: [...b.classList],
    })),
})"""


def watch_progress_bars(page: Any) -> None:
    """Record every distinct ``width`` style any ``.widget-hprogress .progress-bar`` takes
    (MutationObserver, into ``window.__nbBarWidths``).  Call before running the cells."""
    page.evaluate(_WATCH_JS)


def read_progress_bars(page: Any) -> dict[str, Any]:
    """``{"widths": [distinct widths seen, in order], "bars": [{"width": "100%",
    "percent": 100.0, "classes": [...], "success": bool, "danger": bool}, ...]}``
    (bars in document order)."""
    data = page.evaluate(_READ_JS)
    for bar in data["bars"]:
        bar["percent"] = _percent(bar["width"])
        bar["success"] = "progress-bar-success" in bar["classes"]
        bar["danger"] = "progress-bar-danger" in bar["classes"]
    return data


def wait_for_progress_bars(
    page: Any, count: int = 1, width: str = "100%", timeout: float = 60_000
) -> dict[str, Any]:
    """Wait until at least ``count`` progress bars exist and all have ``width``;
    return ``read_progress_bars(page)``."""
    try:
        page.wait_for_function(
            """([count, width]) => {
                const bars = document.querySelectorAll('.widget-hprogress .progress-bar');
                return bars.length >= count && [...bars].every(b => b.style.width === width);
            }""",
            arg=[count, width],
            timeout=timeout,
            polling=100,
        )
    except Exception as e:
        raise AssertionError(
            f"progress bars did not reach {width}: {read_progress_bars(page)}; "
            f"errors: {cell_error_outputs(page)}"
        ) from e
    return read_progress_bars(page)


def _percent(width: str) -> float | None:
    m = re.fullmatch(r"\s*([0-9.]+)%\s*", width or "")
    return float(m.group(1)) if m else None


def save_screenshot(page: Any, name: str) -> Path:
    """Save a PNG of the page as ``test-artifacts/<name>.png`` (repo root); return its path."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "screenshot"
    path = ARTIFACTS_DIR / (safe if safe.endswith(".png") else safe + ".png")
    page.screenshot(path=str(path))
    return path
