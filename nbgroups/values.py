"""Large values: pickled once, stored once by content digest, memory-mapped by workers.

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
speed), never a copy nor a write (:class:`Writer` remembers what it stored
in the last second: not even a file-system call). numpy arrays (and the
arrays inside pandas objects) arrive read-only and memory-mapped, as
joblib's memmapped inputs do.

*Large pickles.* A value with no large buffer whose pickle reaches the
threshold (a list of floats, a dict of strings, a non-contiguous array) is
stored as that pickle, one file named by its blake2b digest
(``Stored.pickled``); workers read it once per process, check it, and
unpickle a fresh copy per call.

*Captured values.* A notebook function is pickled by value with its closure
and the globals it reads. :meth:`Writer.dumps_func` pickles it (once per page
of calls) with a ``persistent_id`` hook that stores each large object the
pickler reaches, as above, and leaves a :class:`Stored` in its place; the
page's entry for the callable is ``(name, pickle, stored values)`` (the
store's value references and the Dask scatter read the third part). A
worker loads it with :func:`load_func` and keeps the function, its values
with it, for the next calls (``nbgroups.worker``).

*Signing.* A :class:`Stored` travels inside signed spec pages: its skeleton
(the only part unpickled) and the digests and sizes of its buffers are
covered by the page's HMAC. A value file holds raw buffer bytes, handed to
the skeleton's reconstructor (numpy's ``frombuffer``), never unpickled; its
size is checked against the recorded one before it is mapped. A stored
pickle *is* unpickled, so its name is a cryptographic digest (blake2b; xxh3
is not one): its bytes are read whole and checked against the signed digest
before anything of it is loaded (:func:`checked_pickle`).

*Dask.* Workers may not share the filesystem: the executor sends each value
to the cluster once (``client.scatter``) and passes the futures with every
batch that needs them; :class:`DictSource` resolves from what Dask hands the
task.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import xxhash

from .errors import StoreError, ValueMissing
from .serialize import (
    Pickled,
    dumps,
    dumps_hooked,
    dumps_out_of_band,
    dumps_sized,
    loads_copy,
    loads_hooked,
)

#: Bytes of value files a process keeps mapped (least recently used ones are
#: dropped beyond it; a dropped map lives on while arrays still use it).
MAPPED_BOUND = 8 << 30


class Stored:
    """An argument as submitted, its large parts stored by digest (see the module doc).

    ``skeleton`` is the argument's protocol-5 pickle without its large buffers;
    ``refs`` is ``((digest, size), ...)`` for those buffers, in order;
    ``about`` a short description for displays (``ndarray float64 (6553600,) 50.0 MB``);
    ``pickled`` is ``(digest, size)`` when the skeleton itself is large (a big
    list, a non-contiguous array: data pickled in band) and stored as a file of
    its own, ``skeleton`` then empty; its digest is a blake2b one, checked
    before the file is unpickled (see *Signing*).
    """

    __slots__ = ("about", "pickled", "refs", "skeleton")

    def __init__(self, skeleton: bytes, refs: tuple[tuple[str, int], ...], about: str,
                 pickled: tuple[str, int] | None = None) -> None:
        global made
        self.skeleton = skeleton
        self.refs = refs
        self.about = about
        self.pickled = pickled
        made = True  # from now on, pages written here are searched for references

    def __reduce__(self) -> tuple:
        if self.pickled is None:
            return (Stored, (self.skeleton, self.refs, self.about))
        return (Stored, (self.skeleton, self.refs, self.about, self.pickled))

    def __repr__(self) -> str:
        return f"<stored {self.about}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stored) and other.refs == self.refs
                and other.skeleton == self.skeleton and other.pickled == self.pickled)

    def __hash__(self) -> int:
        return hash((self.refs, self.pickled))

    def nbgroups_key(self) -> bytes:
        """What ``reuse=True`` keys this argument by (:mod:`nbgroups.keys`): its
        skeleton and the digests of its stored parts, never their bytes again."""
        refs = self.refs if self.pickled is None else (*self.refs, self.pickled)
        return self.skeleton + b"|" + ",".join(f"{d}:{n}" for d, n in refs).encode()

    def digests(self) -> list[str]:
        """The digests of every file this value is stored in."""
        out = [d for d, _ in self.refs]
        if self.pickled is not None:
            out.append(self.pickled[0])
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of its stored parts."""
        return sum(n for _, n in self.refs) + (self.pickled[1] if self.pickled else 0)


#: Whether this process ever made (or loaded) a :class:`Stored`: until then no
#: page it writes can refer to a stored value (the tiny-task path skips the search).
made = False
#: Passing again a value stored less than this long ago (and a quarter of
#: GRACE_SECONDS) reuses its reference without touching its files: a loop of
#: calls passing one array costs its digest, not a file-system call each.
TOUCH_SECONDS = 1.0
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
    """Stores the large parts of values into one store's :class:`ValueFiles`."""

    def __init__(self, files: ValueFiles, threshold: int) -> None:
        self.files = files
        self.threshold = threshold
        # what was stored lately: (skeleton, refs, pickled) -> (its Stored, when written
        # or touched), so that passing the same content again skips the file system
        self._recent: collections.OrderedDict[tuple, tuple[Stored, float]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def store(self, value: Any) -> Stored | None:
        """``value`` as a :class:`Stored` if it holds a buffer of ``threshold``
        bytes or more, or pickles to that many bytes (written once per digest);
        None if it is smaller. Raises what pickling raises.

        Pickled by cloudpickle (``portable``): what the notebook defines is
        pickled by value, so that a worker, which cannot import ``__main__``'s
        names, can rebuild it."""
        skeleton, big = dumps_out_of_band(value, self.threshold, portable=True)
        pickled = None
        data = None
        if len(skeleton) >= self.threshold:  # data pickled in band: the pickle is stored
            data, skeleton = skeleton, b""
            pickled = (pickle_digest(data), len(data))
        elif not big:
            return None
        refs = tuple((xxhash.xxh3_128_hexdigest(view), view.nbytes) for view in big)
        key = (skeleton, refs, pickled)
        now = time.monotonic()
        with self._lock:  # (callers' threads)
            hit = self._recent.get(key)
        if hit is not None and now - hit[1] < min(TOUCH_SECONDS, GRACE_SECONDS / 4):
            return hit[0]  # the same content, its files written or touched just now
        if data is not None and pickled is not None:
            self.files.put(pickled[0], memoryview(data))
        for view, (digest, _) in zip(big, refs, strict=True):
            self.files.put(digest, view)
        size = sum(n for _, n in refs) + (pickled[1] if pickled else 0)
        stored = Stored(skeleton, refs, describe(value, size), pickled)
        with self._lock:
            self._recent[key] = (stored, now)
            if len(self._recent) > 64:
                self._recent.popitem(last=False)
        return stored

    def dumps_func(self, func: Any) -> tuple[bytes, tuple[Stored, ...]]:
        """``func`` pickled (cloudpickle, as :func:`~nbgroups.serialize.dumps`) with
        the large values it captures (closure cells, the notebook globals it
        reads, defaults...) stored like arguments, by digest: the pickle holds
        a small :class:`Stored` in their place. Returns the pickle and those
        values (for the store's references). :func:`load_func` reads it back.
        Raises what pickling raises."""
        threshold = self.threshold
        whole, size = dumps_sized(func)
        if size < threshold:  # nothing it captures can be that large: the plain pickle
            return (whole if whole is not None else dumps(func)), ()
        # id -> (the object, its Stored or None): the object is held, or a temporary
        # the pickler made (a reducer's state) could die and its id name another
        seen: dict[int, tuple[Any, Stored | None]] = {}
        stored: list[Stored] = []

        def captured(obj: Any) -> Stored | None:
            t = type(obj)
            if t in _NEVER_LARGE:
                return None
            key = id(obj)
            if key in seen:
                return seen[key][1]
            out = None
            if t in _SIZED:
                large = len(obj) >= threshold
            elif t in _CONTAINED:  # of plain items: pickled alone (a trial) when it may be
                large = _plain_size(obj) >= threshold // 2  # that large; else its items are
            else:
                large = _nbytes(obj) >= threshold
            if large and obj is not func:
                try:
                    out = self.store(obj)
                except Exception:  # (a full disk; not picklable alone): kept in the pickle
                    out = None
                if out is not None:
                    stored.append(out)
            seen[key] = (obj, out)
            return out

        return dumps_hooked(func, captured), tuple(stored)


_NEVER_LARGE = frozenset({int, float, bool, complex, type(None), type, Stored})
_SIZED = frozenset({str, bytes, bytearray})
_CONTAINED = frozenset({list, tuple, dict, set, frozenset})
_PLAIN = frozenset({int, float, bool, complex, type(None), str, bytes})


def _plain_size(obj: Any) -> int:
    """Roughly the bytes of a list, tuple, dict or set of plain items (numbers,
    strings, bytes): ``len`` times the mean ``sys.getsizeof`` of its first items;
    0 when one of those is something else (a container, an array, an object:
    the pickler reaches it on its own, so that large leaves are stored alone and
    the pickler's own dicts and tuples, a function's globals, never whole)."""
    n = len(obj)
    if not n:
        return 0
    parts = (obj, obj.values()) if type(obj) is dict else (obj,)
    total = 0
    for items in parts:
        sample = list(itertools.islice(items, 16))
        if not _PLAIN.issuperset(map(type, sample)):
            return 0
        total += sum(map(sys.getsizeof, sample)) * n // len(sample)
    return total


def _nbytes(obj: Any) -> int:
    """``obj.nbytes`` when its type has one (numpy, pandas Series...), else 0."""
    if not hasattr(type(obj), "nbytes"):
        return 0
    try:
        n = obj.nbytes
    except Exception:  # a property that fails: not a value we know the size of
        return 0
    return n if isinstance(n, int) else 0


def pickle_digest(data: bytes | memoryview) -> str:
    """The digest a stored pickle is named and checked by: a cryptographic one
    (blake2b, 128 bits), since the file is unpickled (see *Signing*)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
            raise ValueMissing(_missing(about, path)) from None
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

    def pickle(self, digest: str, nbytes: int, about: str) -> bytes:
        """The stored pickle of ``digest``, read whole and checked (:func:`checked_pickle`)."""
        found = _checked_get(digest)
        if found is not None:
            return found
        path = os.path.join(self.directory, digest)
        try:
            with open(path, "rb") as f:  # read, not mapped: what is checked is what is loaded
                data = f.read()
        except FileNotFoundError:
            raise ValueMissing(_missing(about, path)) from None
        return checked_pickle(digest, nbytes, data, about, path)


def _missing(about: str, path: str) -> str:
    return (f"the stored value {about} that this task takes (an argument, or a value its "
            f"function captures) is missing from the store: {path} was removed outside "
            "nbgroups. Submit the task again with the value (delete_group(..., tasks=True) "
            "removes values only once no task needs them)")


def checked_pickle(digest: str, nbytes: int, data: bytes, about: str, where: str) -> bytes:
    """``data`` if it is the stored pickle ``digest`` names (its blake2b digest and
    size), kept for the next loads in this process; else :class:`StoreError`:
    the digest is inside a signed page, so a pickle that matches it is the
    one submitted, and one that does not is never unpickled."""
    if len(data) != nbytes or pickle_digest(data) != digest:
        raise StoreError(
            f"the stored value {about} in {where} does not match its digest (modified "
            "outside nbgroups); it was not loaded")
    with _maps_lock:
        global _checked_bytes
        _checked[digest] = data
        _checked_bytes += len(data)
        while _checked_bytes > CHECKED_BOUND and len(_checked) > 1:
            _, old = _checked.popitem(last=False)
            _checked_bytes -= len(old)
    return data


def _checked_get(digest: str) -> bytes | None:
    with _maps_lock:
        data = _checked.get(digest)
        if data is not None:
            _checked.move_to_end(digest)
        return data


#: Bytes of checked stored pickles a process keeps (least recently used dropped).
CHECKED_BOUND = 1 << 30
_checked: collections.OrderedDict[str, bytes] = collections.OrderedDict()
_checked_bytes = 0
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

    def pickle(self, digest: str, nbytes: int, about: str) -> bytes:
        """The stored pickle of ``digest``, checked (:func:`checked_pickle`)."""
        found = _checked_get(digest)
        if found is not None:
            return found
        return checked_pickle(digest, nbytes, bytes(self.buffer(digest, nbytes, about)),
                              about, "the data sent to this worker")


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
    skeleton = value.skeleton if value.pickled is None else src.pickle(*value.pickled,
                                                                        value.about)
    return loads_copy(skeleton, buffers=buffers)


def load_func(blob: bytes, src: Any) -> Any:
    """A callable pickled by :meth:`Writer.dumps_func`, the values it captures
    loaded from ``src`` (each once, however often the pickle refers to it)."""
    done: dict[Stored, Any] = {}

    def stored(pid: Any) -> Any:
        if type(pid) is not Stored:
            raise StoreError(f"a pickled function refers to {type(pid).__name__}, "
                             "not a stored value: it was not loaded")
        if pid not in done:
            if src is None:
                raise ValueMissing(f"the function captures the stored value {pid.about}, "
                                   "and no store to read it from was given")
            done[pid] = load(pid, src)
        return done[pid]

    return loads_hooked(blob, stored)


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
    return {d for v in values if type(v) is Stored for d in v.digests()}


def digests_of_funcs(funcs: Iterable[tuple]) -> set[str]:
    """The digests the callables of pages or jobs refer to: a callable's entry is
    ``(name, pickle)``, or ``(name, pickle, stored values it captures)``."""
    return {d for f in funcs if len(f) > 2 for v in f[2] for d in v.digests()}


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
           "ValueMissing", "Writer", "checked_pickle", "describe", "digests_of_calls",
           "digests_of_funcs", "load", "load_func", "pickle_digest", "refs_of",
           "resolve_call", "resolve_items", "shown", "shown_call", "source"]
