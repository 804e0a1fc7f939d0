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

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..records import GroupCounts

BAR_WIDTH = 20
MAX_FAILURES_STATIC = 20  # failures listed by the static rendering (saved notebooks)


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
    deleted: bool = False  # the group's label was deleted since: this is its last state

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

    @property
    def short_counts_text(self) -> str:
        """:attr:`counts_text` without the counts that are zero (``done`` always)."""
        parts = [f"done {self.done}"] + [
            f"{label} {n}" for label, n in (
                ("failed", self.failed), ("running", self.running), ("queued", self.queued),
                ("cancelled", self.cancelled), ("reused", self.reused)) if n]
        return ", ".join(parts)

    def key(self) -> tuple:
        """What, when unchanged, means nothing on screen needs redrawing."""
        return (self.submitted, self.done, self.failed, self.cancelled, self.running,
                self.queued, self.reused, self.elapsed_text, self.eta_text, self.deleted)


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


GOOD_BAR_WIDTH = 10
MIN_BAR_WIDTH = 5


def format_line(m: Meter, width: int | None = None) -> str:
    """The one-line text view (tqdm-like), at most ``width`` characters if given.

    A narrow terminal first gets a shorter bar, then only the counts that are not
    zero, then a still shorter bar, then no bar, and at last the line cut with an
    ellipsis:

    >>> from nbgroups.records import GroupCounts
    >>> m = meter(GroupCounts("sweep", submitted=200, done=150, failed=10, running=2,
    ...                       queued=38, first_submitted=1000.0), now=1016.0)
    >>> len(format_line(m))
    94
    >>> format_line(m, 88)
    'sweep  80%|███████████▎  | 160/200 [done 150, failed 10, running 2, queued 38] 0:16<0:04'
    >>> m = meter(GroupCounts("sweep", submitted=200, done=150, running=2, queued=48,
    ...                       first_submitted=1000.0), now=1016.0)
    >>> format_line(m, 79)
    'sweep  75%|████████████    | 150/200 [done 150, running 2, queued 48] 0:16<0:05'
    >>> format_line(m, 40)
    'sweep  75% 150/200 [done 150, running 2…'
    """
    fraction = m.value / m.max if m.max else 0.0
    times = m.elapsed_text if m.settled else f"{m.elapsed_text}<{m.eta_text}"
    if m.deleted:
        times += " (group deleted)"
    head = f"{m.group} {m.percent:3d}%"
    tail = f" {m.value}/{m.max} [{m.counts_text}] {times}"
    full = f"{head}|{format_bar(fraction)}|{tail}"
    if width is None or len(full) <= width:
        return full
    short = f" {m.value}/{m.max} [{m.short_counts_text}] {times}"
    for least in (GOOD_BAR_WIDTH, MIN_BAR_WIDTH):  # a readable bar before every count
        for rest in (tail, short):
            room = width - len(head) - len(rest) - 2  # the bar's two edges
            if room >= least:
                return f"{head}|{format_bar(fraction, min(room, BAR_WIDTH))}|{rest}"
    line = head + short
    return line if len(line) <= width else line[:max(width - 1, 0)] + "…"


def format_text(m: Meter, failures: Sequence[Failure] = (),
                limit: int = MAX_FAILURES_STATIC) -> str:
    """The view as plain text: its line, then the first ``limit`` failures.

    This is what a saved notebook shows where widgets cannot be drawn (and no
    HTML either), so it carries the whole state. Each failure is named by its
    call, as the live views name it (its task name when the call is not known):

    >>> from nbgroups.records import GroupCounts
    >>> m = meter(GroupCounts("g", submitted=3, done=2, failed=1, first_submitted=0.0,
    ...                       last_finished=2.0), now=5.0)
    >>> print(format_text(m, [Failure("red-fox-tall-tree", "ValueError: bad", "tb",
    ...                               "simulate(k=0, dt=0.1)")]))
    g 100%|████████████████████| 3/3 [done 2, failed 1, running 0, queued 0] 0:02
      failed simulate(k=0, dt=0.1): ValueError: bad
    """
    lines = [format_line(m)]
    lines += [f"  failed {f.call or f.name}: {f.error}" for f in failures[:limit]]
    if m.failed > min(len(failures), limit):
        more = m.failed - min(len(failures), limit)
        lines.append(f"  ... {more} more failure{'s' if more > 1 else ''}")
    return "\n".join(lines)


def format_html(m: Meter, failures: Sequence[Failure] = (),
                limit: int = MAX_FAILURES_STATIC) -> str:
    """The view as static HTML (no script, no widget): title, bar, counts, times, and
    the first ``limit`` failures with their tracebacks folded. Saved notebooks carry
    it beside the widget, so GitHub, nbviewer and ``nbconvert`` show the state the
    view ended in.

    >>> from nbgroups.records import GroupCounts
    >>> m = meter(GroupCounts("g<1>", submitted=4, done=4, first_submitted=0.0,
    ...                       last_finished=2.0), now=5.0)
    >>> print(format_html(m))
    <div class="nbgroups-static"><b>g&lt;1&gt;</b> <progress value="4" max="4"></progress> <b>100%</b> 4/4 &nbsp; done <b>4</b> · failed <b>0</b> · running <b>0</b> · queued <b>0</b> &nbsp; <span>elapsed 0:02</span></div>
    """  # noqa: E501
    counts = [("done", m.done), ("failed", m.failed), ("running", m.running),
              ("queued", m.queued)]
    counts += [(label, n) for label, n in (("cancelled", m.cancelled), ("reused", m.reused))
               if n]
    times = f"elapsed {m.elapsed_text}" + ("" if m.settled else f" · ETA {m.eta_text}")
    if m.deleted:
        times += " · <i>group deleted</i>"
    parts = [
        f"<b>{html.escape(m.group)}</b>",
        f'<progress value="{m.value}" max="{max(m.max, 1)}"></progress>',
        f"<b>{m.percent}%</b> {m.value}/{m.max} &nbsp;",
        " · ".join(f"{label} <b>{n}</b>" for label, n in counts),
        f"&nbsp; <span>{times}</span>",
    ]
    out = " ".join(parts)
    if failures:
        shown = failures[:limit]
        title = f"{m.failed} failed" + (f" (first {len(shown)} shown)"
                                        if m.failed > len(shown) else "")
        items = "".join(
            f"<li><code>{html.escape(f.call or f.name)}</code>: {html.escape(f.error)}"
            + (f"<details><summary>traceback</summary><pre>{html.escape(f.traceback)}</pre>"
               "</details>" if f.traceback else "") + "</li>"
            for f in shown)
        out += f"<details><summary>{title}</summary><ul>{items}</ul></details>"
    return f'<div class="nbgroups-static">{out}</div>'
