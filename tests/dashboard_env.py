"""Helpers for the dashboard tests: a real ``nbgroups dashboard`` in a subprocess,
an HTTP client that keeps cookies, and a large group written through the store's
public write path (``write_pages``/``write_outcomes``), as the runner writes it."""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nbgroups import names
from nbgroups.serialize import dumps_plain

REPO = Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r"(http://\S+)/\?token=(\S+)")


@dataclass
class Response:
    status: int
    body: str
    headers: dict
    url: str


@dataclass
class Client:
    """urllib with a cookie jar and no automatic redirects (each answer is seen)."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def request(self, method: str, path: str, data: dict | None = None,
                headers: dict | None = None, timeout: float = 30) -> Response:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                             NoRedirect)
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read().decode(), dict(resp.headers),
                                resp.url)
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read().decode(errors="replace"),
                            dict(err.headers), req.full_url)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, data: dict, **kw) -> Response:
        return self.request("POST", path, data=data, **kw)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


@dataclass
class DashboardProcess:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    token: str
    proc: subprocess.Popen
    output: list[str]

    def client(self) -> Client:
        return Client(self.url)


def env_for_cli() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBGROUPS_")}
    env["PYTHONPATH"] = str(REPO)
    return env  # XDG_CONFIG_HOME (the signing key) comes from the test's environment


@contextlib.contextmanager
def dashboard_process(store: Path, *args: str) -> Iterator[DashboardProcess]:
    """``python -m nbgroups dashboard --store STORE --port 0 ARGS`` until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbgroups", "dashboard", "--store", str(store), "--port", "0",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for_cli(),
        cwd=str(REPO), start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        match = None
        while match is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = URL_LINE.search(line)
        if match is None:
            raise AssertionError("the dashboard printed no URL:\n" + "".join(lines))
        yield DashboardProcess(match.group(1), match.group(2), proc, lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        proc.stdout.close()


def write_group(store, group: str, n: int, page_size: int = names.PAGE_CAPACITY,
                func: str = "math.floor") -> None:
    """``n`` tasks of ``group``, all done (result ``i``), through ``write_pages`` and
    ``write_outcomes``: pages of up to ``page_size`` calls, as the runner writes a
    sweep of that size."""
    now = time.time()
    opts = {"timeout": None, "retries": 0, "save": True, "ttl": None, "hook": None,
            "owner": None}
    for start in range(0, n, page_size):
        count = min(page_size, n - start)
        prefix = names.new_prefix()
        calls = tuple((i, 0, (), {"x": start + i, "y": (start + i) % 7}, None, False)
                      for i in range(count))
        [page] = store.write_pages([dict(prefix=prefix, group=group, created=now,
                                         funcs=((func, None),), calls=calls, options=opts)])
        rows = [(names.task_id(prefix, i), "success", 1, now, now + 0.001,
                 dumps_plain(start + i), None, None) for i in range(count)]
        store.write_outcomes([(group, page.gen, rows, [])])


SWEEP = 30  # calls of the owner's sweep

# The owner: a sweep of SWEEP calls on one worker; call 0 waits for the file `go`,
# so the others wait queued (in the runner, or in a batch not begun). Prints its
# process id once call 0 runs, then, when the group is settled, what ran.
OWNER = """
import json, os, sys, time
import nbgroups
from nbgroups.control import process_id

store, starts, go, backend = sys.argv[1:5]

def call(i):
    open(os.path.join(starts, str(i)), "w").close()
    while i == 0 and not os.path.exists(go):
        time.sleep(0.01)
    return i

nbgroups.configure(store=store, backend=backend, workers=1, progress=False)
nbgroups.sweep(call, "far", i=range({n}))
while not os.path.exists(os.path.join(starts, "0")):
    time.sleep(0.01)
print(process_id(), flush=True)
if backend == "thread" and len(sys.argv) > 5:  # to be killed: stays as it is
    time.sleep(600)
records = nbgroups.fetch_group("far", wait=-1)
print(json.dumps([r.state.value for r in records]), flush=True)
""".replace("{n}", str(SWEEP))


def start_owner(tmp_path: Path, backend: str, *extra: str
                ) -> tuple[subprocess.Popen, Path, Path, str]:
    """The OWNER script on the store ``tmp_path/store``, once its call 0 runs:
    the process, its starts folder, its go file, and its process id."""
    starts, go = tmp_path / "starts", tmp_path / "go"
    starts.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "store"), str(starts), str(go), backend,
         *extra], env=env_for_cli(), cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    owner = proc.stdout.readline().strip()
    assert owner.count(":") == 2, owner
    return proc, starts, go, owner


def release_owner(proc: subprocess.Popen, go: Path) -> None:
    """Teardown of :func:`start_owner`: let its calls finish, kill it if it still
    runs, and close its pipe."""
    go.touch()
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()
