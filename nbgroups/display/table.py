"""The table of groups shown by ``%nbgroups`` and ``nbgroups list``: every state a
task can end in has its column (cancelled tasks are neither done nor failed)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable

from ..records import GroupCounts
from .formatting import meter

COLUMNS = ("group", "submitted", "done", "failed", "cancelled", "running", "queued",
           "reused", "elapsed")


def group_rows(counts: Iterable[GroupCounts], now: float | None = None) -> list[dict]:
    """One dict per group with the table's columns (pure: counts in, rows out)."""
    now = time.time() if now is None else now
    rows = []
    for c in counts:
        m = meter(c, now)
        rows.append({"group": c.group, "submitted": c.submitted, "done": c.done,
                     "failed": c.failed, "cancelled": c.cancelled, "running": c.running,
                     "queued": c.queued,
                     "reused": c.reused, "elapsed": m.elapsed_text})
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table, columns aligned (numbers to the right).

    >>> print(format_table([{"group": "g", "submitted": 10, "done": 7, "failed": 1,
    ...                      "cancelled": 2, "running": 0, "queued": 0, "reused": 4,
    ...                      "elapsed": "0:03"}]))
    group  submitted  done  failed  cancelled  running  queued  reused  elapsed
    g             10     7       1          2        0       0       4     0:03
    """
    if not rows:
        return "no groups"
    cells = [list(COLUMNS)] + [[str(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


class GroupTable:
    """Rows of the group table; shows as HTML in a notebook, as text in a terminal."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return format_table(self.rows)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(format_table(self.rows))

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<i>no groups</i>"
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in COLUMNS) + "</tr>"
            for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
