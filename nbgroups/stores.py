"""The runner's two store layers: the durable store and the cache layer (``cached=``).

The cache layer is opened on first use, beside the durable store (a
``cache`` folder of a disk store; in memory beside a memory store), with the
TTL of the first cached submission.
"""

from __future__ import annotations

import contextlib
import threading

from .store import DiskStore, MemoryStore, Store


class Stores:
    """The durable store, and the cache layer made on first use."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: Store | None = None
        self._lock = threading.Lock()

    def layer(self, ttl: int | None) -> Store:
        """The store of a layer: the durable one (``ttl`` None) or the cache layer."""
        if ttl is None:
            return self.store
        cache = self._cache
        if cache is None:
            with self._lock:
                cache = self._cache
                if cache is None:
                    base = getattr(self.store, "directory", None)
                    cache = self._cache = (
                        MemoryStore(keep_args=False, ttl=ttl) if base is None
                        else DiskStore(base / "cache", keep_args=False, ttl=ttl))
        return cache

    def cache(self) -> Store | None:
        """The cache layer if it was opened, else None (never opens it)."""
        return self._cache

    def replace(self, store: Store) -> None:
        """Use ``store`` from now on (the old one failed: removed, or moved by
        ``configure``); the cache layer is made again beside it on first use."""
        with self._lock:
            old, old_cache = self.store, self._cache
            self.store, self._cache = store, None
        with contextlib.suppress(Exception):
            old.close()
            if old_cache is not None:
                old_cache.close()

    def close(self) -> None:
        """Close both layers (errors ignored: called while shutting down)."""
        with contextlib.suppress(Exception):
            self.store.close()
            if self._cache is not None:
                self._cache.close()
