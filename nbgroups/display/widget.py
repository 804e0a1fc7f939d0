"""The ipywidgets adapter: lays out a :class:`~.formatting.Meter` and a failure list.

Thin on purpose: every number and word comes from :mod:`.formatting`. Each update
sets only the traits that changed, grouped per widget with ``hold_sync()``,
so one refresh is at most a handful of comm messages whatever the group size.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
from ipywidgets.widgets.widget_bool import ToggleButtonStyle  # not exported either
from ipywidgets.widgets.widget_int import ProgressStyle  # not exported by ipywidgets 8
from ipywidgets.widgets.widget_string import HTMLStyle

from ..triage import TIMES, common, fold
from .formatting import Failure, Meter

MAX_FAILURES_SHOWN = 20
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # nbgroups/
MAX_TASK_LINES = 8  # running tasks whose own progress is shown
TIMELINE_EVERY = 2.0  # seconds between two redraws of a shown timeline while the group runs


class WidgetView:
    """The widget tree of one group's progress view.

    One line (the bar titled with the group, the status, Cancel, the Timeline
    toggle), and under it,
    from the first failure on, the failure section (its title, Retry failed, the
    tracebacks). Made in the cell that submits, where every widget costs
    ~0.25 ms to make (its layout and style are models too): the line is five
    widgets, and the failure section is only made when needed. ``on_cancel``
    and ``on_retry`` are called (with no argument) when the buttons are clicked.

    ``on_timeline()`` returns the group's timeline as SVG text: the Timeline
    toggle shows it under the line (redrawn as the group goes on, at most every
    TIMELINE_EVERY seconds, and when it settles). ``on_debug(task_id)`` re-runs
    a failed call in the kernel (each failure's Debug button), inside the
    failure section's output area, where what it raises is shown (and kept for
    ``%debug``).
    """

    def __init__(self, group: str, on_cancel: Callable[[], object],
                 on_retry: Callable[[], object],
                 on_timeline: Callable[[], str] | None = None,
                 on_debug: Callable[[str], object] | None = None) -> None:
        look = _look()
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="",
                                 description=f"<b>{html.escape(group)}</b>",
                                 description_allow_html=True, style=look["bar_style"],
                                 layout=look["bar"])
        self.counts = w.HTML("", style=look["html_style"], layout=look["plain"])
        self.cancel_button = w.Button(description="Cancel", icon="stop",
                                      tooltip="Cancel the group's tasks not yet started",
                                      style=look["button_style"], layout=look["button"])
        self.cancel_button.on_click(lambda _b: on_cancel())
        self._on_retry = on_retry
        self._on_timeline = on_timeline
        self._on_debug = on_debug
        self.timeline_button = w.ToggleButton(
            value=False, description="Timeline", icon="chart-bar",
            tooltip="Show the group's tasks per worker over time",
            style=look["toggle_style"], layout=look["button"])
        self.timeline_button.observe(self._toggle_timeline, "value")
        self.timeline_html: w.HTML | None = None  # made when first shown
        self._timeline_at = 0.0
        self._timeline_settled = False
        self.debug_buttons: list[w.Button] = []  # one per failure shown (with an id)
        self.debug_output: w.Output | None = None
        self.retry_button: w.Button | None = None  # these four: at the first failure
        self.failures_title: w.HTML | None = None
        self.failure_list: w.Accordion | None = None
        self.failure_box: w.VBox | None = None
        # the failure section, a child of full width, wraps onto a line of its own
        self.box = w.HBox([self.bar, self.counts, self.cancel_button, self.timeline_button],
                          layout=look["line"])
        self.box.add_class("nbgroups-progress")
        self.failures: tuple[Failure, ...] = ()
        self._causes_note = ""  # "20 of 31 causes shown" when the list is cut
        self.tasks_html: w.HTML | None = None  # running tasks' own progress, when reported
        self.output_html: w.HTML | None = None  # live output (live_output), once written

    def update(self, m: Meter, failures: Sequence[Failure] | None) -> None:
        """Show ``m``; ``failures`` (None: unchanged) is the failure list."""
        bar = self.bar
        with bar.hold_sync():
            if bar.max != max(m.max, 1):
                bar.max = max(m.max, 1)
            if bar.value != m.value:
                bar.value = m.value
            if bar.bar_style != m.bar_style:
                bar.bar_style = m.bar_style
        times = f"elapsed {m.elapsed_text}" + ("" if m.settled else f" · ETA {m.eta_text}")
        if m.deleted:
            times += " · <i>group deleted</i>"
        _set(self.counts, f"<b>{m.percent}%</b> &nbsp; {_counts_html(m)} &nbsp; "
                          f"<span style='opacity:.75'>{times}</span>")
        cancel_disabled = m.running + m.queued == 0 or m.deleted
        if self.cancel_button.disabled != cancel_disabled:
            self.cancel_button.disabled = cancel_disabled
        if failures is not None and (m.failed or self.failure_box is not None):
            self._show_failures(m.failed, tuple(failures))
        if self.timeline_button.value:
            self._refresh_timeline(m.settled)
        retry_disabled = m.failed == 0 or m.deleted
        if self.retry_button is not None and self.retry_button.disabled != retry_disabled:
            self.retry_button.disabled = retry_disabled

    def show_tasks(self, tasks: Sequence[tuple]) -> None:
        """Under the bar, each running task's own report (:func:`nbgroups.report`):
        ``(task id, call, done, total, note)``; an empty list hides the lines."""
        if self.tasks_html is None:
            if not tasks:
                return
            self.tasks_html = w.HTML("", layout=w.Layout(width="100%"))
            self.tasks_html.add_class("nbgroups-task-progress")
            children = list(self.box.children)
            children.insert(4, self.tasks_html)  # after the buttons, before the rest
            self.box.children = tuple(children)
        _set(self.tasks_html, "".join(_task_line(*t) for t in tasks[:MAX_TASK_LINES]))

    def show_output(self, output: Any, previous: Any = None) -> None:
        """Under the bar, the last lines the group's tasks wrote (the ``live_output``
        setting): ``output`` is a :class:`nbgroups.forward.Lines`."""
        lines = (*output.lines, *output.open)
        if self.output_html is None:
            if not lines:
                return
            self.output_html = w.HTML("", layout=w.Layout(width="100%"))
            self.output_html.add_class("nbgroups-live-output")
            children = list(self.box.children)
            at = children.index(self.failure_box) if self.failure_box in children \
                else len(children)
            children.insert(at, self.output_html)
            self.box.children = tuple(children)
        _set(self.output_html,
             "<pre style='font-size:85%;max-height:16em;overflow-y:auto;margin:0.2em 0 0 1em;"
             "white-space:pre-wrap'>" + html.escape("\n".join(lines)) + "</pre>")

    # ------------------------------------------------------------ timeline
    def _toggle_timeline(self, change: dict) -> None:
        if change["new"]:
            self._refresh_timeline(None)
        elif self.timeline_html is not None:
            self.timeline_html.layout.display = "none"

    def _refresh_timeline(self, settled: bool | None) -> None:
        """Draw the timeline now (``settled`` None: asked for), or when due: at most
        every TIMELINE_EVERY s while the group runs, and once when it settles."""
        now = time.monotonic()
        if settled is not None:
            if settled and self._timeline_settled:
                return
            if not settled and now - self._timeline_at < TIMELINE_EVERY:
                return
            self._timeline_settled = settled
        if self._on_timeline is None:
            return
        svg = self._on_timeline()
        self._timeline_at = now
        if self.timeline_html is None:
            self.timeline_html = w.HTML("", layout=w.Layout(width="100%", overflow="auto"))
            self.timeline_html.add_class("nbgroups-timeline")
            children = list(self.box.children)
            children.insert(4, self.timeline_html)  # under the line
            self.box.children = tuple(children)
        _set(self.timeline_html, svg)
        if self.timeline_html.layout.display is not None:
            self.timeline_html.layout.display = None

    # ------------------------------------------------------------ failures
    def _debug(self, task_id: str) -> None:
        """A failure's Debug button: run its call again here, in the failure section's
        output area; what it raises is shown there by IPython, which keeps it for
        ``%debug`` (``sys.last_traceback``)."""
        out = self.debug_output
        if out is None or self._on_debug is None:
            return
        out.clear_output()
        with out:
            print(f"nbgroups.debug({task_id!r}): the call runs again here")
            try:
                self._on_debug(task_id)
            except BaseException as exc:
                from IPython import get_ipython

                ip = get_ipython()
                if ip is None:
                    raise
                # from the call's own frames on: nbgroups' (this button, debug()) left out
                tb = exc.__traceback__
                while tb is not None and tb.tb_next is not None \
                        and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
                    tb = tb.tb_next
                ip.showtraceback((type(exc), exc, tb))
                print("Run %debug in a cell to step through it.")
            else:
                print("It returned without raising this time.")

    def _debug_button(self, f: Failure) -> w.Button:
        button = w.Button(description="Debug", icon="bug",
                          layout=w.Layout(width="auto", align_self="flex-start"),
                          tooltip=f"Run {f.call or f.name} again here, in the kernel "
                                  f"(nbgroups.debug({f.id!r})); then %debug")
        button.on_click(lambda _b, tid=f.id: self._debug(tid))
        self.debug_buttons.append(button)
        return button

    def _show_failures(self, failed: int, failures: tuple[Failure, ...]) -> None:
        if self.failure_box is None:
            self.failures_title = w.HTML("")
            self.retry_button = w.Button(description="Retry failed", icon="redo",
                                         tooltip="Re-submit the group's failed tasks",
                                         layout=w.Layout(width="auto"))
            self.retry_button.on_click(lambda _b: self._on_retry())
            self.failure_list = w.Accordion(children=())
            self.debug_output = w.Output()
            self.debug_output.add_class("nbgroups-debug-output")
            self.failure_box = w.VBox([
                w.HBox([self.failures_title, self.retry_button],
                       layout=w.Layout(align_items="center", grid_gap="1em")),
                self.failure_list,
                self.debug_output,
            ], layout=w.Layout(width="100%"))
            self.box.children = (*self.box.children, self.failure_box)
        # Only the first failures are loaded (MAX_FAILURES_LOADED): a cause's count
        # then says so, or "x 41" would read as all of the group's 200 of that cause.
        partial = failed > len(failures)
        if failures != self.failures:
            self.failures = failures
            causes = by_cause(failures, of=len(failures) if partial else None)
            shown = causes[:MAX_FAILURES_SHOWN]
            self._causes_note = (f"{len(shown)} of {len(causes)} causes shown"
                                 if len(causes) > len(shown) else "")
            # A new Accordion per change, swapped into the box, never an edit of the
            # shown one: setting ``children`` and ``titles`` of a live Accordion (with a
            # failure inserted mid-list, as the list is in submission order) leaves the
            # browser showing some tasks twice and missing others.
            self.debug_buttons = []
            children = [self._failure_widget(fs) for _, fs in shown]
            new = w.Accordion(children=children, titles=tuple(t for t, _ in shown))
            old = self.failure_list
            self.failure_list = new
            head, _, *rest = self.failure_box.children
            self.failure_box.children = (head, new, *rest)
            _close_accordion(old)
        notes = [f"the first {len(failures)} listed"] if partial else []
        notes += [self._causes_note] if self._causes_note else []
        title = f"<b>{failed} failed</b>" + (f" ({', '.join(notes)})" if notes else "")
        _set(self.failures_title, title if failed else "")
        display = None if failed else "none"
        if self.failure_box.layout.display != display:
            self.failure_box.layout.display = display

    def _failure_widget(self, fs: list[Failure]) -> w.Widget:
        """One cause's failures: each one's call, traceback and output, and its
        Debug button (when it can be run again: an id and a kernel to run it in)."""
        if self._on_debug is None:
            return w.HTML("".join(_failure_html(f, len(fs) > 1) for f in fs))
        parts: list[w.Widget] = []
        for f in fs:
            parts.append(w.HTML(_failure_html(f, len(fs) > 1)))
            if f.id:
                parts.append(self._debug_button(f))
        return w.VBox(parts)

    def close(self) -> None:
        if self.failure_list is not None:
            _close_accordion(self.failure_list)
        self.box.close()


def by_cause(failures: Sequence[Failure],
             of: int | None = None) -> list[tuple[str, list[Failure]]]:
    """Failures grouped by folded error line (:func:`nbgroups.triage.fold`), largest
    first: ``(title, failures)``; a lone failure is titled by its call and error.
    ``of``: ``failures`` are only the group's first ``of``, and each count says so."""
    among = f" of the first {of}" if of is not None else ""
    groups: dict[str, list[Failure]] = {}
    for f in failures:
        groups.setdefault(fold(f.error), []).append(f)
    out = []
    for fs in sorted(groups.values(), key=len, reverse=True):
        one = fs[0]
        out.append((f"{one.call or one.name}: {one.error}" if len(fs) == 1
                    else f"{common([f.error for f in fs])}  {TIMES} {len(fs)}{among}", fs))
    return out


def _task_line(tid: str, call: str, done: float, total: float | None, note: str) -> str:
    if total:
        frac = max(0.0, min(1.0, done / total))
        amount = (f"<progress value='{frac:.3f}' max='1' style='width:8em'></progress> "
                  f"{100 * frac:.0f}%")
    else:
        amount = f"{done:g}"
    note = f" &middot; {html.escape(note)}" if note else ""
    return (f"<div style='font-size:90%;margin-left:1em'>&#9656; <code>{html.escape(call)}"
            f"</code> {amount}{note}</div>")


def _failure_html(f: Failure, with_call: bool) -> str:
    pre = "<pre style='font-size:85%;white-space:pre-wrap;margin:0.2em 0'>"
    parts = [f"<div><b><code>{html.escape(f.call or f.name)}</code></b></div>"
             if with_call else "",
             f"{pre}{html.escape(f.traceback or f.error)}</pre>"]
    for label, text in (("stdout", f.stdout), ("stderr", f.stderr)):
        if text:
            parts.append(f"<div><i>{label}</i></div>{pre}{html.escape(text)}</pre>")
    if f.id:
        parts.append(f"<div style='opacity:.75'>Debug: <code>nbgroups.debug({f.id!r})</code>"
                     " re-runs this call in the kernel; then <code>%debug</code></div>")
    return "".join(parts)


_LOOK: dict[str, w.Widget] = {}


def _look() -> dict[str, w.Widget]:
    """Layouts and styles every view shares (ipywidgets lets widgets share them):
    made once per kernel, not once per view, as each is a model of its own."""
    if not _LOOK:
        _LOOK.update(
            bar=w.Layout(flex="1 1 16em", min_width="12em"),
            bar_style=ProgressStyle(description_width="initial"),
            plain=w.Layout(),
            html_style=HTMLStyle(),
            button=w.Layout(width="auto"),
            button_style=w.ButtonStyle(),
            toggle_style=ToggleButtonStyle(),
            line=w.Layout(align_items="center", flex_flow="row wrap", grid_gap="0.2em 1em"),
        )
    return _LOOK


def _close_accordion(acc: w.Accordion) -> None:
    for child in acc.children:
        for part in getattr(child, "children", ()):  # a cause's failures and buttons
            part.close()
        child.close()
    acc.close()


def _set(widget: w.HTML, value: str) -> None:
    if widget.value != value:
        widget.value = value


def _counts_html(m: Meter) -> str:
    def item(label: str, n: int, color: str | None = None) -> str:
        style = f" style='color:{color}'" if color and n else ""
        return f"<span{style}>{label} <b>{n}</b></span>"

    parts = [item("done", m.done, "var(--jp-success-color1, green)"),
             item("failed", m.failed, "var(--jp-error-color1, red)"),
             item("running", m.running), item("queued", m.queued)]
    if m.cancelled:
        parts.append(item("cancelled", m.cancelled, "var(--jp-warn-color1, orange)"))
    if m.reused:
        parts.append(item("reused", m.reused))
    return " · ".join(parts)
