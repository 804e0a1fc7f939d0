"""Tracebacks a notebook user can read: summarized where a task fails, rendered
where it is read.

A worker cannot show the source of a function defined in a notebook cell: the
cell's text lives in the kernel's :mod:`linecache` only, and cloudpickle even
renames the code it ships by value to ``<dynamic-code>``. So the kernel
remembers where the code of each callable it pickles came from
(:func:`remember`: code identified by name, first line and a checksum of its
bytecode), the worker keeps the traceback as data (:func:`summarize`: per
exception of a chain, its frames as ``(filename, line number, function,
source line or '', code id)`` and its exception line), and the kernel renders
it (:func:`render`), finding the cell a ``<dynamic-code>`` frame came from,
looking a missing source line up in its own linecache and naming a cell's
frames as IPython does (``Cell In[5], line 4``). nbgroups' own frames (the
worker loop) are left out, and an nbgroups error carrying another exception's name (``WorkerDied``,
``TaskError('ValueError', ...)``) is named once.

Standard library only: imported by pool workers.
"""

from __future__ import annotations

import linecache
import os
import sys
import traceback
import types
import zlib

_OWN = (
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py"),
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "executors", ""),
)
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

Frame = tuple  # (filename, lineno, name, line, code id): line '' when unknown in the worker
Segment = tuple  # (frames, exception line(s), link to the next segment or '')


DYNAMIC = "<dynamic-code>"  # cloudpickle's co_filename for code shipped by value
_origins: dict[tuple, str] = {}  # code id -> the file (a cell) it was defined in, here
ORIGINS_MAX = 10_000


def code_id(code: types.CodeType) -> tuple:
    """What identifies a code object across a pickle: name, first line, bytecode checksum."""
    return (code.co_name, code.co_firstlineno, zlib.crc32(code.co_code))


def remember(func: object, depth: int = 0) -> None:
    """Note where ``func``'s code (its nested functions, and the functions of its
    module it calls, a few levels deep) was defined: called in the kernel when a
    callable is pickled, so that tracebacks and :func:`nbgroups.debug` find the cell."""
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType) or code.co_filename == DYNAMIC:
        return
    if len(_origins) > ORIGINS_MAX:
        _origins.clear()
    stack = [code]
    while stack:
        c = stack.pop()
        _origins[code_id(c)] = c.co_filename
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    if depth >= 3:
        return
    scope = getattr(func, "__globals__", None) or {}
    for name in code.co_names:
        other = scope.get(name)
        if isinstance(other, types.FunctionType) and other is not func and \
                other.__module__ == getattr(func, "__module__", None):
            remember(other, depth + 1)


def origin(filename: str, ident: tuple | None) -> str:
    """The file a frame's code came from: its own name, unless cloudpickle renamed it."""
    if filename == DYNAMIC and ident is not None:
        return _origins.get(tuple(ident), filename)
    return filename


def with_origins(code: types.CodeType) -> types.CodeType:
    """``code`` (and the code nested in it) named after the files it came from, so
    pdb shows the source of a function unpickled in the kernel."""
    consts = tuple(with_origins(k) if isinstance(k, types.CodeType) else k
                   for k in code.co_consts)
    return code.replace(co_filename=origin(code.co_filename, code_id(code)), co_consts=consts)


def _own(filename: str) -> bool:
    return filename.startswith(_OWN)


def exception_line(exc: BaseException) -> str:
    """``'ValueError: bad k'``; an nbgroups error naming another type is named once
    (``'WorkerDied: the worker died'``, not ``'WorkerDied: WorkerDied: ...'``)."""
    type_name = getattr(exc, "type_name", None)
    if isinstance(type_name, str):
        message = getattr(exc, "message", "")
        return f"{type_name}: {message}" if message else type_name
    return "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")


def summarize(exc: BaseException) -> tuple[Segment, ...]:
    """The traceback of ``exc`` (and its causes/contexts, oldest first) as data."""
    chain: list[Segment] = []
    seen: set[int] = set()
    link = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = tuple(
            (code.co_filename, lineno, code.co_name,
             linecache.getline(code.co_filename, lineno).strip(), code_id(code))
            for frame, lineno in traceback.walk_tb(current.__traceback__)
            if not _own((code := frame.f_code).co_filename)
        )
        chain.append((frames, exception_line(current), link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    chain.reverse()  # oldest first: each segment's link says how it led to the next one
    return tuple(chain)


def _cell_label(filename: str) -> str | None:
    """``'Cell In[5]'`` for a cell's code in this kernel (IPython's own mapping), or None."""
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return None
    try:
        shell = ipython_mod.get_ipython()
        named = shell.compile.format_code_name(filename) if shell is not None else None
    except Exception:  # another IPython version: plain file names then
        return None
    if not named:
        return None
    return f"{named[0]} {named[1]}"


def render(chain: tuple[Segment, ...]) -> str:
    """The traceback text of :func:`summarize`'s data, with this process's sources."""
    out: list[str] = []
    for n, (frames, line, link) in enumerate(chain):
        if frames or n == len(chain) - 1:  # the raised one always reads as a traceback
            out.append("Traceback (most recent call last):\n")
        for filename, lineno, name, source, *ident in frames:
            filename = origin(filename, ident[0] if ident else None)
            label = _cell_label(filename)
            where = (f"{label}, line {lineno}" if label
                     else f'File "{filename}", line {lineno}')
            out.append(f"  {where}, in {name}\n")
            if not source:
                source = linecache.getline(filename, lineno).strip()
            if source:
                out.append(f"    {source.strip()}\n")
        out.append(line + "\n")
        out.append(link)
    return "".join(out)
