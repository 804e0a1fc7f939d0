"""Waking another thread from the kernel's main thread, safely under Ctrl-C.

Jupyter's Interrupt raises ``KeyboardInterrupt`` in the main thread between
two bytecodes, including just after a C call returned inside a Python-level
method. ``threading.Event.set()`` and ``with condition:`` enter their lock in
Python (``Condition.__enter__``): an interrupt landing right after the lock is
taken leaves it taken for good. The runner thread then blocks on it forever,
and the main thread deadlocks on its next ``set()`` (seen once in about 40
kernels interrupted 25 times each mid-submission: the next cell hung).

Two rules follow for code the main thread runs:

* wake a thread with :class:`Wake`, whose ``set()`` is one C call;
* enter a ``threading.Condition`` through its lock (``with lock:``, the C
  ``RLock``), not through the condition (``with cond:``); ``cond.wait()`` and
  ``cond.notify_all()`` inside are fine.
"""

from __future__ import annotations

import queue


class Wake:
    """A ``threading.Event`` for one waiting thread, whose :meth:`set` cannot be
    cut in half by a ``KeyboardInterrupt`` (``SimpleQueue.put`` is C)."""

    __slots__ = ("_flag", "_queue")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._flag = False

    def set(self) -> None:
        """Wake the waiting thread (now, or at its next :meth:`wait`)."""
        self._queue.put(None)  # first: an interrupt after it leaves a wake-up, not a flag
        self._flag = True

    def is_set(self) -> bool:
        """Whether :meth:`set` was called since the last :meth:`clear`."""
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set, or ``timeout`` seconds passed; whether it was set."""
        try:
            self._queue.get(timeout=timeout)
        except queue.Empty:
            return self._flag
        return True

    def clear(self) -> None:
        """Forget the wake-ups so far (the waiter then looks at what they were for)."""
        self._flag = False
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
