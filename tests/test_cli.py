"""The command line, run as a user runs it: the installed ``nbgroups`` console script
(and ``python -m nbgroups``) in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "nbgroups"  # the console script pip installed


def _env(env_store=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBGROUPS_")}
    if env_store is not None:
        env["NBGROUPS_STORE"] = str(env_store)
    return env


def cli(*args, store=None, env_store=None, cwd=None, module=False):
    """Run ``nbgroups [--store STORE] ARGS`` (``module``: ``python -m nbgroups``)."""
    argv = [sys.executable, "-m", "nbgroups"] if module else [str(SCRIPT)]
    if store is not None:
        argv += ["--store", str(store)]
    out = subprocess.run(argv + list(args), capture_output=True, timeout=110,
                         env=_env(env_store), cwd=cwd or REPO)
    # decoded by hand: text=True would turn the progress line's \r into \n
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """One demo run, shared by the read-only tests below."""
    store = tmp_path_factory.mktemp("cli") / "store"
    with pytest.MonkeyPatch.context() as mp:  # made before the autouse key fixture runs:
        # the same key directory as conftest's, never the real home
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
        out = cli("demo", "--workers", "2", store=store, module=True)
    return store, out


def test_demo_runs_the_sweep_with_text_progress(demo_store):
    store, out = demo_store
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("200 tasks in ") and lines[0].endswith("180 done, 20 failed")
    assert lines[1].startswith("best: lr=0.1 depth=6")
    assert "failed configurations: lr=1.0 depth=8, lr=1.0 depth=10 (FloatingPointError" \
        in out.stdout
    assert str(store) in out.stdout
    # the progress line on stderr: rewritten with \r, a final line, the first failures
    # loky's resource tracker (a process sharing our stderr) sometimes warns at exit
    # that a semaphore it meant to unlink was gone already: its lines, not ours
    err = "".join(line for line in out.stderr.splitlines(keepends=True)
                  if "resource_tracker" not in line and "warnings.warn(" not in line)
    assert err.startswith("\r") and "\n" in err
    final = err.rsplit("\r", 1)[1].splitlines()
    assert final[0].startswith("demo 100%|") and "200/200 [done 180, failed 20" in final[0]
    assert final[1].startswith("  failed ") and "FloatingPointError: loss diverged" in final[1]
    assert final[-1] == "  ... 15 more failures"


def test_list_and_show_read_the_kept_results(demo_store):
    store, _ = demo_store
    out = cli("list", store=store)
    assert out.returncode == 0, out.stderr
    title, header, row = out.stdout.splitlines()
    assert title == f"groups in store {str(store)!r}:"
    assert header.split() == ["group", "submitted", "done", "failed", "cancelled", "running",
                              "queued", "reused", "elapsed"]
    assert row.split()[:7] == ["demo", "200", "180", "20", "0", "0", "0"]
    out = cli("show", "demo", "--limit", "3", "--tracebacks", store=store)
    assert out.returncode == 0, out.stderr
    assert f"store:     {store}" in out.stdout
    assert "submitted: 200" in out.stdout and "failed:    20" in out.stdout
    assert "failures (20, first 3):" in out.stdout
    assert out.stdout.count("FloatingPointError: loss diverged") == 6  # 3 lines + 3 tracebacks
    assert "Traceback (most recent call last)" in out.stdout


def _fetch_by_name(store, name):
    code = (f"import nbgroups; nbgroups.configure(store={str(store)!r}, progress=False)\n"
            f"print(nbgroups.fetch({name!r}) is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=110, check=True)
    return out.stdout.strip() == "True"


def test_env_store_demo_twice_deletes_its_old_tasks(tmp_path):
    store = tmp_path / "env-store"
    out = cli("demo", "--group", "mine", "--workers", "2", env_store=store)
    assert out.returncode == 0, out.stderr
    first = json.loads(cli("show", "mine", "--json", "--limit", "1",
                           env_store=store).stdout)["failures"][0]["name"]
    assert _fetch_by_name(store, first)
    # a second demo: a fresh label, and the first run's tasks deleted, not piled up
    out = cli("demo", "--group", "mine", "--workers", "2", env_store=store)
    assert out.returncode == 0, out.stderr
    assert f"results kept in store {str(store)!r} as group 'mine'" in out.stdout
    assert not _fetch_by_name(store, first)
    assert cli("list", env_store=store).stdout.splitlines()[2].split()[:2] == ["mine", "200"]
    out = cli("delete", "mine", "--tasks", env_store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"deleted group 'mine' and its 200 tasks from store {str(store)!r}"
    assert cli("list", env_store=store).stdout.strip() == f"no groups in store {str(store)!r}"
    out = cli("show", "mine", env_store=store)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"nbgroups: no group named 'mine' in store {str(store)!r} "
                                  "(`nbgroups list` shows its groups)")


def test_usage_errors(tmp_path):
    out = cli(store=tmp_path / "s")
    assert out.returncode == 2 and "usage: nbgroups" in out.stdout
    out = cli("frobnicate", store=tmp_path / "s")
    assert out.returncode == 2 and "invalid choice: 'frobnicate'" in out.stderr
    out = cli("delete", store=tmp_path / "s")
    assert out.returncode == 2 and "the following arguments are required: group" in out.stderr


def test_unusable_store_is_a_clear_error_naming_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for args in (["list"], ["demo"], ["show", "g"], ["watch"]):
        for where in (blocker, blocker / "store"):
            out = cli(*args, store=where)
            assert out.returncode == 1, (args, where)
            assert out.stderr.startswith(f"nbgroups: cannot use store directory {str(where)!r}")
            assert "is a file, not a directory" in out.stderr
            assert "--store PATH" in out.stderr and "configure(store=...)" in out.stderr


def test_console_script_is_installed_and_runs_main():
    text = (REPO / "pyproject.toml").read_text()
    assert 'nbgroups = "nbgroups.cli:main"' in text
    out = cli("--help")
    assert out.returncode == 0 and "usage: nbgroups" in out.stdout
    for command in ("list", "show", "watch", "delete", "demo"):
        assert command in out.stdout


def test_show_says_how_many_were_reused(tmp_path):
    store = tmp_path / "s" / "store"
    env = _env()
    code = (f"import nbgroups; nbgroups.configure(store={str(store)!r}, progress=False)\n"
            "for n in ([1, 2], [1, 2, 3]):\n"
            "    nbgroups.sweep(pow, 'r', base=n, exp=[2], reuse=True)\n"
            "    nbgroups.result_group('r', wait=-1)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=110)
    out = cli("show", "r", store=store)
    assert out.returncode == 0, out.stderr
    assert "submitted: 3" in out.stdout and "reused:    2" in out.stdout


def test_store_option_before_or_after_the_command(demo_store):
    store, _ = demo_store
    before = cli("--store", str(store), "show", "demo", "--json")
    after = cli("show", "demo", "--json", "--store", str(store))
    middle = cli("show", "--store", str(store), "demo", "--json")
    assert before.returncode == after.returncode == middle.returncode == 0, after.stderr
    assert json.loads(before.stdout)["submitted"] == 200
    assert json.loads(after.stdout) == json.loads(before.stdout) == json.loads(middle.stdout)
    assert json.loads(cli("list", "--json", "--store", str(store)).stdout)["store"] == str(store)


def test_list_and_show_print_json(demo_store):
    store, _ = demo_store
    listed = json.loads(cli("list", "--json", store=store).stdout)
    assert listed["store"] == str(store) and listed["exists"] is True
    (row,) = listed["groups"]
    assert {k: row[k] for k in ("group", "state", "submitted", "done", "failed", "cancelled",
                                "running", "queued", "reused")} == {
        "group": "demo", "state": "failed", "submitted": 200, "done": 180, "failed": 20,
        "cancelled": 0, "running": 0, "queued": 0, "reused": 0}
    assert row["first_submitted"].endswith("+00:00") and row["elapsed_seconds"] > 0
    shown = json.loads(cli("show", "demo", "--json", "--limit", "2", store=store).stdout)
    assert shown["store"] == str(store) and shown["failed"] == 20
    assert [f["error"].split(":")[0] for f in shown["failures"]] == ["FloatingPointError"] * 2
    assert shown["failures"][0]["traceback"].startswith("Traceback (most recent call last)")


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_read_only_commands_create_nothing_and_name_the_store(tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    default = cwd / ".nbgroups"
    missing = tmp_path / "nonexistent" / "x"
    out = cli("list", cwd=cwd)
    assert (out.returncode, out.stdout.strip()) == (
        0, f"no groups: no store at {str(default)!r} (nothing was stored there yet)")
    assert json.loads(cli("list", "--json", cwd=cwd).stdout) == {
        "store": str(default), "exists": False, "groups": []}
    out = cli("list", store=missing)
    assert out.returncode == 0 and f"no store at {str(missing)!r}" in out.stdout
    for args in (["show", "g"], ["delete", "g", "--tasks"], ["watch"], ["watch", "g"]):
        out = cli(*args, store=missing)
        assert out.returncode == 1, args
        assert f"no store at {str(missing)!r} (nothing was stored there yet)" in out.stderr
        out = cli(*args, cwd=cwd)
        assert out.returncode == 1 and f"no store at {str(default)!r}" in out.stderr
    assert _tree(tmp_path) == ["project"]  # no ./.nbgroups, no nonexistent/x


def _script(store, body):
    """Run python code with nbgroups configured on ``store``; returns the Popen."""
    code = (f"import os, time, nbgroups\n"
            f"nbgroups.configure(store={str(store)!r}, workers=2, progress=False)\n"
            + textwrap.dedent(body))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


GATED = '''
def gated(x, d):
    open(os.path.join(d, f"{x}.run"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(d, "go")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x
'''


def test_cancelled_tasks_are_listed_by_the_cli_and_the_magic(tmp_path):
    store = tmp_path / "store"
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = _script(store, GATED + f'''
nbgroups.sweep(gated, "c", x=list(range(60)), d=[{str(gate)!r}])
while len(os.listdir({str(gate)!r})) < 2:  # both workers busy: the rest is queued
    time.sleep(0.01)
print(nbgroups.cancel_group("c"), flush=True)
open(os.path.join({str(gate)!r}, "go"), "w").close()
nbgroups.result_group("c", wait=-1)
''')
    out, err = proc.communicate(timeout=110)
    assert proc.returncode == 0, err
    cancelled = int(out)
    assert 0 < cancelled < 60
    row = json.loads(cli("list", "--json", store=store).stdout)["groups"][0]
    assert (row["cancelled"], row["done"], row["queued"]) == (cancelled, 60 - cancelled, 0)
    assert row["state"] == "cancelled"
    header, line = cli("list", store=store).stdout.splitlines()[1:]
    assert dict(zip(header.split(), line.split(), strict=True))["cancelled"] == str(cancelled)
    assert f"cancelled: {cancelled}\n" in cli("show", "c", store=store).stdout
    # %nbgroups in terminal IPython
    code = (f"import nbgroups; nbgroups.configure(store={str(store)!r}); ip = get_ipython(); "
            "ip.run_line_magic('load_ext', 'nbgroups'); "
            "print(repr(ip.run_line_magic('nbgroups', '')))")
    shown = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--quick",
                            "-c", code], capture_output=True, text=True, env=_env(),
                           timeout=110, check=True).stdout
    header, line = shown.strip().splitlines()[-2:]
    assert dict(zip(header.split(), line.split(), strict=True))["cancelled"] == str(cancelled)


class Lines:
    """A subprocess's stderr, read as it comes; ``wait_for(text)`` blocks until it appears."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            with self._changed:
                self.text += chunk.decode()
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: text in self.text, timeout)


def _stop(proc, lines=None) -> None:
    """End ``proc`` if it still runs, and close its pipes."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if lines is not None:
        lines._thread.join(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _watch(store, *args):
    proc = subprocess.Popen([str(SCRIPT), "watch", *args, "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    return proc, Lines(proc.stderr)


def test_watch_one_group_follows_another_process_until_it_settles(tmp_path):
    store = tmp_path / "store"
    gate = tmp_path / "gate"
    gate.mkdir()
    producer = _script(store, GATED + f'''
nbgroups.sweep(gated, "w", x=list(range(12)), d=[{str(gate)!r}])
nbgroups.group_counts("w")  # the pages are in the store
print("submitted", flush=True)
nbgroups.result_group("w", wait=-1)
''')
    assert producer.stdout.readline() == "submitted\n"
    watcher, err = _watch(store, "w")
    try:
        assert err.wait_for("/12 [done 0, failed 0"), err.text
        (gate / "go").touch()
        assert watcher.wait(timeout=60) == 0
        assert producer.wait(timeout=60) == 0
    finally:
        _stop(watcher, err)
        _stop(producer)
    final = err.text.rsplit("\r", 1)[1]
    assert final.startswith("w 100%|") and "12/12 [done 12, failed 0" in final
    assert final.endswith("\n")


def test_watch_every_group_picks_up_new_ones_until_ctrl_c(tmp_path):
    store = tmp_path / "store"
    gate = tmp_path / "gate"
    gate.mkdir()
    old = _script(store, "nbgroups.sweep(lambda x: x, 'old', x=[1]); nbgroups.result_group('old', "
                         "wait=-1)\n")
    assert old.communicate(timeout=110)[1] == "" and old.returncode == 0
    watcher, err = _watch(store)
    producer = None
    try:
        assert err.wait_for("waiting for new tasks (Ctrl-C stops)"), err.text
        producer = _script(store, GATED + f'''
nbgroups.sweep(gated, "new", x=list(range(6)), d=[{str(gate)!r}])
nbgroups.result_group("new", wait=-1)
''')
        assert err.wait_for("new   0%|"), err.text
        (gate / "go").touch()
        assert producer.wait(timeout=60) == 0
        assert err.wait_for("6/6 [done 6"), err.text
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=60) == 0
    finally:
        _stop(watcher, err)
        _stop(producer)
    assert "old" not in err.text.replace("store", "")  # settled before: not shown


def test_installed_console_script_runs(demo_store):
    """The ``nbgroups`` command pip installed (pyproject's [project.scripts]), run
    as a user runs it: from its own wrapper, without PYTHONPATH, elsewhere than the repo."""
    store, _ = demo_store
    script = Path(sys.executable).with_name("nbgroups")
    assert script.is_file(), f"{script}: the console script is not installed (pip install -e .)"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NBGROUPS_") and k != "PYTHONPATH"}
    env["XDG_CONFIG_HOME"] = str(Path(store).parent.parent / "xdg-config")
    out = subprocess.run([str(script), "--store", str(store), "list"], capture_output=True,
                         text=True, env=env, cwd=str(Path(store).parent), timeout=110)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2].split()[:4] == ["demo", "200", "180", "20"]
    out = subprocess.run([str(script)], capture_output=True, text=True, env=env,
                         cwd=str(Path(store).parent), timeout=110)
    assert out.returncode == 2 and "usage: nbgroups" in out.stdout


def test_delete_label_keeps_tasks(demo_store):  # last: it changes the shared store
    store, _ = demo_store
    out = cli("delete", "demo", store=store)
    assert out.returncode == 0 and "its 200 tasks stay fetchable by id" in out.stdout
    assert f"from store {str(store)!r}" in out.stdout
    assert cli("list", store=store).stdout.strip() == f"no groups in store {str(store)!r}"
    assert cli("delete", "demo", store=store).returncode == 1


def test_show_prints_each_failures_call_and_output(tmp_path):
    store = tmp_path / "s" / "store"
    script = (
        "import nbgroups, sys\n"
        "def f(k):\n"
        "    print('computing', k)\n"
        "    print('careful', file=sys.stderr)\n"
        "    raise ValueError(f'bad k={k}')\n"
        f"nbgroups.configure(store={str(store)!r}, workers=1, progress=False)\n"
        "nbgroups.async_task(f, k=3, group='outg')\n"
        "nbgroups.result_group('outg', count=1, failures=True, wait=-1)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=110, env=_env())
    out = cli("show", "outg", "--output", store=store)
    assert out.returncode == 0, out.stderr
    assert "ValueError: bad k=3" in out.stdout
    name = next(line for line in out.stdout.splitlines() if "bad k=3" in line).split("[")[-1]
    assert f"  f(k=3): ValueError: bad k=3  [{name}" in out.stdout  # the call, then the name
    assert "    call: f(k=3)\n    stdout:\n      computing 3\n    stderr:\n      careful\n" \
        in out.stdout
