"""Large arguments: pickled once, stored once by content digest, memory-mapped by workers.

::

    submit (caller's thread, nbgroups.snapshot)
      argument ──pickle protocol 5──▶ skeleton (small buffers in band)
                                      + out-of-band buffers ≥ large_value bytes
                                            │ xxh3_128 of each (a memoryview: no copy)
                                            ▼
                            store/values/<digest>   written once (atomic rename),
                                            │       skipped when already there
      the call holds a :class:`Stored`: the skeleton, ``(digest, size)`` per buffer,
      a short description; pages, batches and records pickle only that
                                            │
    worker (loky, thread, sync, inline; Dask: see below)
      :func:`resolve_call` ──▶ read-only mmaps of the files, one per digest per process
                               (:class:`FileSource`, LRU-bounded; the page cache is
                               shared by every worker), then ``pickle.loads(skeleton,
                               buffers=...)`` per call: never a cached object, so
                               what one call does to its argument never reaches the next

The kernel keeps no copy: the file *is* the snapshot, so a call sees the value
as it was when submitted, whatever the caller does to it afterwards. Passing
the same unchanged array again costs its digest (xxh3 runs near memory
speed), never a copy nor a write. numpy arrays (and the arrays inside pandas
objects) arrive read-only and memory-mapped, as joblib's memmapped inputs do.

*Signing.* A :class:`Stored` travels inside signed spec pages: its skeleton
(the only part unpickled) and the digests and sizes of its buffers are
covered by the page's HMAC. A value file holds raw buffer bytes, handed to
the skeleton's reconstructor (numpy's ``frombuffer``), never unpickled; its
size is checked against the recorded one before it is mapped.

*Dask.* Workers may not share the filesystem: the executor sends each value
to the cluster once (``client.scatter``) and passes the futures with every
batch that needs them; :class:`DictSource` resolves from what Dask hands the
task.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import xxhash

from .errors import StoreError, ValueMissing
from .serialize import Pickled, dumps_out_of_band, loads_copy

#: Bytes of value files a process keeps mapped (least recently used ones are
#: dropped beyond it; a dropped map lives on while arrays still use it).
MAPPED_BOUND = 8 << 30


class Stored:
    """An argument as submitted, its large buffers stored by digest (see the module doc).

    ``skeleton`` is the argument's protocol-5 pickle without its large buffers;
    ``refs`` is ``((digest, size), ...)`` for those buffers, in order;
    ``about`` a short description for displays (``ndarray float64 (6553600,) 50.0 MB``).
    """

    __slots__ = ("about", "refs", "skeleton")

    def __init__(self, skeleton: bytes, refs: tuple[tuple[str, int], ...], about: str) -> None:
        global made
        self.skeleton = skeleton
        self.refs = refs
        self.about = about
        made = True  # from now on, pages written here are searched for references

    def __reduce__(self) -> tuple:
        return (Stored, (self.skeleton, self.refs, self.about))

    def __repr__(self) -> str:
        return f"<stored {self.about}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stored) and other.refs == self.refs
                and other.skeleton == self.skeleton)

    def __hash__(self) -> int:
        return hash(self.refs)

    def nbgroups_key(self) -> bytes:
        """What ``reuse=True`` keys this argument by (:mod:`nbgroups.keys`): its
        skeleton and the digests of its buffers, never the buffers again."""
        return self.skeleton + b"|" + ",".join(f"{d}:{n}" for d, n in self.refs).encode()

    @property
    def nbytes(self) -> int:
        """Bytes of its stored buffers."""
        return sum(n for _, n in self.refs)


#: Whether this process ever made (or loaded) a :class:`Stored`: until then no
#: page it writes can refer to a stored value (the tiny-task path skips the search).
made = False
#: A value file unreferenced for this long (seconds since it was written or
#: last passed again) may be removed by :meth:`ValueFiles.collect`: a call
#: submitted meanwhile may hold it in a page not yet written.
GRACE_SECONDS = 60.0


def describe(value: Any, nbytes: int) -> str:
    """``'ndarray float64 (6553600,) 50.0 MB'``: type, dtype and shape when it has them, size."""
    parts = [type(value).__name__]
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not callable(dtype):
        parts.append(str(dtype))
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        parts.append(str(shape))
    elif hasattr(value, "__len__"):
        with contextlib.suppress(Exception):  # a __len__ that fails: left out
            parts.append(f"len {len(value)}")
    parts.append(f"{nbytes / 1e6:.1f} MB")
    return " ".join(parts)


# ---------------------------------------------------------------- the files
class ValueFiles:
    """The value files of one store: ``<directory>/<digest>``, written once each.

    A file appears whole or not at all (written to a temporary name, then
    renamed); an existing one is not written again, only its time touched
    (so that a collection of unreferenced values spares what was just used).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = os.fspath(directory)
        self._made = False
        with _maps_lock:  # records read in this process resolve from here (shown)
            if self.directory in _known:
                _known.remove(self.directory)
            _known.insert(0, self.directory)

    def path(self, digest: str) -> str:
        """Where the value of ``digest`` lives."""
        return os.path.join(self.directory, digest)

    def put(self, digest: str, data: memoryview) -> bool:
        """Store ``data`` under ``digest`` unless it is there; whether it was written."""
        path = self.path(digest)
        try:
            os.utime(path)
            return False
        except FileNotFoundError:
            pass
        if not self._made:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._made = True
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: readers see the whole file or none
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True

    def copy_from(self, other: ValueFiles, digests: Iterable[str]) -> None:
        """Store here the values of ``digests`` that ``other`` still has (tasks moved
        from a failed store to this one take them); what cannot be read is left."""
        for digest in digests:
            if os.path.exists(self.path(digest)):
                continue
            try:
                with open(other.path(digest), "rb") as f:
                    data = f.read()
            except OSError:  # gone with the failed store: those tasks fail clearly
                continue
            self.put(digest, memoryview(data))

    def digests(self) -> list[str]:
        """Every stored digest (temporary files and files being removed left out)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [n for n in names if "." not in n]

    def collect(self, referenced: Callable[[], set[str]], keep: set[str], now: float,
                grace: float | None = None) -> list[str]:
        """Remove the value files no stored task refers to; the digests removed.

        ``referenced()`` reads the store's references (called again for each
        file about to go); ``keep``: digests tasks of this process still run
        with. A file written or passed again within ``grace`` seconds stays (its
        page may not be written yet, here or in another kernel). A file goes by
        a rename first, then the checks again: a kernel that passes the value at
        that moment either touched it before (seen: put back) or finds it
        missing and writes it anew.
        """
        grace = GRACE_SECONDS if grace is None else grace
        refs = referenced()
        removed = []
        for digest in self.digests():
            if digest in refs or digest in keep:
                continue
            path = self.path(digest)
            try:
                if now - os.stat(path).st_mtime < grace:
                    continue
                doomed = f"{path}.{os.getpid()}.gc"
                os.rename(path, doomed)
            except FileNotFoundError:
                continue
            try:
                fresh = now - os.stat(doomed).st_mtime < grace
            except FileNotFoundError:
                continue
            if fresh or digest in referenced():  # passed again meanwhile: it stays
                if os.path.exists(path):  # written anew meanwhile (same content)
                    os.unlink(doomed)
                else:
                    os.rename(doomed, path)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(doomed)
            removed.append(digest)
        return removed


class Writer:
    """Stores the large buffers of arguments into one store's :class:`ValueFiles`."""

    def __init__(self, files: ValueFiles, threshold: int) -> None:
        self.files = files
        self.threshold = threshold

    def store(self, value: Any) -> Stored | None:
        """``value`` as a :class:`Stored` if it holds a buffer of ``threshold``
        bytes or more (written once per digest); None if it holds none.
        Raises what pickling raises."""
        skeleton, big = dumps_out_of_band(value, self.threshold)
        if not big:
            return None
        refs = []
        for view in big:
            digest = xxhash.xxh3_128_hexdigest(view)
            self.files.put(digest, view)
            refs.append((digest, view.nbytes))
        return Stored(skeleton, tuple(refs), describe(value, sum(n for _, n in refs)))


# ---------------------------------------------------------------- reading them back
class FileSource:
    """Buffers of stored values read from a store's value directory, memory-mapped
    read-only, one map per digest per process, least recently used dropped past
    :data:`MAPPED_BOUND` bytes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def buffer(self, digest: str, nbytes: int, about: str) -> memoryview:
        """The bytes of ``digest`` (a read-only view of its map)."""
        key = (self.directory, digest)
        with _maps_lock:
            view = _maps.get(key)
            if view is not None:
                _maps.move_to_end(key)
                return view
        path = os.path.join(self.directory, digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ValueMissing(
                f"the stored value {about} that this task takes as an argument is missing "
                f"from the store: {path} was removed outside nbgroups. Submit the task "
                "again with the value (delete_group(..., tasks=True) removes values only "
                "once no task needs them)") from None
        try:
            size = os.fstat(fd).st_size
            if size != nbytes:
                raise StoreError(
                    f"the stored value {about} in {path} holds {size} bytes where the "
                    f"store recorded {nbytes} (modified outside nbgroups); it was not loaded")
            if nbytes == 0:
                return memoryview(b"")
            view = memoryview(mmap.mmap(fd, nbytes, prot=mmap.PROT_READ))
        finally:
            os.close(fd)
        with _maps_lock:
            global _mapped
            _maps[key] = view
            _mapped += nbytes
            while _mapped > MAPPED_BOUND and len(_maps) > 1:
                _, old = _maps.popitem(last=False)
                _mapped -= old.nbytes
        return view


_maps: collections.OrderedDict[tuple[str, str], memoryview] = collections.OrderedDict()
_maps_lock = threading.Lock()
_mapped = 0
_known: list[str] = []  # value directories of the stores opened here, newest first


def shown(value: Any) -> Any:
    """What a task record shows for an argument: a :class:`Stored` loaded from the
    stores opened in this process (read-only, memory-mapped), or itself when its
    file is gone (its repr names it); anything else as it is."""
    if type(value) is not Stored:
        return value.nbgroups_value() if type(value) is Pickled else value
    for directory in list(_known):
        try:
            return load(value, FileSource(directory))
        except ValueMissing:
            continue
        except Exception:  # damaged, or its class not importable here: shown as stored
            return value
    return value


def shown_call(args: Any, kwargs: dict | None) -> tuple[Any, dict | None]:
    """``(args, kwargs)`` of a record, :func:`shown` (the same objects when no value is stored)."""
    if args and any(type(a) in _KEPT for a in args):
        args = type(args)(shown(a) for a in args) if type(args) in (tuple, list) else args
    if kwargs and any(type(v) in _KEPT for v in kwargs.values()):
        kwargs = {k: shown(v) for k, v in kwargs.items()}
    return args, kwargs


_KEPT = frozenset({Stored, Pickled})  # arguments a snapshot holds in another form


class DictSource:
    """Buffers of stored values handed over whole: ``{digest: bytes}`` (a Dask
    task's scattered values)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def buffer(self, digest: str, nbytes: int, about: str) -> memoryview:
        """The bytes of ``digest``."""
        try:
            return memoryview(self.data[digest])
        except KeyError:
            raise ValueMissing(
                f"the stored value {about} (digest {digest}) did not reach this worker: "
                "its file could not be read from the store (removed outside nbgroups?)"
            ) from None


def source(where: Any) -> Any:
    """The source a batch's options name: a value directory (str), or a mapping."""
    if where is None:
        return None
    if isinstance(where, str):
        return FileSource(where)
    return DictSource(where)


def load(value: Stored, src: Any) -> Any:
    """A new object rebuilt from ``value`` (its buffers read-only, from ``src``)."""
    buffers = [src.buffer(d, n, value.about) for d, n in value.refs]
    return loads_copy(value.skeleton, buffers=buffers)


def resolve_call(args: Sequence, kwargs: dict | None, src: Any) -> tuple[Any, dict | None]:
    """``(args, kwargs)`` with every :class:`Stored` loaded (the same objects when none)."""
    if Stored in map(type, args):  # (the check of every call of a batch: C speed)
        args = tuple(load(a, src) if type(a) is Stored else a for a in args)
    if kwargs and Stored in map(type, kwargs.values()):
        kwargs = {k: load(v, src) if type(v) is Stored else v for k, v in kwargs.items()}
    return args, kwargs


def resolve_items(items: list, src: Any) -> list:
    """An ``async_iter`` chunk's items with every :class:`Stored` loaded."""
    if Stored in map(type, items):
        return [load(v, src) if type(v) is Stored else v for v in items]
    return items


def refs_of(values: Iterable[Any]) -> set[str]:
    """The digests the :class:`Stored` among ``values`` refer to."""
    return {d for v in values if type(v) is Stored for d, _ in v.refs}


def digests_of_calls(calls: Iterable[tuple[Any, dict | None]]) -> set[str]:
    """The digests ``(args, kwargs)`` pairs refer to (``args``: a tuple or an item list)."""
    out: set[str] = set()
    for args, kwargs in calls:
        if args:
            out |= refs_of(args)
        if kwargs:
            out |= refs_of(kwargs.values())
    return out


__all__ = ["DictSource", "FileSource", "Stored", "ValueFiles",
           "ValueMissing", "Writer", "describe", "digests_of_calls", "load", "refs_of",
           "resolve_call", "resolve_items", "shown", "shown_call", "source"]
