"""The command line, run as a user runs it: ``python -m nbgroups`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args, store=None, env_store=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBGROUPS_")}
    if env_store is not None:
        env["NBGROUPS_STORE"] = str(env_store)
    env["PYTHONPATH"] = str(REPO)
    where = store if store is not None else env_store
    if where is not None:  # the signing key beside the store, not in the real home
        env["XDG_CONFIG_HOME"] = str(Path(where).parent.parent / "xdg-config")
    argv = [sys.executable, "-m", "nbgroups"]
    if store is not None:
        argv += ["--store", str(store)]
    out = subprocess.run(argv + list(args), capture_output=True, timeout=110, env=env,
                         cwd=cwd or REPO)
    # decoded by hand: text=True would turn the progress line's \r into \n
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(),
                                       out.stderr.decode())


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """One demo run, shared by the read-only tests below."""
    store = tmp_path_factory.mktemp("cli") / "store"
    out = cli("demo", "--workers", "2", store=store)
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
    header, row = out.stdout.splitlines()
    assert header.split() == ["group", "submitted", "done", "failed", "running", "queued",
                              "reused", "elapsed"]
    assert row.split()[:6] == ["demo", "200", "180", "20", "0", "0"]
    out = cli("show", "demo", "--limit", "3", "--tracebacks", store=store)
    assert out.returncode == 0, out.stderr
    assert "submitted: 200" in out.stdout and "failed:    20" in out.stdout
    assert "failures (20, first 3):" in out.stdout
    assert out.stdout.count("FloatingPointError: loss diverged") == 6  # 3 lines + 3 tracebacks
    assert "Traceback (most recent call last)" in out.stdout


def test_env_store_demo_twice_and_delete_tasks(tmp_path):
    store = tmp_path / "env-store"
    for _ in range(2):  # a second demo gets a fresh label: counts are not added up
        out = cli("demo", "--group", "mine", "--workers", "2", env_store=store)
        assert out.returncode == 0, out.stderr
    assert "group 'mine'" in out.stdout and store.is_dir()
    assert cli("list", env_store=store).stdout.splitlines()[1].split()[:2] == ["mine", "200"]
    out = cli("delete", "mine", "--tasks", env_store=store)
    assert out.returncode == 0 and "deleted group 'mine' and its 200 tasks" in out.stdout
    assert cli("list", env_store=store).stdout.strip() == "no groups"
    out = cli("show", "mine", env_store=store)
    assert out.returncode == 1 and "no group named 'mine'" in out.stderr


def test_usage_errors(tmp_path):
    out = cli(store=tmp_path / "s")
    assert out.returncode == 2 and "usage: nbgroups" in out.stdout
    out = cli("frobnicate", store=tmp_path / "s")
    assert out.returncode == 2 and "invalid choice: 'frobnicate'" in out.stderr
    out = cli("delete", store=tmp_path / "s")
    assert out.returncode == 2 and "the following arguments are required: group" in out.stderr


def test_unusable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = cli("list", store=blocker / "store")
    assert out.returncode == 1 and out.stderr.startswith("nbgroups: cannot use store directory")


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
    assert out.stdout.splitlines()[1].split()[:4] == ["demo", "200", "180", "20"]
    out = subprocess.run([str(script)], capture_output=True, text=True, env=env,
                         cwd=str(Path(store).parent), timeout=110)
    assert out.returncode == 2 and "usage: nbgroups" in out.stdout


def test_delete_label_keeps_tasks(demo_store):  # last: it changes the shared store
    store, _ = demo_store
    out = cli("delete", "demo", store=store)
    assert out.returncode == 0 and "its 200 tasks stay fetchable by id" in out.stdout
    assert cli("list", store=store).stdout.strip() == "no groups"
    assert cli("delete", "demo", store=store).returncode == 1


def test_show_says_how_many_were_reused(tmp_path):
    store = tmp_path / "s" / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    code = (f"import nbgroups; nbgroups.configure(store={str(store)!r}, progress=False)\n"
            "for n in ([1, 2], [1, 2, 3]):\n"
            "    nbgroups.sweep(pow, 'r', base=n, exp=[2], reuse=True)\n"
            "    nbgroups.result_group('r', wait=-1)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=110)
    out = subprocess.run([sys.executable, "-m", "nbgroups", "--store", str(store), "show", "r"],
                         capture_output=True, text=True, env=env, timeout=110)
    assert out.returncode == 0, out.stderr
    assert "submitted: 3" in out.stdout and "reused:    2" in out.stdout


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBGROUPS_")}
    env.update(PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    subprocess.run([sys.executable, "-c", script], check=True, timeout=110, env=env)
    out = cli("show", "outg", "--output", store=store)
    assert out.returncode == 0, out.stderr
    assert "ValueError: bad k=3" in out.stdout
    assert "    call: f(k=3)\n    stdout:\n      computing 3\n    stderr:\n      careful\n" \
        in out.stdout
