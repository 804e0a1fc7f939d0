"""The documentation's promises that a docs build alone would not check.

The site itself is built by ``scripts/test.sh`` (Sphinx with warnings as errors,
nitpicky): it fails on a reference that does not resolve, but not on a public
name nobody documented, nor on the README's links (the README is not part of
the site). These tests read the sources; they need no Sphinx.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import nbgroups

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "docs" / "reference" / "api.md"
README = ROOT / "README.md"

# ``.. autofunction:: nbgroups.async_task`` and the like, in the page's eval-rst blocks
_DOCUMENTED = re.compile(r"^\.\. auto(?:function|class|exception|data):: nbgroups\.(\w+)\s*$",
                         re.M)
# [text](target) outside code; images too
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def documented_names(text: str) -> set[str]:
    return set(_DOCUMENTED.findall(text))


def test_every_public_name_is_in_the_api_reference():
    missing = sorted(set(nbgroups.__all__) - documented_names(API_PAGE.read_text()))
    assert missing == [], f"add these to {API_PAGE.relative_to(ROOT)}: {missing}"


def test_the_reference_documents_names_through_the_package():
    """Documented as ``nbgroups.<name>``: a module split cannot break the reference."""
    text = API_PAGE.read_text()
    through_modules = re.findall(r"^\.\. auto\w+:: nbgroups\.[\w.]+\.(\w+)$", text, re.M)
    assert set(through_modules) & set(nbgroups.__all__) == set()  # values they return may be
    assert documented_names(text) <= set(nbgroups.__all__)


def test_the_check_sees_a_missing_name():
    text = API_PAGE.read_text().replace(".. autofunction:: nbgroups.sweep\n", "")
    assert "sweep" not in documented_names(text)


def _prose(markdown: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def test_readme_links_stay_inside_the_repository():
    bad = []
    for target in _LINK.findall(_prose(README.read_text())):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web page or an anchor
        path = (ROOT / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    assert bad == []


def test_readme_first_screen_has_the_two_set_up_commands():
    text = README.read_text()
    first_block = re.search(r"^```bash\n(.*?)^```", text, re.S | re.M).group(1)
    commands = [line for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pip install" in commands[0] and "scripts/test.sh" in commands[1]
    assert text.index("```bash") < 800  # on the first screen


@pytest.mark.parametrize("path", [README, ROOT / "benchmarks" / "README.md",
                                  *sorted(p for p in (ROOT / "docs").rglob("*.md")
                                          if "_build" not in p.parts)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers_in_user_documents(path):
    """Readers of a clone have no issue tracker: "issue 5" means nothing to them."""
    assert re.findall(r"\bissues? #?\d+", path.read_text(), re.I) == []


def test_getting_started_command_serves_the_notebooks(tmp_path):
    """``.venv/bin/jupyter lab notebooks/``, as getting-started.md says: the file browser
    shows the bundled notebooks, and the widget extension the progress views need is
    there (no extra install step). A real JupyterLab server, asked over its REST API."""
    from tests.jupyter_env import LabServer, _free_port, _stop_process_group

    jupyter = Path(sys.executable).parent / "jupyter"
    assert "jupyter lab notebooks/" in (ROOT / "docs" / "getting-started.md").read_text()
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp_path / "lab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(jupyter), "lab", "notebooks/", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root_dir=ROOT / "notebooks",
                       log_path=log_path, proc=proc)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, server.log_tail()
            try:
                server.api("GET", "/api/status", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        listed = {item["name"] for item in server.api("GET", "/api/contents")["content"]}
        assert {"quickstart.ipynb", "sweep.ipynb"} <= listed
        request = urllib.request.Request(f"{server.url}/lab?token={token}")
        with urllib.request.urlopen(request, timeout=10) as page:
            assert "@jupyter-widgets/jupyterlab-manager" in page.read().decode()
    finally:
        _stop_process_group(proc)
