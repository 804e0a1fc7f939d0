"""The text fallback: one line per running group on stderr, rewritten in place,
and a final line (plus the first failures) when the group settles.

Views writing to the same stream share a :class:`Board`: one group's line is
rewritten with ``\\r``; several groups on a terminal are a block of lines
redrawn with ANSI cursor movement, the finished ones printed above it; several
groups on a stream that is not a terminal (a log file) get a line per update,
since ``\\r`` cannot keep two lines apart there.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Sequence
from typing import TextIO

from .formatting import Failure, Meter, format_line

MAX_FAILURES_PRINTED = 5
UP = "\x1b[{}A"  # cursor up n lines
CLEAR_DOWN = "\x1b[J"  # clear from the cursor to the end of the screen


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


class Board:
    """The unfinished lines of the views writing to one stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = _isatty(stream)
        self.lines: dict[int, str] = {}  # view id -> its current line, in order of arrival
        self._rows = 0  # terminal: rows of the block drawn last (the cursor is on its last)
        self._width = 0  # the open ``\r`` line's length (padded over), 0 if none is open

    def show(self, key: int, line: str) -> None:
        """Draw the current line of the view ``key``."""
        with _LOCK:
            self.lines[key] = line
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
            if self.tty:
                self._write(self._erase() + text + self._block())
            else:
                first, _, rest = text.partition("\n")
                self._write("\r" + first.ljust(self._width) + "\n" + rest)
                self._width = 0

    def drop(self, key: int) -> None:
        """The view ``key`` closed while running: its line ends where it stands."""
        with _LOCK:
            line = self.lines.pop(key, None)
            if line is None:
                return
            if self.tty:  # its last line stays, printed above the others
                self._write(self._erase() + line + "\n" + self._block())
            else:
                self._write(self._end_line())

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
        return 0.1 if self._board.tty else 1.0

    def update(self, m: Meter, failures: Sequence[Failure] | None) -> None:
        line = format_line(m)
        if not m.settled:
            self._final_key = None
            self._board.show(id(self), line)
            return
        if self._final_key == m.key():
            return  # the final line is written once
        self._final_key = m.key()
        text = line + "\n"
        for f in (failures or ())[:MAX_FAILURES_PRINTED]:
            text += f"  failed {f.name}: {f.error}\n"
        if m.failed > MAX_FAILURES_PRINTED:
            text += f"  ... {m.failed - MAX_FAILURES_PRINTED} more failures\n"
        self._board.finish(id(self), text)

    def close(self) -> None:
        """End a line left unfinished (a group closed while it ran), so that what is
        printed next starts on a line of its own."""
        self._board.drop(id(self))
