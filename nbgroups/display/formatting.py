"""The pure formatter: group counts and a clock reading in, display fields out.

Like tqdm's ``format_meter``: no widgets, no streams, no store. The widget and
text adapters only lay out what :func:`meter` computed, so what a user sees is
tested here without a display.

>>> from nbgroups.records import GroupCounts
>>> c = GroupCounts("sweep", submitted=200, done=150, failed=10, running=2, queued=38,
...                 first_submitted=1000.0)
>>> m = meter(c, now=1016.0)
>>> m.value, m.max, m.bar_style, m.elapsed_text, m.eta_text
(160, 200, 'danger', '0:16', '0:04')
>>> format_line(m)
'sweep  80%|████████████████    | 160/200 [done 150, failed 10, running 2, queued 38] 0:16<0:04'

A re-run sweep (``reuse=True``) also says how many calls it found done:

>>> format_line(meter(GroupCounts("sweep", submitted=6, done=6, reused=4,
...                               first_submitted=0.0, last_finished=2.0), now=9.0))
'sweep 100%|████████████████████| 6/6 [done 6, failed 0, running 0, queued 0, reused 4] 0:02'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..records import GroupCounts

BAR_WIDTH = 20


class Failure(NamedTuple):
    """One failed task as the failure list shows it."""

    name: str
    error: str  # the exception line, e.g. "ValueError: bad x"
    traceback: str
    call: str = ""  # the call with its arguments, e.g. "simulate(k=0.0, dt=0.01)"
    id: str = ""
    stdout: str | None = None
    stderr: str | None = None


@dataclass(frozen=True)
class Meter:
    """What a progress view shows of one group at one moment."""

    group: str
    submitted: int
    done: int
    failed: int
    cancelled: int
    running: int
    queued: int
    reused: int  # calls of the group that re-submissions found done (``reuse=True``)
    value: int  # finished + cancelled: the bar's position
    max: int  # submitted: the bar's end
    percent: int
    elapsed: float
    eta: float | None  # seconds left at the current rate; None if unknown
    state: str  # 'empty', 'running', 'done', 'failed', 'cancelled'
    bar_style: str  # ipywidgets: '', 'success', 'danger', 'warning'

    @property
    def settled(self) -> bool:
        return self.state not in ("empty", "running")

    @property
    def elapsed_text(self) -> str:
        return format_duration(self.elapsed)

    @property
    def eta_text(self) -> str:
        return "?" if self.eta is None else format_duration(self.eta)

    @property
    def counts_text(self) -> str:
        parts = [f"done {self.done}", f"failed {self.failed}", f"running {self.running}",
                 f"queued {self.queued}"]
        if self.cancelled:
            parts.append(f"cancelled {self.cancelled}")
        if self.reused:
            parts.append(f"reused {self.reused}")
        return ", ".join(parts)

    def key(self) -> tuple:
        """What, when unchanged, means nothing on screen needs redrawing."""
        return (self.submitted, self.done, self.failed, self.cancelled, self.running,
                self.queued, self.reused, self.elapsed_text, self.eta_text)


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above.

    >>> format_duration(5), format_duration(75.9), format_duration(3725)
    ('0:05', '1:15', '1:02:05')
    """
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def meter(counts: GroupCounts, now: float) -> Meter:
    """The display fields of ``counts`` at wall-clock time ``now`` (``time.time()``)."""
    c = counts
    value = min(c.finished + c.cancelled, c.submitted)
    start = c.first_submitted
    settled = c.submitted > 0 and c.settled
    end = c.last_finished if settled and c.last_finished is not None else now
    elapsed = max(0.0, end - start) if start is not None else 0.0
    if settled:
        eta: float | None = 0.0
    elif c.finished and elapsed > 0:
        eta = (c.submitted - value) * elapsed / c.finished
    else:
        eta = None
    if c.submitted == 0:
        state = "empty"
    elif not settled:
        state = "running"
    elif c.failed:
        state = "failed"
    elif c.cancelled:
        state = "cancelled"
    else:
        state = "done"
    if c.failed:
        style = "danger"
    elif state == "done":
        style = "success"
    elif state == "cancelled":
        style = "warning"
    else:
        style = ""
    percent = math.floor(100 * value / c.submitted) if c.submitted else 0
    return Meter(
        group=c.group, submitted=c.submitted, done=c.done, failed=c.failed,
        cancelled=c.cancelled, running=c.running, queued=c.queued, reused=c.reused,
        value=value,
        max=c.submitted, percent=percent, elapsed=elapsed, eta=eta, state=state,
        bar_style=style,
    )


def format_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A bar of ``width`` cells, with eighth-cell resolution.

    >>> format_bar(0.5, 4), format_bar(1.0, 4), format_bar(0.0, 2)
    ('██  ', '████', '  ')
    """
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if full < width else ""
    return ("█" * full + partial).ljust(width)


def format_line(m: Meter) -> str:
    """The one-line text view (tqdm-like)."""
    fraction = m.value / m.max if m.max else 0.0
    times = m.elapsed_text if m.settled else f"{m.elapsed_text}<{m.eta_text}"
    return (f"{m.group} {m.percent:3d}%|{format_bar(fraction)}| {m.value}/{m.max} "
            f"[{m.counts_text}] {times}")
