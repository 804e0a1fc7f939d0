"""Call keys for ``reuse=True``: a digest of the callable and the arguments.

The key of a call is a digest of the callable and of the arguments, built from
their *values*, never from pickled bytes: cloudpickle's bytes for a notebook
function carry the cell's temporary file name and first line (joblib's
``Memory`` keys on these, and loses its cache at every kernel restart), and
pickles of sets or dicts depend on hash seeds and insertion history.

* A function defined in the notebook (or in a local module) is keyed by its
  code, recursively: bytecode, constants (nested code objects too), names,
  defaults, the values its closure captures and the values of the globals it
  reads (functions and classes among them keyed the same way; modules by
  name, local modules by their source). File names and line numbers are left
  out, so re-defining a function identically in another cell, or after a
  kernel restart, gives the same key; changing its body or a captured value
  gives a new one.
* Library functions and classes (standard library, site-packages) are keyed
  by dotted name and package version; a dotted path string by the string,
  plus the source of its module when that module is local.
* Arguments are bound to the signature (``f(1)`` and ``f(x=1)`` are one
  call) and keyed canonically: dicts and sets sorted, numpy arrays by dtype,
  shape and bytes, other objects by what they reduce to for pickling.

What cannot be keyed (a lock, an open file, a generator...) raises
:class:`Unkeyable` with the reason; :mod:`nbgroups.reuse` then runs the call
as usual and warns once.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

import xxhash

from .errors import NbgroupsError

KEY_VERSION = b"nbgroups-reuse-1"
LARGE_ARRAY = 1 << 20
"""From this size an array's data enters a key as its xxh3_128 digest, computed over
its memory (as :mod:`nbgroups.values` digests stored values), not copied to bytes."""


class Unkeyable(NbgroupsError):
    """Raised inside key computation: ``args[0]`` says what could not be keyed and why.

    Never reaches the user: :mod:`nbgroups.reuse` turns it into a
    :class:`~nbgroups.errors.ReuseWarning` and runs the call as usual."""


def call_key(fdigest: bytes, args: Any, kwargs: dict | None, *, sig: Any = None,
             iterable: bool = False) -> str:
    """The key of one call of a function whose :func:`func_digest` is ``fdigest``."""
    enc = _Encoder()
    try:
        _encode_call(enc, args, kwargs, sig, iterable)
    except RecursionError:
        raise Unkeyable("the arguments are nested too deeply") from None
    h = hashlib.blake2b(KEY_VERSION, digest_size=20)
    h.update(fdigest)
    h.update(enc.digest())
    return h.hexdigest()


def _encode_call(enc: _Encoder, args: Any, kwargs: dict | None, sig: Any,
                 iterable: bool) -> None:
    if iterable:
        enc.value(("iter", list(args)))
    else:
        bound = None
        if sig is not None:
            try:
                bound = sig.bind(*args, **(kwargs or {})).arguments
            except TypeError:  # the call will fail in the worker; key it as written
                bound = None
        if bound is not None:
            enc.value(("bound", list(bound.items())))
        else:
            enc.value(("raw", tuple(args), dict(kwargs or {})))


def func_digest(func: Callable | str) -> bytes:
    """A digest of what ``func`` computes; raises :class:`Unkeyable` with the reason."""
    enc = _Encoder()
    enc.write(b"py", f"{sys.version_info[0]}.{sys.version_info[1]}".encode())
    if isinstance(func, str):
        enc.write(b"path", func.encode())
        module = _module_of_path(func)
        if module is not None:
            enc.write(b"pathmod", module)
    else:
        try:
            enc.value(func)
        except Unkeyable as exc:
            raise Unkeyable(f"{describe(func)} cannot be keyed: {exc}") from None
        except RecursionError:
            raise Unkeyable(f"{describe(func)} cannot be keyed: it is nested too deeply") from None
    return enc.digest()


def describe(func: Any) -> str:
    """A callable's name for messages: its qualified name, or the dotted path."""
    if isinstance(func, str):
        return func
    return getattr(func, "__qualname__", None) or type(func).__name__


def signature_of(func: Any) -> inspect.Signature | None:
    """The signature calls of ``func`` are bound to before keying (plain functions)."""
    if not isinstance(func, types.FunctionType):
        return None
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _module_of_path(path: str) -> bytes | None:
    """For a dotted path, the token of the module that defines it (source hash if local)."""
    import importlib.util

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            continue
        if spec is None:
            continue
        origin = spec.origin if spec.has_location else None
        return _module_token(name, origin)
    return None


# ---------------------------------------------------------------- library or local code
@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {os.path.join(p, "lib") for p in {sys.base_prefix, sys.base_exec_prefix}}
    try:
        import site

        roots |= set(site.getsitepackages())
    except AttributeError:  # some embedded interpreters lack it
        pass
    return tuple(sorted(os.path.realpath(r) + os.sep for r in roots if r))


@functools.lru_cache(maxsize=4096)
def _is_library_file(path: str) -> bool:
    return os.path.realpath(path).startswith(_library_roots())


def _is_library_module(name: str | None) -> bool:
    """True for the standard library, built-in and installed modules; False for ``__main__``
    and local modules (their code is keyed by value)."""
    if not name or name == "__main__":
        return False
    module = sys.modules.get(name)
    if module is None:
        return False
    path = getattr(module, "__file__", None)
    return path is None or _is_library_file(path)


_source_hashes: dict[tuple, bytes] = {}


def _module_token(name: str, path: str | None) -> bytes:
    """A module's name, plus a hash of its source when it is local (edits change keys),
    or its package's version when installed."""
    if path is None or not os.path.isfile(path) or _is_library_file(path):
        top = sys.modules.get(name.partition(".")[0])
        version = getattr(top, "__version__", "")
        return f"{name}@{version if isinstance(version, str) else ''}".encode()
    st = os.stat(path)
    cache_key = (path, st.st_mtime_ns, st.st_size)
    digest = _source_hashes.get(cache_key)
    if digest is None:
        with open(path, "rb") as f:
            digest = hashlib.blake2b(f.read(), digest_size=16).digest()
        _source_hashes[cache_key] = digest
    return name.encode() + b"#" + digest


@functools.lru_cache(maxsize=2048)
def global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names a code object (and the code nested in it) reads or writes as globals."""
    out: dict[str, None] = {}
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"):
            out[ins.argval] = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.update(dict.fromkeys(global_names(const)))
    return tuple(out)


# ---------------------------------------------------------------- canonical encoding
_SKIP_CLASS_ATTRS = frozenset({"__dict__", "__weakref__", "__module__", "__doc__",
                               "__qualname__"})


class _Encoder:
    """Feeds a canonical, deterministic encoding of values into a hash.

    Every atom is written as ``tag, length, bytes``; containers as a tag and
    their items' encodings; unordered containers (dict, set) as their items'
    sorted digests. Functions and classes are written as digests of their
    own encoding; one that is already being encoded (recursion) as a
    back-reference to its depth.
    """

    def __init__(self, stack: list | None = None, done: dict | None = None) -> None:
        self._h = hashlib.blake2b(digest_size=20)
        self._stack: list[int] = stack if stack is not None else []
        self._done: dict[int, bytes] = done if done is not None else {}

    def digest(self) -> bytes:
        return self._h.digest()

    def write(self, tag: bytes, data: bytes = b"") -> None:
        self._h.update(tag + b":" + len(data).to_bytes(8, "little") + data)

    def _sub(self, obj: Any, how: Callable[[_Encoder, Any], None] | None = None) -> bytes:
        enc = _Encoder(self._stack, self._done)
        (how or _Encoder.value)(enc, obj)
        return enc.digest()

    def _unordered(self, tag: bytes, items: list) -> None:
        digests = sorted(self._sub(item) for item in items)
        self.write(tag, len(digests).to_bytes(8, "little") + b"".join(digests))

    def value(self, obj: Any) -> None:
        t = type(obj)
        if obj is None or obj is Ellipsis or obj is NotImplemented:
            self.write(b"const", repr(obj).encode())
        elif t is bool:
            self.write(b"bool", b"1" if obj else b"0")
        elif t is int:
            self.write(b"int", str(obj).encode())
        elif t is float:
            self.write(b"float", obj.hex().encode())
        elif t is complex:
            self.write(b"complex", f"{obj.real.hex()},{obj.imag.hex()}".encode())
        elif t is str:
            self.write(b"str", obj.encode("utf-8", "surrogatepass"))
        elif t in (bytes, bytearray):
            self.write(b"bytes" if t is bytes else b"bytearray", bytes(obj))
        elif t in (tuple, list):
            self._sequence(b"tuple" if t is tuple else b"list", obj)
        elif t is dict:
            self._unordered(b"dict", list(obj.items()))
        elif t in (set, frozenset):
            self._unordered(b"set", list(obj))
        elif t is range:
            self.write(b"range", f"{obj.start},{obj.stop},{obj.step}".encode())
        elif t is slice:
            self._sequence(b"slice", (obj.start, obj.stop, obj.step))
        elif t is types.CodeType:
            self._code(obj)
        elif t is types.FunctionType:
            self._once(b"function", obj, _Encoder._function)
        elif t is types.ModuleType:
            self.write(b"module", _module_token(obj.__name__, getattr(obj, "__file__", None)))
        elif isinstance(obj, type):
            self._once(b"class", obj, _Encoder._class)
        elif t is types.MethodType:
            self._sequence(b"method", (obj.__func__, obj.__self__))
        elif t in (types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
                   types.MethodDescriptorType, types.ClassMethodDescriptorType):
            self._builtin(obj)
        elif t is functools.partial:
            self._sequence(b"partial", (obj.func, obj.args, obj.keywords or {}))
        elif t in (staticmethod, classmethod):
            self._sequence(t.__name__.encode(), (obj.__func__,))
        elif t is property:
            self._sequence(b"property", (obj.fget, obj.fset, obj.fdel))
        elif t is memoryview:
            self.write(b"bytes", obj.tobytes())
        elif hasattr(t, "nbgroups_value"):  # a snapshot kept as its pickle: keyed as the object
            self.value(obj.nbgroups_value())
        elif hasattr(t, "nbgroups_key"):  # a value stored by digest (nbgroups.values)
            self.write(b"stored", obj.nbgroups_key())
        elif self._numpy(obj):
            pass
        else:
            self._reduced(obj)

    def _sequence(self, tag: bytes, items: Any) -> None:
        if id(items) in self._stack:
            self.write(b"cycle", str(self._stack.index(id(items))).encode())
            return
        self._stack.append(id(items))
        try:
            self.write(tag, len(items).to_bytes(8, "little"))
            for item in items:
                self.value(item)
        finally:
            self._stack.pop()

    def _once(self, tag: bytes, obj: Any, how: Callable[[_Encoder, Any], None]) -> None:
        """Functions and classes: a digest of their encoding, computed once; recursion
        (a function calling itself, a method naming its class) as a back-reference."""
        if id(obj) in self._stack:
            self.write(b"cycle", str(self._stack.index(id(obj))).encode())
            return
        digest = self._done.get(id(obj))
        if digest is None:
            self._stack.append(id(obj))
            try:
                digest = self._sub(obj, how)
            finally:
                self._stack.pop()
            self._done[id(obj)] = digest
        self.write(tag, digest)

    def _function(self, f: types.FunctionType) -> None:
        module = getattr(f, "__module__", None)
        if module is not None and _is_library_module(module) and \
                "<locals>" not in f.__qualname__:
            self.write(b"libfunc", _module_token(module, None) + b":" + f.__qualname__.encode())
            return
        self._code(f.__code__)
        self._sequence(b"defaults", f.__defaults__ or ())
        self.value(f.__kwdefaults__ or {})
        cells = []
        for cell in f.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell (a name not yet assigned)
                cells.append(_EMPTY)
        try:
            self._sequence(b"closure", cells)
            g = f.__globals__
            refs = [(name, g[name]) for name in global_names(f.__code__) if name in g]
            self.write(b"globals", len(refs).to_bytes(8, "little"))
            for name, value in refs:
                self.write(b"global", name.encode())
                try:
                    self.value(value)
                except Unkeyable as exc:
                    raise Unkeyable(f"it uses the global {name!r}: {exc}") from None
        except RecursionError:
            raise Unkeyable("what it captures is nested too deeply") from None

    def _code(self, co: types.CodeType) -> None:
        # Deliberately left out: co_filename, co_firstlineno, co_linetable,
        # co_qualname and co_name (a cell's file name and the function's place).
        self.write(b"code", co.co_code)
        self.write(b"shape", repr((co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount,
                                   co.co_flags, co.co_names, co.co_varnames, co.co_freevars,
                                   co.co_cellvars)).encode())
        self.write(b"exc", getattr(co, "co_exceptiontable", b""))
        self.write(b"consts", len(co.co_consts).to_bytes(8, "little"))
        for const in co.co_consts:
            self.value(const)

    def _class(self, cls: type) -> None:
        if _is_library_module(cls.__module__) and "<locals>" not in cls.__qualname__:
            self.write(b"libclass",
                       _module_token(cls.__module__, None) + b":" + cls.__qualname__.encode())
            return
        self.write(b"userclass", cls.__name__.encode())
        self._sequence(b"bases", cls.__bases__)
        attrs = []
        for name, value in vars(cls).items():
            if name in _SKIP_CLASS_ATTRS:
                continue
            if name.startswith("__") and name.endswith("__") and not isinstance(
                    value, types.FunctionType | staticmethod | classmethod | property):
                continue  # generated machinery (__dataclass_fields__, __slots__ ...)
            attrs.append((name, value))
        try:
            self._unordered(b"attrs", attrs)
        except Unkeyable as exc:
            raise Unkeyable(f"class {cls.__qualname__}: {exc}") from None

    def _builtin(self, obj: Any) -> None:
        owner = getattr(obj, "__self__", None)
        name = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", ""))
        if owner is None or isinstance(owner, types.ModuleType):
            module = getattr(obj, "__module__", None) or getattr(owner, "__name__", "")
            self.write(b"builtin", f"{module}.{name}".encode())
        else:  # a bound built-in method such as [].append: its object counts
            self.write(b"boundbuiltin", name.encode())
            self.value(owner)

    def _numpy(self, obj: Any) -> bool:
        np = sys.modules.get("numpy")
        if np is None:
            return False
        if isinstance(obj, np.ndarray):
            self._once_array(np, obj)
            return True
        if isinstance(obj, np.generic):
            self.write(b"npscalar", obj.dtype.str.encode())
            if obj.dtype.hasobject:
                self.value(obj.item())
            else:
                self.write(b"data", obj.tobytes())
            return True
        if isinstance(obj, np.dtype):
            self.write(b"npdtype", obj.str.encode() + repr(obj.descr).encode())
            return True
        return False

    def _once_array(self, np: Any, arr: Any) -> None:
        self.write(b"ndarray", f"{type(arr).__qualname__}|{arr.dtype.str}|{arr.shape}".encode())
        if arr.dtype.hasobject:
            self._sequence(b"items", arr.ravel().tolist())
        else:
            if arr.dtype.fields is not None:
                self.write(b"descr", repr(arr.dtype.descr).encode())
            data = np.ascontiguousarray(arr)  # no copy when it is contiguous already
            if data.nbytes >= LARGE_ARRAY:  # a captured 50 MB frame: its digest, not a copy
                self.write(b"data128", xxhash.xxh3_128_digest(data.reshape(-1).view(np.uint8)))
            else:
                self.write(b"data", data.tobytes())

    def _reduced(self, obj: Any) -> None:
        """Any other object: what it reduces to for pickling (its class and state)."""
        if id(obj) in self._stack:
            self.write(b"cycle", str(self._stack.index(id(obj))).encode())
            return
        try:
            rv = obj.__reduce_ex__(4)
        except Exception as exc:  # any refusal means: cannot be keyed
            raise Unkeyable(f"a {type(obj).__qualname__} cannot be keyed "
                            f"({type(exc).__name__}: {exc})") from None
        if isinstance(rv, str):
            self.write(b"global", f"{type(obj).__module__}.{rv}".encode())
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise Unkeyable(f"a {type(obj).__qualname__} reduces to {type(rv).__name__}")
        func, args, state, listitems, dictitems, *_ = (*rv, None, None, None, None)
        self._stack.append(id(obj))
        try:
            self.write(b"reduce", type(obj).__qualname__.encode())
            self.value(func)
            self.value(tuple(args))
            self.value(state)
            self.value(None if listitems is None else list(listitems))
            self.value(None if dictitems is None else dict(dictitems))
        except RecursionError:
            raise Unkeyable(f"a {type(obj).__qualname__} is nested too deeply") from None
        finally:
            self._stack.pop()


class _Empty:
    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()
