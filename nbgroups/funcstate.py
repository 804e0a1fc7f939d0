"""Whether a notebook function's pickle would change: the names it reads, watched.

cloudpickle carries a function defined in the notebook by value, with the
current values of the globals its code reads and of its closure cells (and,
recursively, of the notebook functions and classes those name). A page of
calls pickles such a function once, with its first call. A loop that rebinds
a global between calls::

    for s in scales:
        SCALE = s
        async_task(f, x)     # f reads SCALE

must still give each call the value it had when that call was made. So the
page keys the function by the identities of the values bound to every global
name and closure cell its pickle takes. A call whose state
differs from the one pickled gets the function pickled again (a second entry
of the page's function table), as it is at that call.

::

    watch(f) ─ once per function: walk f and what it names by value
        └─ [(f.__globals__, "SCALE"), (helper.__globals__, "TABLE"), <cell>, ...]
    values() ─ per call: what those names hold now; the page's key has their ids

Identity sees a name bound to another object (``SCALE = s``, a cell
re-assigned, a helper redefined in a later cell). It does not see an object
changed in place (``CONFIG['lr'] = lr``, ``arr[0] = 1``): pass such values as
arguments, which are snapshot per call. Functions pickled by reference
(library code, a dotted path) have nothing to watch.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import cloudpickle

from .keys import global_names

_MISSING = object()  # a global name not bound (yet): its id is a state too

_by_reference = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle carries ``obj`` (a function or class) by value."""
    if _by_reference is not None:
        try:
            return not _by_reference(obj)
        except Exception:  # an odd object: assume its content travels
            return True
    return getattr(obj, "__module__", None) == "__main__"


class Watched:
    """What a function's pickle takes that can be rebound: ``(namespace, name)``
    pairs and closure cells, found once; :meth:`values` reads them."""

    __slots__ = ("cells", "func", "names")

    def __init__(self, func: Any) -> None:
        self.func = func  # keeps id(func) meaning this function while it is watched
        self.names: list[tuple[dict, str]] = []
        self.cells: list[types.CellType] = []
        self._walk(func, set())

    def values(self) -> tuple:
        """What the watched names and cells hold now. A page keeps the tuple it
        pickled the function with, so that the ids in its key stay those objects'."""
        return (*[ns.get(name, _MISSING) for ns, name in self.names],
                *[_contents(cell) for cell in self.cells])

    def _walk(self, obj: Any, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            self._walk(obj.func, seen)
        elif isinstance(obj, types.MethodType):
            self._walk(obj.__func__, seen)
        elif isinstance(obj, types.FunctionType):
            if _by_value(obj):
                self._function(obj, seen)
        elif isinstance(obj, type) and _by_value(obj):
            for attr in vars(obj).values():
                self._walk(getattr(attr, "__func__", attr), seen)

    def _function(self, f: types.FunctionType, seen: set[int]) -> None:
        g = f.__globals__
        for name in global_names(f.__code__):
            self.names.append((g, name))
            self._walk(g.get(name), seen)
        for cell in f.__closure__ or ():
            self.cells.append(cell)
            self._walk(_contents(cell), seen)


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell: a name assigned later
        return _MISSING


def watch(func: Any) -> Watched | None:
    """What to watch of ``func``; None when its pickle takes nothing rebindable
    (a dotted path, library code pickled by reference)."""
    if isinstance(func, str):
        return None
    w = Watched(func)
    return w if w.names or w.cells else None
