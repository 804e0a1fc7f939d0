"""The store: every task, result and count, behind one small interface.

Nothing outside this package touches diskcache (only its ``disk`` module does).
:class:`Store` (``base``) holds the layout's logic once (template methods) over
the key shapes of ``layout``; :class:`DiskStore` (``disk``: diskcache, the default)
and :class:`MemoryStore` (``memory``: a dict, for tests and ``save=False``
experiments) implement seven primitives: get, set, add, incr, scan, delete and
a transaction (each documented in ``base``; the base raises NotImplementedError).
The store holds durable records only; :class:`ReuseIndex` (``reuse_index``) is
the ``reuse=True`` key index, a piece of its own over the same primitives.

Layout: tasks are written in *pages*, one signed entry per submission batch of
a group, never one entry per task (a diskcache ``set`` costs ~25 µs; ten
thousand of them would cost more than running ten thousand tiny tasks). Keys
are ``str`` with NUL separators, so a group's pages are one key range::

    g\\0GROUP                       int    label generation (delete_group bumps it)
    c\\0GROUP\\0GEN\\0NAME            int    counters: n (submitted), ok, fail, cancel,
                                          reused; t0/t1 float times
    s\\0GROUP\\0GEN\\0SEQ             bytes  signed SpecPage: the calls, in submission order
    o\\0GROUP\\0GEN\\0CTR             bytes  signed list of Outcome: how runs ended
                                          (CTR: time_ns.pid, so later runs sort last)
    n\\0FAMILY\\0PREFIX              str    page index: task id or derived name -> spec page key
                                          (FAMILY: the page's first two name words)
    q\\0PREFIX\\0CTR                 str    outcome index: id -> outcome page keys
    N\\0NAME\\0TIME                  str    task_name= overrides -> task id
    k\\0GROUP\\0GEN\\0KEY             str    reuse=True: call key -> task id (ReuseIndex)
    x\\0GROUP\\0GEN                 str    a cancel request from another process (cancel_board)
    y\\0GROUP\\0GEN\\0REQ\\0OWNER     int    an owner's answer to it: tasks it cancelled
    h\\0OWNER                     str    JSON: what a busy process runs now (presence)
    v\\0DIGEST\\0PREFIX             int    spec page PREFIX takes the stored value DIGEST

Large arguments are stored once by content digest outside diskcache, as raw
files ``values/DIGEST`` beside it (:mod:`nbgroups.values`): the ``v`` entries say
which pages take which, so ``delete_group(tasks=True)`` can remove the values no
task takes any more (:meth:`Store.collect_values`).

Values handed to diskcache are only ``str``, ``int``, ``float`` and ``bytes``;
every pickle is ours and signed (:mod:`nbgroups.serialize`). Reads go through
SQL on diskcache's table and refuse rows diskcache would unpickle
(CVE-2025-69872), so a planted entry is never loaded.
"""

from .base import Store
from .disk import DiskStore
from .layout import LARGE_RESULT, SEP, build_record
from .memory import MemoryStore
from .reuse_index import ReuseIndex

__all__ = ["LARGE_RESULT", "SEP", "DiskStore", "MemoryStore", "ReuseIndex", "Store",
           "build_record"]
