"""The renderer: draws every live view, rate-limited, from the right thread.

::

    runner thread ──listener()──▶ Renderer.poke: mark dirty (cheap, never draws)
                                     │ renderer thread: at most every 0.1 s, only on change
                                     ▼
             kernel idle: kernel event loop ──▶ ProgressView.refresh()
             cell running (a blocking wait): renderer thread ──▶ ProgressView.refresh()
             end of every cell (post_run_cell), interpreter exit ──▶ refresh (final state)

Drawing from the kernel's event loop while it is idle keeps updates on the
kernel's main thread (ipykernel 7.0 dropped display messages sent from other
threads). While a cell blocks that loop (``result_group(..., wait=-1)``) the
renderer thread draws (ipykernel >= 7.1 routes those messages to the running
cell); the end of every cell draws once more on the main thread, so the state
a notebook saves is the final one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from .. import api
from ..api import Session
from ..signalsafe import Wake
from . import text
from .view import MIN_INTERVAL, ProgressView, is_terminal, shell

log = logging.getLogger("nbgroups")

TICK = 1.0  # while a group runs, redraw elapsed/ETA at least this often
LIVE_TICK = 0.2  # ... and with the live_output setting, read the tasks' output this often
MAX_VIEWS = 200
LOOP_PATIENCE = 1.0  # seconds the kernel's loop may take to run a posted draw


class Renderer:
    """Draws every active view, rate-limited, from the right thread (module docstring).

    Listens to the session's runner changes (:meth:`Session.on_change`) while
    it has views.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.views: list[ProgressView] = []
        self._lock = threading.RLock()  # one draw at a time
        self._dirty = Wake()  # set from the kernel's main thread too (signalsafe)
        self._thread: threading.Thread | None = None
        self._listening = False
        self._shells: set[int] = set()
        self.cell_running = False
        self.loop: Any = None
        self._loop_pending = 0.0  # monotonic time a loop callback was posted, 0 if none
        self._waits = 0  # waits blocking now, in any thread
        self._wait_lock = threading.Lock()

    # ---------------------------------------------------------------- views
    def add(self, view: ProgressView) -> None:
        """Draw ``view`` from now on (the oldest settled view goes past MAX_VIEWS)."""
        if not self._listening:
            self.session.on_change(self.poke)
            self.session.on_wait(self.waiting)
            self._listening = True
        view.renderer = self
        with self._lock:
            self.views.append(view)
            if len(self.views) > MAX_VIEWS:
                stale = next((v for v in self.views if not v.active), self.views[0])
                self.views.remove(stale)
        view.refresh(force=True)
        self._ensure_thread()
        self.poke()

    def remove(self, view: ProgressView) -> None:
        """Stop drawing ``view``."""
        with self._lock, contextlib.suppress(ValueError):
            self.views.remove(view)

    def snapshot(self) -> list[ProgressView]:
        """The views drawn, oldest first (a copy)."""
        with self._lock:
            return list(self.views)

    def hook_shell(self, shell: Any) -> None:
        """Follow the shell's cells: draw from the event loop only while no cell
        runs, and draw every view once at the end of each cell."""
        if shell is None or id(shell) in self._shells:
            return
        self._shells.add(id(shell))
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)
        self.cell_running = True  # hooked from inside a cell
        kernel = getattr(shell, "kernel", None)
        self.loop = getattr(kernel, "io_loop", None)
        if is_terminal(shell):
            text.hold()  # the terminal's prompt: drawn over by nothing (text.py)

    def unhook_shell(self, shell: Any) -> None:
        """Stop following ``shell``'s cells."""
        if shell is None or id(shell) not in self._shells:
            return
        self._shells.discard(id(shell))
        for name, cb in (("pre_run_cell", self._pre_run_cell),
                         ("post_run_cell", self._post_run_cell)):
            with contextlib.suppress(ValueError):
                shell.events.unregister(name, cb)
        self.loop = None
        if is_terminal(shell):
            text.release()

    def _pre_run_cell(self, info: Any = None) -> None:
        self.cell_running = True
        if is_terminal(shell()):
            text.write_pending()  # groups that ended while the prompt was idle

    def _post_run_cell(self, result: Any = None) -> None:
        self.draw(force=True)
        self.cell_running = False
        for v in self.snapshot():  # from now on, another cell's run is not theirs
            v.cell_ended = True

    def waiting(self, started: bool) -> None:
        """A wait begins or ends (:meth:`Session.on_wait`). Text views draw while it
        blocks; before it returns their last state is drawn and the lines ended, so
        the final 100 % line is on screen before the result, and what is printed
        next (``Out[n]:``, the prompt) starts on a line of its own."""
        terminal = is_terminal(shell())
        with self._wait_lock:
            self._waits += 1 if started else -1
            first, last = started and self._waits == 1, not started and self._waits == 0
        try:
            if first and terminal:
                text.release()
            if last:
                for v in self.snapshot():
                    if v.mode == "text":
                        v.refresh(force=True)
                text.end_lines()
                if terminal:
                    text.hold()
        except Exception:  # drawing must never break a wait
            log.debug("nbgroups: drawing at a wait's end failed", exc_info=True)

    # ---------------------------------------------------------------- drawing
    def poke(self) -> None:
        """Something changed (called from the runner thread): draw soon. Never draws."""
        self._dirty.set()

    def draw(self, force: bool = False) -> None:
        """Refresh every active view (all of them with ``force``)."""
        self._loop_pending = 0.0
        for v in self.snapshot():
            if force or v.active:
                try:
                    v.refresh(force=force)
                except Exception:  # a closed store must not kill the renderer
                    log.debug("nbgroups: progress refresh of %r failed", v.group, exc_info=True)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nbgroups-progress",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._lock:
                ticking = any(v.active for v in self.views)
            tick = LIVE_TICK if api.settings().live_output else TICK
            self._dirty.wait(tick if ticking else None)
            self._dirty.clear()
            pause = last + MIN_INTERVAL - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the rate limit itself, not a wait for an event
            last = time.monotonic()
            self._dispatch()

    def _dispatch(self) -> None:
        loop = self.loop
        if loop is not None and not self.cell_running:
            now = time.monotonic()
            if not self._loop_pending:
                self._loop_pending = now
                try:
                    loop.add_callback(self.draw)
                    return
                except RuntimeError:  # the loop was closed
                    self.loop = None
            elif now - self._loop_pending < LOOP_PATIENCE:
                return  # the loop has not drawn the last one yet
            # the loop did not run our callback in time: it is blocked; draw here
        self.draw()

    def flush(self) -> None:
        """Draw every view now (interpreter exit, tests)."""
        self.draw(force=True)

    def at_exit(self) -> None:
        """Draw every view's last state, and end the text lines left open, so that
        the shell's prompt after a script starts on a line of its own."""
        self.flush()
        text.end_lines()

    def reset(self) -> None:
        """Forget every view and stop listening to the runner."""
        with self._lock:
            views, self.views = self.views, []
        for v in views:
            with contextlib.suppress(Exception):
                v.adapter.close()
        if self._listening:
            self.session.off_change(self.poke)
            self.session.off_wait(self.waiting)
            self._listening = False
