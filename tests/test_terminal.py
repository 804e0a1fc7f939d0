"""Terminals as users have them: terminal IPython in tmux (a real terminal whose
screen is read back), and a script whose stderr is a pty (python's pty module).

What is checked is what the terminal shows: no progress line drawn over the
prompt or glued to ``Out[n]:``, the final 100 % line on screen before a wait
returns, lines that fit the terminal's width, ``TERM=dumb`` and ``NO_COLOR``.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
NBGROUPS = Path(sys.executable).parent / "nbgroups"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_sessions = itertools.count()

needs_tmux = pytest.mark.skipif(
    TMUX is None and not os.environ.get("NBGROUPS_REQUIRE_TMUX"),
    reason="tmux is not installed (scripts/test.sh installs it as root)")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NBGROUPS_") and k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")  # no history or profile in the real home
    env.update(extra)
    return env


class Tmux:
    """One tmux server of our own (its own socket), one window running ``command``."""

    def __init__(self, command: list[str], env: dict[str, str], width: int, height: int = 60):
        self.socket = f"nbgroups-test-{os.getpid()}-{next(_sessions)}"
        self.width = width
        self._run("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t",
                  " ".join(map(_quote, command)), env=env)

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True, timeout=30,
                              env=env).stdout

    def type(self, line: str) -> None:
        """Type ``line`` and Enter, as a user does."""
        self._run("send-keys", "-t", "t", "-l", line)
        self._run("send-keys", "-t", "t", "Enter")

    def screen(self) -> list[str]:
        """The window's lines (wrapped lines joined: a line too wide shows as such)."""
        text = self._run("capture-pane", "-p", "-J", "-t", "t", "-S", "-500")
        return [line.rstrip() for line in text.rstrip("\n").split("\n")]

    def wait_for(self, predicate, what: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(screen))
            time.sleep(0.05)  # polling another process's screen: there is no event to wait on

    def prompt(self, n: int) -> list[str]:
        """Wait for the ``In [n]:`` prompt (the previous cell ended)."""
        return self.wait_for(lambda s: any(line.startswith(f"In [{n}]:") for line in s),
                             f"In [{n}]:")

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def ipython(tmp_path):
    sessions = []

    def start(width: int = 80) -> Tmux:
        t = Tmux([sys.executable, "-m", "IPython", "--no-banner", "--no-confirm-exit",
                  "--colors=NoColor", "--HistoryManager.enabled=False"],
                 _env(tmp_path), width)
        sessions.append(t)
        t.prompt(1)
        return t

    yield start
    for t in sessions:
        t.close()


def _settled(store: Path, group: str, timeout: float = 60) -> dict:
    """Wait (reading the store from another process, as ``nbgroups show`` does) until
    ``group`` settled; its counts."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([str(NBGROUPS), "show", group, "--json", "--store", str(store)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            shown = json.loads(out.stdout)
            if shown["state"] not in ("running", "empty"):
                return shown
        assert time.monotonic() < deadline, out.stderr
        time.sleep(0.1)


def _after(screen: list[str], marker: str) -> list[str]:
    i = max(i for i, line in enumerate(screen) if line.startswith(marker))
    return screen[i + 1:]


@needs_tmux
def test_terminal_ipython_prompt_is_never_drawn_over(ipython, tmp_path):
    store = tmp_path / "store"
    t = ipython(width=72)  # a line of the full format is ~80 wide: it must shrink
    t.type("%load_ext nbgroups")
    t.prompt(2)
    t.type(f"import nbgroups, time; nbgroups.configure(store={str(store)!r}, workers=2); "
           "f = lambda x: (time.sleep(0.05), x)[1]")
    t.prompt(3)
    # A submission: the view's first line, then Out[3] on a line of its own.
    t.type("nbgroups.sweep(f, 'g', x=range(12))")
    screen = t.prompt(4)
    tail = _after(screen, "In [3]:")
    assert tail[0].startswith("g   0%") and tail[1] == "Out[3]: 'g'", screen
    # The group runs to its end while the prompt is idle: nothing is drawn.
    assert _settled(store, "g")["done"] == 12
    idle = t.screen()
    deadline = time.monotonic() + 1.5  # beyond the renderer's 1 s tick: it had its chance
    while time.monotonic() < deadline:
        assert t.screen() == idle
        time.sleep(0.1)
    assert _after(idle, "Out[3]:") == ["", "In [4]:"], idle
    # The next cell: the final line that came while idle first, then the wait's result.
    t.type("len(nbgroups.result_group('g', wait=-1))")
    screen = t.prompt(5)
    tail = _after(screen, "In [4]:")
    assert tail[0].startswith("g 100%|") and "12/12 [done 12" in tail[0], screen
    assert tail[1] == "Out[4]: 12", screen
    # Submitted and waited for in one cell: the 100 % line is drawn before the wait
    # returns, Out[5] starts its own line, and so does the next prompt.
    t.type("nbgroups.sweep(f, 'h', x=range(20)); len(nbgroups.result_group('h', wait=-1))")
    screen = t.prompt(6)
    tail = _after(screen, "In [5]:")
    out = tail.index("Out[5]: 20")
    assert tail[out - 1].startswith("h 100%|") and "20/20 [done 20" in tail[out - 1], screen
    assert tail[out + 1:] == ["", "In [6]:"], screen
    for line in screen:  # wrapped lines joined: a progress line wider than 71 shows here
        if "%|" in line or re.match(r"^[gh] +\d+% ", line):
            assert len(line) <= 71, line


def _pty_script(tmp_path: Path, code: str, *, columns: int = 80, tty: bool = True,
                **env: str) -> str:
    """Run ``code`` with stdout and stderr on a pty of ``columns`` columns (``tty``
    False: stderr on a pipe); everything the terminal received."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    script = tmp_path / "script.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave,
                            stderr=slave if tty else subprocess.PIPE,
                            env=_env(tmp_path, **env), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every end of the pty was closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode() + err
    return b"".join(chunks).decode() + err


SCRIPT = """
import time, nbgroups

def f(x):
    time.sleep(0.02)
    if x % 10 == 3:
        raise ValueError(f"bad {{x}}")
    return x

nbgroups.configure(store={store!r}, workers=2)
nbgroups.sweep(f, "a-rather-long-group-name", x=range(40))
print("RESULT", len(nbgroups.result_group("a-rather-long-group-name", wait=-1)))
"""


def _lines(out: str) -> list[str]:
    """What was drawn, line by line (each \\r-rewrite its own line, escapes removed)."""
    return [ANSI.sub("", part) for part in re.split(r"\r\n|\r|\n", out) if part.strip()]


def test_script_shows_progress_on_a_terminal_without_load_ext(tmp_path):
    out = _pty_script(tmp_path, SCRIPT.format(store=str(tmp_path / "store")), columns=80)
    lines = _lines(out)
    result = lines.index("RESULT 36")
    final = [i for i, line in enumerate(lines) if line.startswith("a-rather-long-group-name 100%")]
    assert final and final[-1] < result, lines  # the last line drawn before the wait returned
    assert "40/40 [done 36, failed 4" in lines[final[-1]]
    assert [line[:9] for line in lines[final[-1] + 1:result]] == ["  failed "] * 4, lines
    assert all(len(line) <= 79 for line in lines), [ln for ln in lines if len(ln) > 79]
    assert "\x1b[31mfailed" in out  # a colour terminal: failures in red


def test_script_progress_honours_term_dumb_and_no_color(tmp_path):
    code = SCRIPT.format(store=str(tmp_path / "store"))
    dumb = _pty_script(tmp_path, code, TERM="dumb")
    assert "a-rather-long-group-name 100%" in dumb and "\x1b" not in dumb
    plain = _pty_script(tmp_path, code, NO_COLOR="1", TERM="xterm-256color")
    assert "a-rather-long-group-name 100%" in plain
    assert not re.search(r"\x1b\[3\dm", plain)  # no colour; cursor movement is fine


def test_script_shows_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    out = _pty_script(tmp_path, SCRIPT.format(store=str(tmp_path / "store")), tty=False)
    assert "RESULT 36" in out and "%|" not in out


def test_script_that_exits_without_waiting_leaves_the_line_ended(tmp_path):
    code = (f"import time, nbgroups\n"
            f"nbgroups.configure(store={str(tmp_path / 'store')!r}, workers=2)\n"
            "nbgroups.sweep(lambda s: time.sleep(s), 'left', s=[0.5] * 20)\n")
    out = _pty_script(tmp_path, code)
    assert "left   0%|" in out
    assert out.endswith("\r\n")  # the shell's prompt comes on a line of its own


def test_script_progress_is_decided_once_whatever_names_are_looked_up_later(tmp_path):
    """The script-progress check runs at the first submission only: a later first
    lookup of another api name (``nbgroups.result_group``) must not register it
    again (it then cost two imports in every async_task)."""
    code = (f"import nbgroups\n"
            f"nbgroups.configure(store={str(tmp_path / 'store')!r}, workers=1, progress=False)\n"
            "nbgroups.async_task('math.modf', 1.0, group='g')\n"
            "nbgroups.result_group('g', count=1)\n"
            "nbgroups.async_task('math.modf', 2.0, group='g')\n"
            "from nbgroups import api\n"
            "print('LISTENERS', len(api.SESSION._submit_listeners))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=60, check=True).stdout
    assert "LISTENERS 0" in out, out
