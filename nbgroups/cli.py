"""``python -m nbgroups`` / ``nbgroups``: list groups, show one, delete one, check a store,
run the demo, serve the dashboard (:mod:`nbgroups.dashboard`).

The store is ``--store PATH``, else ``NBGROUPS_STORE``, else ``./.nbgroups``
(the notebook's default), so the command line sees what a notebook in the
same directory stored.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence

from . import api, display
from .display import flush, load_failures, progress
from .display.formatting import meter
from .display.table import format_table, group_rows
from .errors import NbgroupsError
from .records import TaskList

DEMO_GROUP = "demo"


def train(lr: float, depth: int, seed: int) -> dict:
    """The demo's stand-in for fitting a model: a score that peaks at lr=0.1, depth=6.

    A learning rate of 1.0 with a deep model diverges (a ``FloatingPointError``),
    as such sweeps do.
    """
    rng = random.Random(hash((lr, depth, seed)) & 0xFFFFFFFF)
    time.sleep(rng.uniform(0.005, 0.03))
    if lr >= 1.0 and depth >= 8:
        raise FloatingPointError(f"loss diverged to inf at epoch {rng.randint(2, 9)} "
                                 f"(lr={lr}, depth={depth})")
    score = 0.95 - 2 * abs(lr - 0.1) ** 1.2 - 0.004 * (depth - 6) ** 2 + rng.gauss(0, 0.01)
    return {"score": round(score, 4)}


# ---------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    r = api.runner()
    print(format_table(group_rows(r.counts(g) for g in api.list_groups())))
    return 0


def _require_group(group: str) -> bool:
    if api.runner().store.known(group):
        return True
    print(f"nbgroups: no group named {group!r} in store {_store_path()}", file=sys.stderr)
    return False


def cmd_show(args: argparse.Namespace) -> int:
    if not _require_group(args.group):
        return 1
    m = meter(api.runner().counts(args.group), time.time())
    print(f"group:     {m.group}")
    print(f"submitted: {m.submitted}")
    print(f"done:      {m.done}")
    print(f"failed:    {m.failed}")
    print(f"running:   {m.running}")
    print(f"queued:    {m.queued}")
    if m.cancelled:
        print(f"cancelled: {m.cancelled}")
    if m.reused:
        print(f"reused:    {m.reused}")
    print(f"elapsed:   {m.elapsed_text}")
    failures = load_failures(args.group, limit=args.limit) if m.failed else []
    if failures:
        print(f"failures ({m.failed}" + (f", first {len(failures)}" if m.failed > len(failures)
                                          else "") + "):")
    for f in failures:
        print(f"  {f.name}: {f.error}")
        if args.tracebacks and f.traceback:
            print("    " + f.traceback.rstrip().replace("\n", "\n    "))
        if args.output:
            print(f"    call: {f.call}")
            for label, text in (("stdout", f.stdout), ("stderr", f.stderr)):
                if text:
                    print(f"    {label}:\n      " + text.rstrip().replace("\n", "\n      "))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if not _require_group(args.group):
        return 1
    n = api.delete_group(args.group, tasks=args.tasks)
    if args.tasks:
        print(f"deleted group {args.group!r} and its {n} tasks")
    else:
        print(f"deleted group {args.group!r}; its {n} tasks stay fetchable by id")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.workers is not None:
        api.configure(workers=args.workers)
    grid = {"lr": [0.001, 0.01, 0.1, 1.0], "depth": [2, 4, 6, 8, 10], "seed": list(range(10))}
    if api.runner().store.known(args.group):
        api.delete_group(args.group)  # a fresh label; the earlier run's tasks stay by id
    t0 = time.monotonic()
    group = api.sweep(train, args.group, **grid)
    progress(group, mode="text")
    tasks = api.fetch_group(group, wait=-1) or TaskList()
    elapsed = time.monotonic() - t0
    flush()
    ok = [t for t in tasks if t.success]
    failed = [t for t in tasks if t.success is False]
    by_config: dict[tuple, list[float]] = {}
    for t in ok:
        by_config.setdefault((t.kwargs["lr"], t.kwargs["depth"]), []).append(t.result["score"])
    print(f"{len(tasks)} tasks in {elapsed:.1f} s: {len(ok)} done, {len(failed)} failed")
    if by_config:
        (lr, depth), scores = max(by_config.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        print(f"best: lr={lr} depth={depth}, mean score {sum(scores) / len(scores):.3f} "
              f"over {len(scores)} seeds")
    if failed:
        kinds = sorted({(t.kwargs["lr"], t.kwargs["depth"]) for t in failed})
        print("failed configurations: " + ", ".join(f"lr={a} depth={b}" for a, b in kinds)
              + f" ({failed[0].error.split(' (')[0]})")
    print(f"results kept in {_store_path()} as group {group!r}: "
          f"`python -m nbgroups show {group}`")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check a store without opening it for use (a damaged one would not open)."""
    from .store.check import check_store

    path = args.store or api.settings().store
    try:
        reports = check_store(path)
    except FileNotFoundError as exc:
        print(f"nbgroups: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(r.ok for r in reports) else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard.server import serve  # tornado only for this command

    api.configure(progress=False)
    return serve(api, host=args.host, port=args.port, read_only=args.read_only)


def _store_path() -> str:
    return str(getattr(api.runner().store, "directory", api.settings().store))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbgroups", description="Parallel task groups: inspect the store, run the demo.")
    parser.add_argument("--store", metavar="PATH",
                        help="store directory (default: $NBGROUPS_STORE or ./.nbgroups)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="the groups in the store, with their counts")
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("show", help="one group's counts and failures")
    p.add_argument("group")
    p.add_argument("--tracebacks", action="store_true", help="print each failure's traceback")
    p.add_argument("--output", action="store_true",
                   help="print each failure's call, stdout and stderr (logging, warnings)")
    p.add_argument("--limit", type=int, default=20, help="failures to list (default 20)")
    p.set_defaults(run=cmd_show)
    p = sub.add_parser("delete", help="delete a group's label (with --tasks: its tasks too)")
    p.add_argument("group")
    p.add_argument("--tasks", action="store_true", help="delete the tasks too")
    p.set_defaults(run=cmd_delete)
    p = sub.add_parser("check", help="check a store: database integrity, signatures, files "
                                     "(exit code 1 if anything is wrong)")
    p.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                   help="store directory (as the global --store)")
    p.set_defaults(run=cmd_check, configure=False)
    p = sub.add_parser("demo", help="run a 200-task demo sweep with live progress")
    p.add_argument("--group", default=DEMO_GROUP, help=f"group name (default {DEMO_GROUP!r})")
    p.add_argument("--workers", type=int, default=None, help="worker processes")
    p.set_defaults(run=cmd_demo)
    p = sub.add_parser("dashboard", help="serve a live web dashboard of every group in the store")
    p.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                   help="store directory (as the --store before the command)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--read-only", action="store_true",
                   help="serve no action (cancel, retry, delete)")
    p.set_defaults(run=cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nbgroups`` and ``python -m nbgroups``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        changes = {"progress": "text"}
        if args.store:
            changes["store"] = args.store
        if getattr(args, "configure", True):
            api.configure(**changes)
        return args.run(args)
    except (NbgroupsError, OSError) as exc:  # a bad store or key directory, bad NBGROUPS_*
        print(f"nbgroups: {exc}", file=sys.stderr)
        return 1
    finally:
        display.reset()
        api.reset()
