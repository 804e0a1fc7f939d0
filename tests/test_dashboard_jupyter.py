"""The dashboard as a Jupyter server extension, on a real ``jupyter lab`` server.

The server finds the extension the way an installed nbgroups enables it: the
shipped ``jupyter-config/jupyter_server_config.d/nbgroups.json`` in a Jupyter
config directory. Installing puts it in ``<prefix>/etc/jupyter``, editable or
not: ``test_installing_enables_the_extension`` installs nbgroups both ways into
a scratch environment and starts ``jupyter lab`` there with nothing else. The
other servers here are given the file on ``JUPYTER_CONFIG_PATH`` (the test
environment is shared with other checkouts). Each runs under a base URL, as
JupyterHub runs each user's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbgroups
from nbgroups import api
from tests.dashboard_env import REPO, Client
from tests.jupyter_env import _free_port, _stop_process_group

CONFIG = REPO / "jupyter-config" / "jupyter_server_config.d" / "nbgroups.json"
BASE = "/user/someone"  # a base URL, as JupyterHub gives each user's server


@contextlib.contextmanager
def jupyter_lab(root: Path, xdg: Path, *options: str, python: str = sys.executable,
                config: bool = True) -> Iterator[tuple[str, str, Path]]:
    """``jupyter lab`` on 127.0.0.1 under BASE, with the shipped config file on
    JUPYTER_CONFIG_PATH (``config=False``: only what ``python``'s environment
    has) and the signing key under ``xdg``; yields its URL (with BASE), token
    and log file."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NBGROUPS_STORE", "JUPYTER_CONFIG_PATH", "JUPYTER_CONFIG_DIR")}
    if config:
        etc = root.parent / (root.name + "-etc")
        (etc / "jupyter_server_config.d").mkdir(parents=True)
        shutil.copy(CONFIG, etc / "jupyter_server_config.d" / "nbgroups.json")
        env["JUPYTER_CONFIG_PATH"] = str(etc)
    else:  # no user-level config either: only the environment's etc/jupyter enables it
        env["JUPYTER_CONFIG_DIR"] = str(root.parent / (root.name + "-user-config"))
    env["XDG_CONFIG_HOME"] = str(xdg)
    token = secrets.token_hex(16)
    port = _free_port()
    log = root.parent / (root.name + "-lab.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             f"--ServerApp.base_url={BASE}/", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *options],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=root, env=env)
    url = f"http://127.0.0.1:{port}{BASE}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError, urllib.error.URLError):
                if Client(url).get("/api/status", timeout=2).status in (200, 403):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not start:\n" + log.read_text())
            time.sleep(0.2)
        yield url, token, log
    finally:
        _stop_process_group(proc)


def store_with_a_group(store: Path, xdg: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(xdg))
        api.reset()
        nbgroups.configure(store=str(store), backend="sync", progress=False)
        nbgroups.async_task("math.floor", 2.5, group="from-a-notebook")
        nbgroups.async_task("math.sqrt", -1.0, group="from-a-notebook")
        api.reset()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, jupyter_dirs) -> Iterator[tuple[str, str, Path]]:
    """The server on a root_dir holding a store at its default place,
    <root_dir>/.nbgroups, with one group."""
    root = tmp_path_factory.mktemp("lab-dash")
    xdg = tmp_path_factory.getbasetemp() / "xdg-config"  # where _signing_key puts the key
    store_with_a_group(root / ".nbgroups", xdg)
    with jupyter_lab(root, xdg) as server:
        yield server


def test_the_extension_is_served_behind_jupyters_login(lab):
    url, token, log = lab
    c = Client(url)
    for path in ("/nbgroups", "/nbgroups/", "/nbgroups/group?name=from-a-notebook"):
        refused = c.get(path)
        assert refused.status in (302, 403), (path, refused.status)
        if refused.status == 302:  # Jupyter sends a browser to its login page
            assert refused.headers["Location"].startswith(f"{BASE}/login")
        assert "from-a-notebook" not in refused.body
    assert c.get("/nbgroups/api/groups").status in (302, 403)
    assert c.get("/nbgroups/api/groups", headers={"Authorization": "token wrong"}).status \
        in (302, 403)
    auth = {"Authorization": f"token {token}"}
    data = json.loads(c.get("/nbgroups/api/groups", headers=auth).body)
    [group] = data["groups"]
    assert (group["group"], group["done"], group["failed"]) == ("from-a-notebook", 1, 1)
    page = c.get("/nbgroups/group?name=from-a-notebook", headers=auth)
    assert page.status == 200 and "ValueError: math domain error" in page.body
    assert f'src="{BASE}/nbgroups/static/dashboard.js"' in page.body
    assert c.get("/nbgroups/static/dashboard.js", headers=auth).status == 200
    failures = c.get("/nbgroups/failures?name=from-a-notebook", headers=auth)
    assert failures.status == 200 and "Traceback" in failures.body
    assert f"nbgroups dashboard at {BASE}/nbgroups" in log.read_text()


def test_actions_through_jupyter_need_its_xsrf_token(lab):
    url, token, _ = lab
    c = Client(url)
    c.get(f"/lab?token={token}")  # a browser's login: Jupyter's cookies
    page = c.get("/nbgroups/group?name=from-a-notebook")
    assert page.status == 200
    # a cookie-authenticated POST without the form's _xsrf is refused by Jupyter
    assert c.post("/nbgroups/action/cancel", {"name": "from-a-notebook"}).status == 403
    xsrf = page.body.split('name="_xsrf" value="', 1)[1].split('"', 1)[0]
    done = c.post("/nbgroups/action/cancel", {"name": "from-a-notebook", "_xsrf": xsrf})
    assert done.status == 302
    assert done.headers["Location"].startswith(f"{BASE}/nbgroups/group?name=from-a-notebook")


def test_read_only_and_the_store_from_jupyters_config(tmp_path, _signing_key):
    store = tmp_path / "elsewhere" / "store"
    xdg = Path(os.environ["XDG_CONFIG_HOME"])  # set by _signing_key
    store_with_a_group(store, xdg)
    root = tmp_path / "root"
    root.mkdir()
    with jupyter_lab(root, xdg, "--NbgroupsDashboard.read_only=True",
                     f"--NbgroupsDashboard.store={store}") as (url, token, log):
        c = Client(url)
        auth = {"Authorization": f"token {token}"}
        page = c.get("/nbgroups/group?name=from-a-notebook", headers=auth)
        assert page.status == 200 and "<form" not in page.body and "read-only" in page.body
        answer = c.post("/nbgroups/action/retry", {"name": "from-a-notebook"}, headers=auth)
        assert answer.status in (404, 405)
        assert f"(store {store}, read-only)" in log.read_text()
    assert not (root / ".nbgroups").exists()  # the extension never creates a store


def test_a_wheel_installs_the_server_config(tmp_path):
    """``pip install nbgroups`` enables the extension: the wheel carries nbgroups.json
    under etc/jupyter/jupyter_server_config.d (installed into <prefix>/etc/jupyter),
    and JupyterLab's default to save widget state (labconfig, test_browser_saved.py)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("nbgroups-*.whl")
    with zipfile.ZipFile(wheel) as z:
        found = sorted(n for n in z.namelist() if n.endswith("nbgroups.json"))
        assert found == [
            "nbgroups-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/nbgroups.json",
            "nbgroups-0.1.0.data/data/etc/jupyter/labconfig/default_setting_overrides.d/"
            "nbgroups.json"]
        assert json.loads(z.read(found[0])) == \
            {"ServerApp": {"jpserver_extensions": {"nbgroups.dashboard": True}}}
        assert json.loads(z.read(found[1])) == \
            {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
        names = set(z.namelist())
        assert {"nbgroups/dashboard/templates/group.html",
                "nbgroups/dashboard/static/dashboard.js", "nbgroups/py.typed"} <= names


def scratch_env(where: Path) -> Path:
    """A new environment that has this one's packages (Jupyter, nbgroups' own
    dependencies) on its path, but not nbgroups, nor any Jupyter config."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=60)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True).stdout
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site.strip()) / "zz_borrowed.pth").write_text("\n".join(ours) + "\n")
    return python


@pytest.mark.parametrize("editable", [True, False], ids=["pip-install-e", "pip-install"])
def test_installing_enables_the_extension(tmp_path, _signing_key, editable):
    """``pip install -e .`` (as scripts/test.sh) and ``pip install .`` each put the
    config file in the environment's etc/jupyter: a ``jupyter lab`` of that
    environment serves <url>/nbgroups with no other command and no other config."""
    env = tmp_path / "env"
    python = scratch_env(env)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-build-isolation", "--disable-pip-version-check",
         *(["-e"] if editable else []), str(REPO)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (env / "etc/jupyter/jupyter_server_config.d/nbgroups.json").is_file()
    where = subprocess.run([str(python), "-c", "import nbgroups; print(nbgroups.__file__)"],
                           capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.strip()
    # editable: the checkout itself; else the copy installed in the environment
    assert Path(where).is_relative_to(REPO if editable else env), where
    root = tmp_path / "root"
    xdg = Path(os.environ["XDG_CONFIG_HOME"])  # set by _signing_key
    store_with_a_group(root / ".nbgroups", xdg)
    with jupyter_lab(root, xdg, python=str(python), config=False) as (url, token, log):
        answer = Client(url).get("/nbgroups/api/groups",
                                 headers={"Authorization": f"token {token}"})
        assert answer.status == 200, log.read_text()
        [group] = json.loads(answer.body)["groups"]
        assert group["group"] == "from-a-notebook"


@pytest.mark.browser
def test_the_extension_page_in_chromium(lab, browser_page):
    """In a browser logged in to Jupyter (its ?token= link), the page's own script
    runs under the extension's CSP and draws the live table from the JSON."""
    url, token, _ = lab
    page = browser_page
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{url}/nbgroups?token={token}")
    row = page.locator('#groups tr[data-group="from-a-notebook"]')
    row.wait_for(timeout=20_000)
    assert row.locator('[data-field="failed"]').inner_text() == "1"
    page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 2")
    row.locator("a").click()
    page.wait_for_selector("#tasks")
    assert page.url.startswith(f"{url}/nbgroups/group?name=from-a-notebook")
    assert page.locator(".kind h3").inner_text() == "ValueError 1"
    assert errors == []
