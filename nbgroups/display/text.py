"""The text fallback: one line per running group on stderr, rewritten in place,
and a final line (plus the first failures) when the group settles.

Views writing to the same stream share a :class:`Board`: one group's line is
rewritten with ``\\r``; several groups on a terminal are a block of lines
redrawn with ANSI cursor movement, the finished ones printed above it; several
groups on a stream that is not a terminal (a log file) get a line per update,
since ``\\r`` cannot keep two lines apart there.

On a terminal every line fits ``shutil.get_terminal_size()`` (read at each
draw: a resized window gets shorter lines), ``TERM=dumb`` gets no cursor
movement and no colour, and ``NO_COLOR`` (https://no-color.org) no colour.

An interactive terminal (IPython's prompt) must not be drawn over: there the
boards are *held* (:func:`hold`): views go on updating what they would show,
nothing is written; while a wait blocks (:func:`release`) they draw, and when
it returns (:func:`end_lines`) the last state stays printed on lines of their
own, so that ``Out[n]:`` and the next prompt start on a fresh line. Final
lines that came while held are written when the next cell starts
(:func:`write_pending`).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any, TextIO

from .formatting import Failure, Meter, format_line

MAX_FAILURES_PRINTED = 5
UP = "\x1b[{}A"  # cursor up n lines
CLEAR_DOWN = "\x1b[J"  # clear from the cursor to the end of the screen
RED, GREEN, RESET = "\x1b[31m", "\x1b[32m", "\x1b[0m"


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def _dumb() -> bool:
    return os.environ.get("TERM", "") == "dumb"


class Board:
    """The unfinished lines of the views writing to one stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = _isatty(stream)
        self.lines: dict[int, str] = {}  # view id -> its current line, in order of arrival
        self.pending = ""  # final lines that came while held
        self._rows = 0  # terminal: rows of the block drawn last (the cursor is on its last)
        self._width = 0  # the open ``\r`` line's length (padded over), 0 if none is open
        self._last_final = ""

    @property
    def tty(self) -> bool:
        """A terminal that takes cursor movement (not ``TERM=dumb``)."""
        return self.terminal and not _dumb()

    @property
    def color(self) -> bool:
        return self.tty and not os.environ.get("NO_COLOR")

    def columns(self) -> int | None:
        """The longest line that fits the terminal (one column spare: a line that
        fills the last column wraps on some terminals); None off a terminal."""
        if not self.terminal:
            return None
        return max(shutil.get_terminal_size().columns - 1, 10)

    def show(self, key: int, line: str) -> None:
        """Draw the current line of the view ``key``."""
        with _LOCK:
            self.lines[key] = line
            if _HELD:
                return
            if self.tty:
                self._write(self._erase() + self._block())
            elif len(self.lines) == 1:
                self._write("\r" + line.ljust(self._width))
                self._width = len(line)
            else:  # not a terminal, several groups: one line per update
                self._write(self._end_line() + line + "\n")

    def finish(self, key: int, text: str) -> None:
        """The view ``key`` is done: ``text`` (ending with a newline) replaces its line."""
        with _LOCK:
            self.lines.pop(key, None)
            if text == self._last_final:  # two views of one group: the summary once
                return
            self._last_final = text
            if _HELD:
                self.pending += text
                return
            if self.tty:
                self._write(self._erase() + text + self._block())
            else:
                first, _, rest = text.partition("\n")
                self._write("\r" + first.ljust(self._width) + "\n" + rest)
                self._width = 0

    def above(self, text: str) -> None:
        """Write ``text`` (whole lines) above the running lines, which stay drawn below
        it; nothing while held (an idle prompt must not be drawn over)."""
        with _LOCK:
            if _HELD:
                return
            if self.tty:
                self._write(self._erase() + text + self._block())
            elif len(self.lines) == 1 and self._width:
                line = next(iter(self.lines.values()))
                self._write("\r" + " " * self._width + "\r" + text + line)
                self._width = len(line)
            else:
                self._write(self._end_line() + text)

    def drop(self, key: int) -> None:
        """The view ``key`` closed while running: its line ends where it stands."""
        with _LOCK:
            line = self.lines.pop(key, None)
            if line is None or _HELD:
                return
            if self.tty:  # its last line stays, printed above the others
                self._write(self._erase() + line + "\n" + self._block())
            else:
                self._write(self._end_line())

    def end_lines(self) -> None:
        """Leave the lines drawn as they stand and move below them: what is written
        next (``Out[n]:``, a prompt, a print) starts on a line of its own."""
        with _LOCK:
            if self._rows or self._width:
                self._write("\n")
            self._rows = 0
            self._width = 0

    def flush_pending(self) -> None:
        """Write the final lines that came while held."""
        with _LOCK:
            text, self.pending = self.pending, ""
            if text:
                self._write(self._erase() + text + self._block())

    def redraw(self) -> None:
        """Draw the running lines again, below what is there (after a hold)."""
        with _LOCK:
            if not self.lines or self._rows or self._width:
                return
            if self.tty:
                self._write(self._block())
            elif len(self.lines) == 1:
                line = next(iter(self.lines.values()))
                self._write("\r" + line)
                self._width = len(line)
            else:
                self._write("".join(line + "\n" for line in self.lines.values()))

    # -- helpers (under the lock)
    def _erase(self) -> str:
        """Terminal: back to the first row of the block drawn last, and clear it."""
        rows, self._rows = self._rows, 0
        if not rows:
            return ""
        return "\r" + (UP.format(rows - 1) if rows > 1 else "") + CLEAR_DOWN

    def _block(self) -> str:
        """Terminal: the running groups' lines, the cursor left on the last one."""
        self._rows = len(self.lines)
        return "\n".join(self.lines.values())

    def _end_line(self) -> str:
        """End a line left open by ``\r`` rewrites."""
        if not self._width:
            return ""
        self._width = 0
        return "\n"

    def _write(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except ValueError:  # the stream was closed (a finished script)
            pass


_BOARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.RLock()  # boards are drawn from the renderer thread and the main thread
_HELD = False  # an interactive prompt is (or may be) on screen: write nothing


def _boards() -> list[Board]:
    with _LOCK:
        return list(_BOARDS.values())


def hold() -> None:
    """Write nothing until :func:`release` (an interactive terminal's prompt is idle)."""
    global _HELD
    with _LOCK:
        _HELD = True


def release() -> None:
    """Draw again (a wait blocks): first the final lines that came while held."""
    global _HELD
    with _LOCK:
        _HELD = False
        for board in _boards():
            board.flush_pending()
            board.redraw()


def held() -> bool:
    return _HELD


def end_lines() -> None:
    """Every board: leave what is drawn, and move below it (a wait returns)."""
    for board in _boards():
        board.end_lines()


def snapshot() -> None:
    """Draw what the boards hold now and end the lines, then hold again if held (a
    view asked for in an interactive terminal is shown at once)."""
    was = _HELD
    release()
    end_lines()
    if was:
        hold()


def write_pending() -> None:
    """Write the final lines that came while held, without releasing (a new cell
    starts: the cursor is below its input, on a line of its own)."""
    global _HELD
    with _LOCK:
        was, _HELD = _HELD, False
        try:
            for board in _boards():
                board.flush_pending()
                board.end_lines()
        finally:
            _HELD = was


def _fit(line: str, width: int | None) -> str:
    """``line`` cut to ``width`` characters (with an ellipsis), if a width is given."""
    if width is None or len(line) <= width:
        return line
    return line[:max(width - 1, 0)] + "…"


def board_for(stream: TextIO) -> Board:
    """The board of ``stream`` (one per stream object, while it lives)."""
    with _LOCK:
        try:
            board = _BOARDS.get(stream)
        except TypeError:  # a stream that cannot be weakly referenced: its own board
            return Board(stream)
        if board is None:
            board = _BOARDS[stream] = Board(stream)
        return board


class TextView:
    """Writes a group's progress line to ``stream`` (default: ``sys.stderr`` now)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._board = board_for(self.stream)
        self._final_key: tuple | None = None

    @property
    def min_interval(self) -> float:
        """Seconds between rewrites: a terminal redraws fast, a log file keeps every line."""
        return 0.1 if self._board.tty else 1.0  # TERM=dumb: no rewriting in place either

    def update(self, m: Meter, failures: Sequence[Failure] | None) -> None:
        board = self._board
        width = board.columns()
        line = self._colored(format_line(m, width), m)
        if not m.settled:
            self._final_key = None
            board.show(id(self), line)
            return
        if self._final_key == m.key():
            return  # the final line is written once
        self._final_key = m.key()
        text = line + "\n"
        for f in (failures or ())[:MAX_FAILURES_PRINTED]:
            text += _fit(f"  failed {f.call or f.name}: {f.error}", width) + "\n"
        if m.failed > MAX_FAILURES_PRINTED:
            more = m.failed - MAX_FAILURES_PRINTED
            text += f"  ... {more} more failure{'s' if more > 1 else ''}\n"
        board.finish(id(self), text)

    def show_output(self, output: Any, previous: Any = None) -> None:
        """Write the lines the group's tasks completed since ``previous`` (the
        ``live_output`` setting; :class:`nbgroups.forward.Lines`), above its line."""
        new = output.total - (previous.total if previous is not None else 0)
        if new <= 0:
            return
        lines = output.lines[-new:]
        text = "".join(f"  {line}\n" for line in lines)
        if new > len(lines):
            text = f"  [… {new - len(lines)} lines not shown]\n" + text
        self._board.above(text)

    def _colored(self, line: str, m: Meter) -> str:
        """Failures in red, a group done without failures in green (terminals that
        take colour, NO_COLOR unset)."""
        if not self._board.color:
            return line
        if m.failed:
            return line.replace(f"failed {m.failed}", f"{RED}failed {m.failed}{RESET}", 1)
        if m.state == "done":
            return line.replace(f"done {m.done}", f"{GREEN}done {m.done}{RESET}", 1)
        return line

    def close(self) -> None:
        """End a line left unfinished (a group closed while it ran), so that what is
        printed next starts on a line of its own."""
        self._board.drop(id(self))
