"""A call's arguments as they were when the submitting function returned.

The runner pickles a call's arguments later than the call: when it flushes
its open pages to the store, and again when it sends a batch to a worker. A
buffer, list or dict the caller changes in between (a loop reusing one
parameter dict) would reach the call, and its stored record, changed. So
:func:`take` copies every argument that could change, on the caller's
thread, before the submitting function returns; the runner then holds only
the copies.

::

    calls ──▶ atoms (int, float, str, bytes, bool, None, complex, and tuples
    │          and frozensets of those; a Stored value): kept as they are
    ├──▶ holding a buffer of ≥ large_value bytes (1 MiB), or pickling to that
    │          many bytes, durable tasks: stored once by digest, the call holds
    │          a small Stored (nbgroups.values)
    └──▶ anything else: pickled at once, and kept as that pickle (Pickled)
              ├─ a pickle naming __main__ (a notebook class): unpickled at
              │  once instead (a private copy, which cloudpickle carries later)
              └─ arrays in it of ≥ LARGE (16 KiB): copied once per content
                 and shared by every call that passed the same, unchanged one

*Kept as a pickle.* A :class:`~nbgroups.serialize.Pickled` is the call's
snapshot and its transport at once: the page and the batch that carry the call
embed its bytes, and a worker, or a read of the page, gets the object back
from them. So an argument is pickled once, at the call, instead of at the
call (a copy), again for its page and again for its batch: for
scikit-learn's fit arguments under the joblib backend that was ~3 ms of kernel
CPU a fit. The same object passed to several calls of one submission is
pickled once for all of them; each call still gets an object of its own.

*Cost.* The tiny-task path (``async_task('math.modf', i)``) only checks
types. A small list or dict costs one C pickle (~1 µs).

*Mid-size arrays* (stored values aside: ``cached=True`` tasks, a memory store,
``large_value=None``, or arrays under ``large_value``). A 50 MB array passed
to 200 calls must not become 200 copies: the snapshot of an array whose type
has ``nbytes`` of at least LARGE (16 KiB) is kept (weakly, while some call
holds it) with its pickle and its raw buffers; the next call passing the same
object compares its bytes with the kept copy (a ``memcmp``: 10-15 ms for 50 MB
on a busy 2-core machine) and, when equal, gets the same copy object. One copy
per distinct content, and since calls share the copy *object*, the pages and
batches that pickle many calls still write its bytes once each (pickle's
memo). The buffers are copied out of band (pickle protocol 5): one copy, no
intermediate pickle bytes.

*Stored values.* With a :class:`~nbgroups.values.Writer` (the runner passes
one for the durable store, see the ``large_value`` setting), a value holding
a buffer of that many bytes or more (1 MiB by default) is not copied at all:
it is pickled once, its large buffers are written to the store by content
digest, and the call holds a small :class:`~nbgroups.values.Stored` in its
place (:mod:`nbgroups.values`). A value with no such buffer whose pickle is
that large (a list of a million floats, a dict of strings, a non-contiguous
array) is stored the same way, its pickle as one file. The same object
passed to several calls of one submission (a ``sweep`` grid value, a
repeated ``async_iter`` item) is pickled once for all of them.

*Unpicklable arguments.* An argument that cannot be pickled (a lock, an
open file) is not an error at the call: the call gets an id, and becomes a
failed task of its own saying which argument could not be pickled, like
every other call that cannot be sent (see ``Runner._write_salvaging``); the
other calls of the same submission run. The snapshot keeps the error, not
the object, so the outcome does not depend on what the object becomes later.
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

from .serialize import Pickled, dumps_copy, loads_copy, portable
from .values import Stored, Writer

#: Immutable values that need no copy (bool is a subclass of int, listed for speed).
ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex, Stored})
#: An array (a value whose type has ``nbytes``) at least this big is copied
#: once per content and shared between the calls passing it unchanged. Small
#: enough that 10,000 calls passing one unchanged array hold at most 160 MB
#: of copies; sharing costs ~2x a plain round trip (~25 against ~15 us for
#: 4 KB on a busy machine), so the tiniest arrays are simply copied.
LARGE = 16 << 10
#: A plain round trip whose pickle is at least this big is redone sharing
#: arrays (a large array that is not contiguous is pickled in band).
BIG_PICKLE = 1 << 20


def take(calls: Sequence[tuple[Any, dict | None]], iterable: bool = False,
         values: Callable[[], Writer | None] | None = None
         ) -> Sequence[tuple[Any, dict | None]]:
    """``calls`` (``(args, kwargs)`` pairs) with every mutable argument replaced by a copy.

    With ``iterable`` each ``args`` is an ``async_iter`` list of items. With
    ``values`` (called once, only if some argument is not an atom: it returns
    the writer or None), large values are stored by digest instead (see the
    module doc).
    Returns ``calls`` itself when nothing needed a copy (no allocation: this
    runs once per ``async_task``).
    """
    out = None
    taking: _Taking | None = None
    for n, (args, kwargs) in enumerate(calls):
        new_args = args
        if iterable:
            if not _all_atoms(args):
                taking = taking or _Taking(values)
                new_args = [v if is_atom(v) else taking.copy(v) for v in args]
        else:
            for v in args:
                if type(v) not in ATOMS:
                    taking = taking or _Taking(values)
                    new_args = _args(args, taking)
                    break
        new_kwargs = kwargs
        if kwargs:
            for v in kwargs.values():
                if type(v) not in ATOMS:
                    taking = taking or _Taking(values)
                    new_kwargs = _kwargs(kwargs, taking)
                    break
        if new_args is not args or new_kwargs is not kwargs:
            if out is None:
                out = list(calls)
            out[n] = (new_args, new_kwargs)
    return calls if out is None else out


class _Taking:
    """One submission's copies: the value writer, and each object stored by id
    (the objects are alive for the whole submission, so ids are stable). Only
    :class:`~nbgroups.values.Stored` ones are shared between calls: a worker
    rebuilds those per call, where calls of one batch sharing a plain copy
    would share one object."""

    __slots__ = ("done", "values")

    def __init__(self, values: Callable[[], Writer | None] | None) -> None:
        self.values = values() if values is not None else None
        self.done: dict[int, Any] = {}

    def copy(self, value: Any) -> Any:
        key = id(value)
        out = self.done.get(key)
        if out is None:
            out = copy(value, self.values)
            if type(out) in _SHARED:
                self.done[key] = out
        elif type(out) is Pickled:  # the same pickle, each call its own object
            out = Pickled(out.data)
        return out


#: Copies shared by the calls of one submission passing the same object.
_SHARED = frozenset({Stored, Pickled})


def is_atom(value: Any) -> bool:
    """Whether ``value`` is immutable all the way down (needs no snapshot)."""
    t = type(value)
    if t in ATOMS:
        return True
    if t is tuple or t is frozenset:
        return ATOMS.issuperset(map(type, value)) or all(map(is_atom, value))
    return False


def _args(args: tuple, taking: _Taking) -> tuple:
    for v in args:
        if type(v) not in ATOMS and not is_atom(v):
            return tuple(v if is_atom(v) else taking.copy(v) for v in args)
    return args


def _kwargs(kwargs: dict, taking: _Taking) -> dict:
    for v in kwargs.values():
        if type(v) not in ATOMS and not is_atom(v):
            return {k: v if is_atom(v) else taking.copy(v) for k, v in kwargs.items()}
    return kwargs


def _all_atoms(values: list) -> bool:
    """Whether every value is an atom, checked at C speed level by level: an
    ``async_iter`` may have a million items, most often numbers or tuples of them."""
    for _ in range(4):
        kinds = set(map(type, values))
        if kinds <= ATOMS:
            return True
        if not kinds <= _ATOMS_AND_TUPLES:
            return False
        tuples = values if len(kinds) == 1 else [v for v in values if type(v) is tuple]
        values = list(itertools.chain.from_iterable(tuples))
    return all(map(is_atom, values))


# ------------------------------------------------------------------ copies
def copy(value: Any, values: Writer | None = None) -> Any:
    """A private copy of ``value`` (a pickle round trip), large arrays shared by content;
    with ``values``, a :class:`~nbgroups.values.Stored` when it holds a buffer of
    ``values.threshold`` bytes or more.

    Never raises: a value that cannot be pickled becomes an :class:`Unpicklable`,
    which fails the call when the runner pickles it.
    """
    try:
        if type(value) not in _CONTAINERS and _is_array(value):
            if values is not None and value.nbytes >= values.threshold:
                stored = _stored(value, values)
                if stored is not None:
                    return stored
            return _array_copy(value)
        try:
            data = dumps_copy(value, buffer_callback=_refuse_large)
        except _LargeBuffer:
            if values is not None:  # it holds a buffer of LARGE bytes or more
                stored = _stored(value, values)
                if stored is not None:
                    return stored
            return _copy_sharing_arrays(value)
        if values is not None and len(data) >= values.threshold:  # a big list, dict...
            stored = _stored(value, values)
            if stored is not None:
                return stored
        if len(data) >= BIG_PICKLE:  # e.g. a large array pickled in band (not contiguous)
            return _copy_sharing_arrays(value)
        if portable(data):  # kept as its pickle: pickled once, never again (see Pickled)
            return Pickled(data)
        return loads_copy(data)
    except Exception as exc:
        return Unpicklable(value, exc)


def _stored(value: Any, values: Writer) -> Stored | None:
    """``values.store(value)``; None when the store cannot take it now (a full
    disk): the call then keeps a copy in memory, as its page does until the
    store can be written (pickling errors propagate: the call fails alone)."""
    try:
        return values.store(value)
    except OSError:
        return None


class _LargeBuffer(Exception):
    """Stops the plain round trip: the value holds a large array (shared instead)."""


def _refuse_large(buffer: Any) -> bool:
    if memoryview(buffer).nbytes >= LARGE:
        raise _LargeBuffer
    return True  # small buffers stay in the pickle


def _copy_sharing_arrays(value: Any) -> Any:
    """:func:`copy` for a value holding large arrays: each is copied through
    :func:`_array_copy`, the rest by a pickle round trip that refers to them."""
    arrays: list = []
    index: dict[int, int] = {}

    def persistent_id(obj: Any) -> int | None:
        if type(obj) in _CONTAINERS or not _is_array(obj):
            return None
        n = index.get(id(obj))
        if n is None:  # asked again if cloudpickle retries: the same answer
            n = index[id(obj)] = len(arrays)
            arrays.append(obj)
        return n

    data = dumps_copy(value, persistent_id=persistent_id)
    return loads_copy(data, persistent=[_array_copy(a) for a in arrays])


_CONTAINERS = ATOMS | {list, dict, tuple, set, frozenset}
_ATOMS_AND_TUPLES = ATOMS | {tuple}


def _is_array(obj: Any) -> bool:
    """Whether ``obj`` is a large array (its type has ``nbytes``: numpy, pandas...)."""
    if not hasattr(type(obj), "nbytes"):
        return False
    try:
        nbytes = obj.nbytes
    except Exception:  # a property that fails: not an array we know how to share
        return False
    return isinstance(nbytes, int) and nbytes >= LARGE


class _Buffer(bytearray):
    """A copied array buffer, weakly referenceable (a plain bytearray is not)."""

    __slots__ = ("__weakref__",)


class _Kept:
    """The copy of one large array, kept while some call holds it."""

    __slots__ = ("buffers", "copy", "skeleton")

    def __init__(self, copy: Any, skeleton: bytes, buffers: list[_Buffer]) -> None:
        self.copy = weakref.ref(copy)
        self.skeleton = skeleton
        self.buffers = [weakref.ref(b) for b in buffers]

    def same(self, skeleton: bytes, raws: list[memoryview]) -> Any:
        """The kept copy if it still lives and has exactly these contents, else None."""
        copy = self.copy()
        if copy is None or skeleton != self.skeleton or len(raws) != len(self.buffers):
            return None
        for ref, raw in zip(self.buffers, raws, strict=True):
            buf = ref()
            if buf is None or len(buf) != raw.nbytes or cast(Any, buf) != raw:  # memcmp
                return None
        return copy


_kept: dict[int, _Kept] = {}  # id of the array passed -> its copy, while the copy lives


def _array_copy(array: Any) -> Any:
    """A copy of a large array: the same copy object as last time this array
    was passed if its contents did not change since; else a new one."""
    pickled: list = []

    def out_of_band(buffer: Any) -> bool:
        pickled.append(buffer)
        return False

    skeleton = dumps_copy(array, buffer_callback=out_of_band)
    try:
        raws = [b.raw() for b in pickled]
    except BufferError:  # not contiguous: pickled in band, compared by digest
        raws = []
        skeleton = dumps_copy(array)
    key = _digest(skeleton) if len(skeleton) >= BIG_PICKLE else skeleton
    kept = _kept.get(id(array))
    if kept is not None:
        same = kept.same(key, raws)
        if same is not None:
            return same
    buffers = [_Buffer(raw) for raw in raws]  # the one copy of the data
    copy = loads_copy(skeleton, buffers=buffers) if buffers else loads_copy(skeleton)
    entry = _Kept(copy, key, buffers) if _weakrefable(copy) else None
    if entry is not None:
        _kept[id(array)] = entry
        weakref.finalize(copy, _forget, id(array), entry)
    return copy


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:  # such a copy is not shared: each call gets its own
        return False
    return True


def _forget(key: int, entry: _Kept) -> None:
    if _kept.get(key) is entry:
        del _kept[key]


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=20).digest()


class Unpicklable:
    """Stands for an argument that could not be pickled when the call was made.

    Pickling it raises the original error again, so the runner fails that call
    (and only it) with a message naming the argument's type.
    """

    __slots__ = ("message",)

    def __init__(self, value: Any, exc: BaseException) -> None:
        self.message = (f"a {type(value).__name__} argument could not be pickled when the "
                        f"call was made: {type(exc).__name__}: {exc}")

    def __reduce__(self):
        raise TypeError(self.message)

    def __repr__(self) -> str:
        return f"<unpicklable argument: {self.message}>"


__all__ = ["ATOMS", "LARGE", "Unpicklable", "copy", "is_atom", "take"]
