"""Failure triage: a group's failures grouped by cause, each call named by its arguments.

Fifty failures of one cause are one line, ``ValueError: k must be > …, got … x 50``
(a multiplication sign in place of the x): failures are grouped by exception
type and message with numbers and quoted values folded (:func:`fold`), and
each group lists its calls as they were made (``simulate(k=0.0, dt=0.01)``,
:func:`call_text`), with their output and traceback. ``TaskList.failures()``
returns :class:`Failures`; the progress widget groups its failure list the
same way.

Works on anything shaped like a task record (``error``, ``func``, ``args``,
``kwargs``, ``traceback``, ``stdout``, ``stderr``, ``id``): no import of
:mod:`nbgroups.records`, which imports this module lazily.
"""

from __future__ import annotations

import html
import re
import reprlib
from collections.abc import Iterable
from typing import Any

_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w])")
FOLD = "…"
TIMES = "\u00d7"  # the multiplication sign of "x 5"

class _Brief(reprlib.Repr):
    """reprlib's short repr, and one line always: an object whose repr spans
    lines (a DataFrame, a 2-d array) as its type and shape."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = width
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 6

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return super().repr_instance(x, level)  # reprlib's "<X instance at 0x...>"
        if "\n" in text:
            shape = getattr(x, "shape", None)
            return f"<{type(x).__name__}{f' {tuple(shape)}' if isinstance(shape, tuple) else ''}>"
        if len(text) > self.maxother:  # as reprlib cuts it: the middle goes
            i = max(0, (self.maxother - 3) // 2)
            j = max(0, self.maxother - 3 - i)
            text = text[:i] + "..." + text[len(text) - j:]
        return text


_repr = _Brief(40)
_brief = _Brief(60)


def brief(value: Any) -> str:
    """``value``'s repr on one line, at most about 60 characters (a 50 MB
    DataFrame as ``<DataFrame (1310720, 5)>``)."""
    return _brief.repr(_unkept(value))


_VALUE = re.compile(f"({_QUOTED.pattern}|{_NUMBER.pattern})")


def common(errors: list[str]) -> str:
    """Error lines of one cause (one :func:`fold`) as one: the values they share
    kept, the others folded (``'k must be > 0, got k=…'``)."""
    split = [_VALUE.split(e) for e in errors]
    first = split[0]
    if any(len(parts) != len(first) for parts in split):
        return fold(errors[0])
    out = []
    for i, part in enumerate(first):
        if i % 2 == 0 or all(parts[i] == part for parts in split):
            out.append(part)
        else:
            out.append(f"'{FOLD}'" if part[:1] in "'\"" else FOLD)
    return "".join(out)


def fold(error: str) -> str:
    """The error line with quoted values and numbers folded: what failures of one
    cause share (``"KeyError: 'x3'"`` -> ``"KeyError: '…'"``)."""
    return _NUMBER.sub(FOLD, _QUOTED.sub(f"'{FOLD}'", error))


def call_text(func: str, args: tuple | None, kwargs: dict | None,
              width: int | None = None) -> str:
    """A call as it was made, values shortened: ``simulate(k=0.0, dt=0.01)``.

    With ``width``, the text fits in that many characters by cutting the longest
    values first, so that every argument stays in sight: a 50 MB DataFrame
    passed first leaves ``fit(df=<stored DataFrame (1…, alpha=0.1)``, not a
    label whose ``alpha`` (what tells the calls apart) is cut off.
    """
    name = func.rsplit(".", 1)[-1] if func else "task"
    names = [""] * len(args or ()) + [f"{k}=" for k in kwargs or {}]
    values = [_repr.repr(_unkept(a)) for a in args or ()]
    values += [_repr.repr(_unkept(v)) for v in (kwargs or {}).values()]
    if width is not None:
        values = _fitted(values, width - len(name) - 2 - sum(map(len, names))
                         - 2 * max(len(values) - 1, 0))
    text = f"{name}({', '.join(n + v for n, v in zip(names, values, strict=True))})"
    if width is not None and len(text) > width:  # names alone do not fit
        text = text[:width - 1] + FOLD
    return text


def _fitted(values: list[str], room: int) -> list[str]:
    """``values`` cut, longest first, to fit in ``room`` characters together
    (each keeps at least one character and the fold mark)."""
    if sum(map(len, values)) <= room:
        return values
    cap = max(map(len, values))
    while cap > 2 and sum(min(len(v), cap) for v in values) > room:
        cap -= 1
    return [v if len(v) <= cap else v[:cap - 1] + FOLD for v in values]


def _unkept(value: Any) -> Any:
    """An argument a snapshot keeps as its pickle (:class:`~nbgroups.serialize.Pickled`)
    as the object it stands for; any other as it is."""
    return value.nbgroups_value() if hasattr(type(value), "nbgroups_value") else value


class FailureGroup:
    """Failed tasks of one cause: ``title`` (the folded error line), the tasks."""

    def __init__(self, title: str, tasks: list) -> None:
        self.title = title
        self.tasks = tasks

    @property
    def calls(self) -> list[str]:
        """Each task's call with its arguments (``simulate(k=0.0, dt=0.01)``)."""
        return [call_text(t.func, t.args, t.kwargs) for t in self.tasks]

    def heading(self) -> str:
        """``'ValueError: k must be > …  x 5'`` (a multiplication sign for the x); a
        group of one shows its own error."""
        if len(self.tasks) == 1:
            return self.tasks[0].error or self.title
        return f"{self.title}  {TIMES} {len(self.tasks)}"

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"<FailureGroup {self.heading()!r}>"


class Failures(list):
    """A group's failures by cause, largest first (a list of :class:`FailureGroup`).

    Printed, one line per cause and an indented line per call; in a notebook,
    an expandable list of causes, then calls, with each call's traceback,
    output and how to re-run it in the kernel (``nbgroups.debug(id)``).
    """

    def __str__(self) -> str:
        if not self:
            return "no failures"
        lines = []
        for g in self:
            lines.append(g.heading())
            lines += (f"  {c}" for c in g.calls)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Failures: {sum(map(len, self))} in {len(self)} cause(s)>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        if not self:
            return "<i>no failures</i>"
        out = []
        for g in self:
            items = "".join(
                f"<details><summary><code>{html.escape(call)}</code></summary>"
                f"{task_html(t)}</details>" for call, t in zip(g.calls, g.tasks, strict=True))
            out.append(f"<details><summary><b>{html.escape(g.heading())}</b></summary>"
                       f"<div style='margin-left:1.5em'>{items}</div></details>")
        return "".join(out)


def task_html(t: Any) -> str:
    """One failed task's traceback, output and the debug hint, as HTML."""
    pre = "<pre style='font-size:85%;white-space:pre-wrap;margin:0.2em 0'>"
    parts = [f"{pre}{html.escape(t.traceback or t.error or 'failed')}</pre>"]
    for label, text in (("stdout", t.stdout), ("stderr", t.stderr)):
        if text:
            parts.append(f"<div><i>{label}</i></div>{pre}{html.escape(text)}</pre>")
    parts.append(f"<div style='opacity:.75'>Debug: <code>nbgroups.debug({t.id!r})</code> "
                 "re-runs this call here; then <code>%debug</code></div>")
    return "".join(parts)


def group_failures(tasks: Iterable[Any]) -> Failures:
    """The failed tasks among ``tasks``, grouped by folded error, largest group first
    (ties: the order of their first failure)."""
    groups: dict[str, list] = {}
    for t in tasks:
        if t.success is False:
            groups.setdefault(fold(t.error or "failed"), []).append(t)
    ordered = sorted(groups.values(), key=len, reverse=True)  # stable: first seen first
    return Failures(FailureGroup(common([t.error or "failed" for t in ts]), ts)
                    for ts in ordered)
