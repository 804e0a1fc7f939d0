"""Serialization: the only module that imports pickle or cloudpickle.

Everything nbgroups pickles into the store is signed: ``MAC || payload`` with
an HMAC-SHA256 over the payload, keyed by a per-user secret kept *outside* the
store (``~/.config/nbgroups/secret.key``, mode 0600, or ``NBGROUPS_SECRET``).
:func:`loads_signed` verifies before it unpickles and refuses what does not
verify, so someone who can write the store directory cannot make the notebook
run code. diskcache never sees a pickle: the store hands it only bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import struct
import traceback as tb_module
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cloudpickle

from .errors import SignatureError, StoreError, TaskError

MAC_SIZE = 32
PROTOCOL = pickle.HIGHEST_PROTOCOL


def key_path() -> Path:
    """Where the per-user signing key lives (outside any store)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "nbgroups" / "secret.key"


def load_secret() -> bytes:
    """The signing key: ``NBGROUPS_SECRET``, else the key file, created on first use."""
    env = os.environ.get("NBGROUPS_SECRET")
    if env:
        return hashlib.sha256(env.encode()).digest()
    path = key_path()
    try:
        return _checked_key(path, path.read_bytes())
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot read the signing key {str(path)!r}: {exc.strerror or exc}. "
                         "Fix its permissions or set NBGROUPS_SECRET.") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)  # atomic: the first process to create the key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot create the signing key {str(path)!r}: {exc.strerror or exc}. "
                         "Set XDG_CONFIG_HOME to a writable directory, or NBGROUPS_SECRET."
                         ) from None


def _checked_key(path: Path, key: bytes) -> bytes:
    """Refuse a key others can read or that is too short: it would sign for them too."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise StoreError(f"the signing key {str(path)!r} is readable by others (mode "
                         f"{mode & 0o777:o}); run: chmod 600 {path}")
    if len(key) < 32:
        raise StoreError(f"the signing key {str(path)!r} is shorter than 32 bytes; delete it "
                         "to have a new one made (results signed with it become unreadable)")
    return key


class Signer:
    """Signs and verifies payloads with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, payload: bytes | memoryview, where: str = "") -> bytes:
        """HMAC-SHA256 of ``payload`` bound to ``where`` (the store key it lives
        under): a valid entry moved to another key no longer verifies."""
        return self.mac_parts([payload], where)

    def mac_parts(self, parts: Sequence[bytes | memoryview], where: str = "") -> bytes:
        """:meth:`mac` of the concatenation of ``parts``, without concatenating."""
        context = where.encode()
        h = hmac.new(self._key, len(context).to_bytes(4, "big") + context, hashlib.sha256)
        for part in parts:
            h.update(part)
        return h.digest()

    def sign(self, payload: bytes, where: str = "") -> bytes:
        """``MAC || payload``."""
        return self.mac(payload, where) + payload

    def verify(self, data: bytes | memoryview, where: str = "", what: str = "entry"
               ) -> memoryview:
        """The payload of ``data`` signed for ``where``, or :class:`SignatureError`."""
        view = memoryview(data)
        payload = view[MAC_SIZE:]
        expected = self.mac(payload, where)
        if len(data) < MAC_SIZE or not hmac.compare_digest(expected, view[:MAC_SIZE]):
            raise SignatureError(
                f"store {what} failed signature verification and was not loaded: it was "
                "written with another key (NBGROUPS_SECRET or ~/.config/nbgroups/secret.key), "
                "moved from another entry, or modified outside nbgroups"
            )
        return payload


def dumps(obj: Any) -> bytes:
    """Pickle with cloudpickle (functions and classes defined in a notebook work)."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})


def plain(value: Any, budget: int = 64) -> bool:
    """Whether ``value`` is plain data: atoms (None, numbers, str, bytes) and
    tuples, lists and dicts of them, at most ``budget`` items in all.

    Plain data pickles the same with the C pickler as with cloudpickle, several
    times faster (a small page or batch: ~2 us instead of ~10, and ~30 when its
    caches are cold, as on every warm round trip). Anything else (a notebook
    class, a function, an array) may need cloudpickle's by-value pickling.
    """
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _ATOMS:
            continue
        if t is tuple or t is list:
            budget -= len(v)
            stack += v
        elif t is dict:
            budget -= 2 * len(v)
            stack += v.keys()
            stack += v.values()
        else:
            return False
        if budget < 0:
            return False
    return True


def dumps_call_data(obj: Any, plain_data: bool) -> bytes:
    """:func:`dumps`, or the C pickler when the caller checked (:func:`plain`)
    that the user data inside ``obj`` is plain (``obj``'s own classes are
    nbgroups', importable everywhere)."""
    if plain_data:
        return pickle.dumps(obj, protocol=PROTOCOL)
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def dumps_plain(obj: Any) -> bytes:
    """Pickle plain data (tuples, lists, str, bytes, numbers) with the C pickler."""
    return pickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes | memoryview) -> Any:
    """Unpickle data nbgroups produced itself (never data read back from disk unverified)."""
    return pickle.loads(data)


class _CopyPickler(pickle.Pickler):
    """The C pickler with a per-copy ``persistent_id`` hook (see :func:`dumps_copy`)."""

    def __init__(self, file: io.BytesIO, hook: Callable[[Any], Any], **kw: Any) -> None:
        super().__init__(file, PROTOCOL, **kw)
        self._hook = hook

    def persistent_id(self, obj: Any) -> Any:
        return self._hook(obj)


class _CopyCloudPickler(cloudpickle.Pickler):
    """cloudpickle's pickler with the same hook, for what pickles only by value."""

    def __init__(self, file: io.BytesIO, hook: Callable[[Any], Any], **kw: Any) -> None:
        super().__init__(file, PROTOCOL, **kw)
        self._hook = hook

    def persistent_id(self, obj: Any) -> Any:
        return self._hook(obj)


def dumps_copy(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
               persistent_id: Callable[[Any], Any] | None = None) -> bytes:
    """Pickle ``obj`` to copy it inside this process (:mod:`nbgroups.snapshot`).

    The C pickler first (a notebook function or class is then referred to by
    name, which this process resolves to itself); cloudpickle for what has no
    importable name (lambdas, local functions). ``buffer_callback`` and
    ``persistent_id`` are :class:`pickle.Pickler`'s. Raises what pickling raises.
    """
    if persistent_id is None:
        try:
            return pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffer_callback)
        except Exception:
            return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffer_callback)
    f = io.BytesIO()
    try:
        _CopyPickler(f, persistent_id, buffer_callback=buffer_callback).dump(obj)
    except Exception:  # the hook may be called again for the same objects: it must allow that
        f = io.BytesIO()
        _CopyCloudPickler(f, persistent_id, buffer_callback=buffer_callback).dump(obj)
    return f.getvalue()


def dumps_out_of_band(obj: Any, threshold: int, portable: bool = False
                      ) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` once (protocol 5): buffers of ``threshold`` bytes or more are
    left out of band and returned as views of ``obj``'s own memory (no copy),
    smaller ones are copied into the pickle (:mod:`nbgroups.values`).

    The C pickler first, cloudpickle for what it cannot pickle by reference
    (as :func:`dumps_copy`); ``portable``: cloudpickle only, so that what the
    notebook defines (a class of ``__main__``) is pickled by value, as for a
    worker, which cannot import it by name. Raises what pickling raises.
    """
    big: list[memoryview] = []

    def keep(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: in band
            return True
        if raw.nbytes >= threshold:
            big.append(raw)
            return False
        return True

    if portable:
        return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep), big
    try:
        return pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep), big
    except Exception:
        big.clear()  # the C pickler may have seen some buffers before it failed
        return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep), big


def dumps_sized(obj: Any) -> tuple[bytes | None, int]:
    """``obj`` pickled as :func:`dumps` does, and the size of that pickle, found
    without copying large buffers: they are left out of band and counted. The
    pickle is None when some buffer was left out (it is then not whole)."""
    left_out = 0

    def count(buffer: pickle.PickleBuffer) -> bool:
        nonlocal left_out
        try:
            left_out += buffer.raw().nbytes
        except BufferError:  # not contiguous: in band
            return True
        return False

    data = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=count)
    return (None if left_out else data), len(data) + left_out


def dumps_hooked(obj: Any, persistent_id: Callable[[Any], Any]) -> bytes:
    """Pickle ``obj`` as :func:`dumps` does (cloudpickle), with a ``persistent_id``
    hook: an object for which it returns something other than None is pickled
    as that reference instead (:func:`loads_hooked` gives it back)."""
    f = io.BytesIO()
    _CopyCloudPickler(f, persistent_id).dump(obj)
    return f.getvalue()


def loads_hooked(data: bytes | memoryview, persistent_load: Callable[[Any], Any]) -> Any:
    """Unpickle what :func:`dumps_hooked` made: each reference given to
    ``persistent_load``, which returns the object it stands for."""
    return _HookUnpickler(io.BytesIO(data), persistent_load).load()


class _HookUnpickler(pickle.Unpickler):
    """An unpickler whose persistent ids are resolved by a function."""

    def __init__(self, file: io.BytesIO, hook: Callable[[Any], Any]) -> None:
        super().__init__(file)
        self._hook = hook

    def persistent_load(self, pid: Any) -> Any:
        return self._hook(pid)


def loads_copy(data: bytes, buffers: list | None = None, persistent: list | None = None) -> Any:
    """Rebuild what :func:`dumps_copy` pickled: ``buffers`` are its out-of-band
    buffers, ``persistent[i]`` the object its ``persistent_id`` named ``i``."""
    if persistent is None:
        return pickle.loads(data, buffers=buffers)
    return _ListUnpickler(io.BytesIO(data), persistent, buffers).load()


class Pickled:
    """An argument kept as its pickle: a call's private snapshot, pickled once.

    Pickling a :class:`Pickled` writes its bytes as they are, and unpickling
    rebuilds the object from them (``__reduce__``): the pages and batches that
    carry the call embed the snapshot's bytes instead of pickling the object
    again, and a worker, or a read of the page, gets the object itself, never
    this wrapper. ``data`` must be a portable pickle (see :func:`portable`).
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple:
        return load_kept, (self.data,)

    def nbgroups_value(self) -> Any:
        """The object (a new one at each call), for what reads arguments in
        this process: records, reuse keys, call texts."""
        return load_kept(self.data)

    def __repr__(self) -> str:
        try:
            return repr(self.nbgroups_value())
        except Exception:
            return f"<argument pickled in {len(self.data)} bytes>"


def load_kept(data: bytes) -> Any:
    """A :class:`Pickled` argument's object, or an :class:`UnloadableArgument`
    saying why it could not be rebuilt here (an exception whose ``__init__``
    takes other arguments than it pickled, a class gone since): the call that
    takes it fails alone (the worker checks, see ``nbgroups.worker.run_one``),
    and every read of its group, its page included, still works."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        return UnloadableArgument(f"{type(exc).__name__}: {exc}")


class UnloadableArgument:
    """Stands for an argument whose pickle could not be loaded (:func:`load_kept`)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __reduce__(self) -> tuple:
        return UnloadableArgument, (self.message,)

    def __repr__(self) -> str:
        return f"<argument that could not be loaded: {self.message}>"


def portable(data: bytes) -> bool:
    """Whether a pickle from :func:`dumps_copy` loads the same anywhere (a
    worker, a later kernel): it names nothing in ``__main__`` (a notebook's
    classes and functions, which the C pickler refers to by name and
    cloudpickle would have carried by value), and no module is registered
    with cloudpickle to be pickled by value (read when the snapshot is taken:
    register such modules before submitting)."""
    return b"__main__" not in data and not _BY_VALUE_MODULES


_BY_VALUE_MODULES = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ())


class _ListUnpickler(pickle.Unpickler):
    """An unpickler whose persistent ids are indexes into a list of objects."""

    def __init__(self, file: io.BytesIO, persistent: list, buffers: list | None) -> None:
        super().__init__(file, buffers=buffers)
        self._persistent = persistent

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent[pid]


#: Starts a *framed* result: a protocol-5 pickle whose large buffers follow it raw.
FRAME = b"NBGFRAM1"
FRAME_ALIGN = 64  # each raw buffer starts at a multiple of this (numpy wants aligned data)
FRAMED_MIN = 1 << 20  # a result buffer this large goes raw, after the pickle
_HEAD = struct.Struct("<QQ")  # skeleton length, buffer count; then (offset, length) each


def _framed(skeleton: bytes, buffers: list[memoryview]) -> bytes:
    """``FRAME | lengths | skeleton | raw buffers``, each buffer aligned to FRAME_ALIGN::

        FRAME  skeleton_len  n  (offset, length) * n  skeleton  pad  buffer0  pad  buffer1 ...

    Offsets count from the frame's start. What is signed and unpickled is the
    *head* (everything before the first buffer's padding): :func:`frame_head`.
    """
    head = FRAME + _HEAD.pack(len(skeleton), len(buffers))
    table_len = _HEAD.size * len(buffers)
    at = len(head) + table_len + len(skeleton)
    table: list[bytes] = []
    parts: list[bytes | memoryview] = []
    for buf in buffers:
        start = -(-at // FRAME_ALIGN) * FRAME_ALIGN
        parts += [bytes(start - at), buf]
        table.append(_HEAD.pack(start, buf.nbytes))
        at = start + buf.nbytes
    return b"".join([head, *table, skeleton, *parts])


def frame_head(data: bytes | memoryview) -> tuple[int, list[tuple[int, int]]]:
    """``(head length, [(offset, length) of each raw buffer])`` of a framed result;
    raises :class:`SignatureError` (a ``ValueError``) when the frame is malformed
    (lengths out of bounds): nothing of it is loaded."""
    view = memoryview(data)
    base = len(FRAME) + _HEAD.size
    if len(view) < base or view[:len(FRAME)] != FRAME:
        raise SignatureError("not a framed result: refused, not loaded")
    skeleton_len, n = _HEAD.unpack(view[len(FRAME):base])
    head_len = base + n * _HEAD.size + skeleton_len
    if n > len(view) or head_len > len(view):
        raise SignatureError("a framed result's lengths are out of bounds: refused, not loaded")
    table = [_HEAD.unpack(view[base + i * _HEAD.size:base + (i + 1) * _HEAD.size])
             for i in range(n)]
    if any(off < head_len or off + length > len(view) for off, length in table):
        raise SignatureError("a framed result's buffers are out of bounds: refused, not loaded")
    return head_len, table


def is_framed(data: Any) -> bool:
    """Whether ``data`` (bytes-like) is a framed result."""
    return type(data) in (bytes, memoryview) and bytes(data[:len(FRAME)]) == FRAME


def loads_result(data: bytes | memoryview, writable: bool = True) -> Any:
    """A task's result from what :func:`dumps_result` made. A framed result's
    raw buffers are copied (``writable``: arrays as from any pickle) or used in
    place (a memory-mapped read: read-only arrays over the store's file)."""
    if not is_framed(data):
        return pickle.loads(data)
    head_len, table = frame_head(data)
    view = memoryview(data)
    skeleton = view[len(FRAME) + _HEAD.size + len(table) * _HEAD.size:head_len]
    buffers = [view[off:off + n] for off, n in table]
    if writable:
        buffers = [bytearray(b) for b in buffers]  # type: ignore[misc]
    return pickle.loads(skeleton, buffers=buffers)


def dumps_result(value: Any, frame: bool = False) -> bytes:
    """Pickle a task's result; raises :class:`TaskError` with a clear message if impossible.

    ``frame``: a result holding buffers of FRAMED_MIN bytes or more (an
    ndarray) is *framed*: those buffers follow the pickle raw and aligned, so
    that a read can map them from the store's file instead of loading them
    (``result(..., mmap=True)``; :func:`loads_result` reads both kinds).
    """
    if frame:
        try:
            skeleton, big = dumps_out_of_band(value, FRAMED_MIN)
        except Exception:
            pass  # the plain path below says why
        else:
            return _framed(skeleton, big) if big else skeleton
    try:
        # The C pickler first (several times faster per call); cloudpickle for
        # what it cannot do by reference (objects of classes defined in __main__).
        return pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        pass
    try:
        return cloudpickle.dumps(value, protocol=PROTOCOL)
    except Exception as exc:
        raise TaskError(
            "UnpicklableResult",
            f"the task returned a {type(value).__name__} that cannot be pickled: "
            f"{type(exc).__name__}: {exc}",
        ) from None


def dumps_exception(exc: BaseException, traceback_text: str) -> bytes:
    """Pickle a task's exception, falling back to a :class:`TaskError` copy of it."""
    exc.__traceback__ = None
    try:
        data = cloudpickle.dumps(exc, protocol=PROTOCOL)
        pickle.loads(data)  # an exception that pickles but cannot be rebuilt is no use
        return data
    except Exception:
        return pickle.dumps(
            TaskError(_qualname(type(exc)), str(exc), traceback_text), protocol=PROTOCOL
        )


def loads_exception(data: bytes | memoryview) -> BaseException:
    """A failed task's exception, or a :class:`TaskError` if it cannot be rebuilt."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        return TaskError("UnloadableException", f"the task's exception could not be loaded: {exc}")


def unloadable_result(exc: BaseException) -> TaskError:
    """What a read gives for a stored result this process cannot unpickle (its
    class is in a module not importable here, ...): an error object in the
    result's place, so the rest of the group reads normally. The stored data
    is untouched: once the cause is fixed, the same read gives the value."""
    return TaskError(
        "UnloadableResult",
        f"the task succeeded but its result cannot be loaded in this process: "
        f"{type(exc).__name__}: {exc} (make the module that defines it importable here, "
        "e.g. with sys.path, then read it again)",
    )


def format_exception(exc: BaseException) -> str:
    """The traceback text of ``exc``."""
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))


def _qualname(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def callable_name(func: Any) -> str:
    """A readable dotted name for a callable (``'math.modf'``, ``'__main__.<lambda>'``)."""
    if isinstance(func, str):
        return func
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}" if module else name



def join_stream(data: bytes | memoryview) -> list:
    """An ``async_iter`` result stored as consecutive pickled chunks, joined."""
    stream = io.BytesIO(data)
    out: list = []
    while stream.tell() < len(data):
        out.extend(pickle.load(stream))
    return out


def join_chunks(chunks: list[bytes | memoryview]) -> list:
    """An ``async_iter`` result: its pickled chunks, joined in input order."""
    out: list = []
    for chunk in chunks:
        out.extend(pickle.loads(chunk))
    return out


__all__ = [
    "MAC_SIZE",
    "Signer",
    "callable_name",
    "dumps",
    "dumps_copy",
    "dumps_exception",
    "dumps_hooked",
    "dumps_sized",
    "dumps_out_of_band",
    "frame_head",
    "is_framed",
    "loads_result",
    "dumps_result",
    "format_exception",
    "join_chunks",
    "load_secret",
    "loads",
    "loads_copy",
    "loads_exception",
    "loads_hooked",
    "unloadable_result",
]
