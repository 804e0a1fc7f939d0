"""Pictures of how a group's work went: a Gantt of tasks per worker over time
(an inline SVG), and a Chrome trace (JSON) that Perfetto and chrome://tracing open.

The SVG is written here, a few dozen lines, rather than drawn with a plotting
library: matplotlib or plotly would add tens of megabytes and ~0.5 s of import
to a kernel for one picture, and an SVG shows in every Jupyter front end and
in saved notebooks as it is. Works on anything shaped like a task record
(``worker``, ``started``, ``stopped``, ``state``, ``func``, ``args``, ``kwargs``).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from typing import Any

from .triage import call_text

COLORS = {"success": "#4caf50", "failure": "#e53935", "cancelled": "#9e9e9e"}
WIDTH, LABEL, ROW, TOP = 860, 150, 16, 22  # pixels


def _ran(tasks: Iterable[Any]) -> list[Any]:
    return [t for t in tasks if t.worker and t.started is not None and t.stopped is not None]


class Timeline:
    """A displayable Gantt of a group's tasks: one row per worker, one bar per task
    run, coloured by how it ended (green success, red failure). ``svg`` is the
    picture; a notebook shows it as is."""

    def __init__(self, tasks: Iterable[Any]) -> None:
        self.tasks = _ran(tasks)
        self.svg = self._draw()

    def _draw(self) -> str:
        tasks = self.tasks
        if not tasks:
            return ("<svg xmlns='http://www.w3.org/2000/svg' width='300' height='24'>"
                    "<text x='4' y='16' font-size='12'>no task has run yet</text></svg>")
        workers = sorted({t.worker for t in tasks})
        row_of = {wk: i for i, wk in enumerate(workers)}
        t0 = min(t.started for t in tasks)
        span = max(max(t.stopped for t in tasks) - t0, 1e-6)
        scale = (WIDTH - LABEL - 10) / span
        height = TOP + ROW * len(workers) + 6
        out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
               "font-family='sans-serif' font-size='11'>",
               f"<text x='{LABEL}' y='12'>0 s</text>",
               f"<text x='{WIDTH - 10}' y='12' text-anchor='end'>{span:.3g} s</text>"]
        for wk, i in row_of.items():
            y = TOP + ROW * i
            out.append(f"<text x='{LABEL - 6}' y='{y + 11}' text-anchor='end'>"
                       f"{html.escape(wk)}</text>")
        for t in tasks:
            x = LABEL + (t.started - t0) * scale
            w = max((t.stopped - t.started) * scale, 0.5)
            y = TOP + ROW * row_of[t.worker]
            state = getattr(t.state, "value", t.state)
            tip = f"{call_text(t.func, t.args, t.kwargs)}: {state}, " \
                  f"{t.stopped - t.started:.3g} s"
            out.append(f"<rect x='{x:.1f}' y='{y + 1}' width='{w:.1f}' height='{ROW - 3}' "
                       f"fill='{COLORS.get(state, '#607d8b')}'><title>{html.escape(tip)}"
                       "</title></rect>")
        out.append("</svg>")
        return "".join(out)

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return f"<Timeline: {len(self.tasks)} task runs>"


def chrome_trace(tasks: Iterable[Any], path: str | os.PathLike) -> str:
    """Write the tasks' runs as a Chrome trace (JSON array format: complete
    events, a process per host, a thread per worker pid); returns the path."""
    ran = _ran(tasks)
    hosts: dict[str, int] = {}
    events: list[dict] = []
    seen: set[tuple[int, int]] = set()
    for t in ran:
        host, _, pid = t.worker.rpartition(":")
        hid = hosts.setdefault(host, len(hosts) + 1)
        tid = int(pid) if pid.isdigit() else 0
        if (hid, tid) not in seen:
            seen.add((hid, tid))
            events.append({"ph": "M", "name": "thread_name", "pid": hid, "tid": tid,
                           "args": {"name": f"worker {t.worker}"}})
        state = getattr(t.state, "value", t.state)
        events.append({
            "ph": "X", "name": call_text(t.func, t.args, t.kwargs), "cat": state,
            "ts": t.started * 1e6, "dur": (t.stopped - t.started) * 1e6,
            "pid": hid, "tid": tid,
            "args": {"id": t.id, "state": state, "error": t.error,
                     "memory": t.memory, "submitted": t.submitted},
        })
    for host, hid in hosts.items():
        events.append({"ph": "M", "name": "process_name", "pid": hid, "tid": 0,
                       "args": {"name": host}})
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f, default=str)
    return path
