"""The text fallback: one line on stderr, rewritten in place with ``\\r``, and
a final line (plus the first failures) when the group settles."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from .formatting import Failure, Meter, format_line

MAX_FAILURES_PRINTED = 5


class TextView:
    """Writes a group's progress line to ``stream`` (default: ``sys.stderr`` now)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._width = 0
        self._final_key: tuple | None = None

    @property
    def min_interval(self) -> float:
        """Seconds between rewrites: a terminal redraws fast, a log file keeps every line."""
        isatty = getattr(self.stream, "isatty", None)
        try:
            return 0.1 if isatty is not None and isatty() else 1.0
        except ValueError:  # a closed stream
            return 1.0

    def update(self, m: Meter, failures: Sequence[Failure] | None) -> None:
        line = format_line(m)
        if m.settled:
            if self._final_key == m.key():
                return  # the final line is written once
            self._final_key = m.key()
            text = "\r" + line.ljust(self._width) + "\n"
            for f in (failures or ())[:MAX_FAILURES_PRINTED]:
                text += f"  failed {f.name}: {f.error}\n"
            if m.failed > MAX_FAILURES_PRINTED:
                text += f"  ... {m.failed - MAX_FAILURES_PRINTED} more failures\n"
            self._width = 0
        else:
            self._final_key = None
            text = "\r" + line.ljust(self._width)
            self._width = len(line)
        try:
            self.stream.write(text)
            self.stream.flush()
        except ValueError:  # the stream was closed (a finished script)
            pass

    def close(self) -> None:
        """End a line left unfinished (a group closed while it ran), so that what is
        printed next starts on a line of its own."""
        if self._width:
            self._width = 0
            try:
                self.stream.write("\n")
                self.stream.flush()
            except ValueError:
                pass
