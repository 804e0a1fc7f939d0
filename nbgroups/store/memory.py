"""The store contract over a dict: fast tests, nothing on disk."""

from __future__ import annotations

import os
import threading
from typing import Any

from ..serialize import (
    Signer,
)
from .base import Store


class MemoryStore(Store):
    """The store contract over a dict: fast tests, nothing on disk."""

    def __init__(self, signer: Signer | None = None, **kw: Any) -> None:
        super().__init__(signer or Signer(os.urandom(32)), **kw)
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.RLock()

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and deadline <= self.clock():
            del self._data[key]
            return None
        return value

    def _get(self, key):
        with self._lock:
            return self._live(key)

    def _set(self, key, value, expire=None):
        with self._lock:
            self._data[key] = (value, None if expire is None else self.clock() + expire)

    def _add(self, key, value, expire=None):
        with self._lock:
            if self._live(key) is None:
                self._set(key, value, expire)

    def _incr(self, key, delta, expire=None):
        with self._lock:
            value = (self._live(key) or 0) + delta
            self._set(key, value, expire)
            return value

    def _touch(self, keys, expire):
        with self._lock:
            deadline = self.clock() + expire
            for key in keys:
                if self._live(key) is not None:
                    self._data[key] = (self._data[key][0], deadline)

    def _scan(self, prefix):
        with self._lock:
            keys = sorted(k for k in self._data if k.startswith(prefix))
            return [(k, v) for k in keys if (v := self._live(k)) is not None]

    def _delete(self, keys):
        with self._lock:
            for k in keys:
                self._data.pop(k, None)

    def _transaction(self):
        return self._lock
