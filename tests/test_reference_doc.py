"""Every code block of django-q's groups document, run with ``django_q.tasks`` -> ``nbgroups``.

The document (copied verbatim from ``shared/reference/django-q-groups.rst`` to
``tests/data/`` so that the test does not depend on a checkout beside the repo)
has lost its line breaks: it is one long line. :func:`code_blocks` therefore
rebuilds each ``.. code-block:: python`` body into statements (see
:func:`rebuild`); a document with its line breaks intact is read as is.

What the document leaves undefined, and how it is supplied (never skipped):

* block 3 (fetch group example) reads ``successes`` without defining it; the
  text around it ("only use the successes") means the successful tasks just
  fetched, i.e. ``results`` on the line before. The name is rewritten to
  ``results`` and the test checks that all three spellings agree, as the
  document claims ("this is the same as").
* block 4 fetches a task named ``'winter-speaker-alpha-ceiling'`` in a group of
  more than 100 tasks: the test submits 101 tasks, one with that
  ``task_name``, and checks that the group was printed and deleted.
* block 5 builds an ``AsyncTask`` (never run) and waits for its cached group to
  have 10 results: the test first submits 10 such cached tasks.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent / "data" / "django-q-groups.rst"

# Where a statement may start in text whose line breaks were lost.
_START = re.compile(
    r"(?<![\w.])(?:#|from\s+\w|import\s+\w|for\s+\w+\s+in\s|if\s|print\(|"
    r"\w+\s+=\s|[A-Za-z_][\w.]*\()"
)


_CONTINUES = set("+-*/%.,([{=<>&|^@")


def _compiles(code: str) -> bool:
    try:
        compile(code, "<doc>", "exec")
    except SyntaxError:
        return False
    return True


def rebuild(text: str) -> str:
    """Statements (one per line) from a code block whose line breaks were lost.

    A statement ends at the first later statement start where it compiles
    (a header ``...:`` counts when it compiles with a body); a comment runs to
    the next statement start (so a block's last comment keeps the prose after
    it: harmless). The body of a header is every statement up to the next
    comment line, the usual layout of documentation snippets. The last
    statement ends as soon as it is complete; what follows is prose.
    """
    text = " ".join(text.split())
    starts = sorted({m.start() for m in _START.finditer(text)} | {len(text)})
    lines: list[tuple[str, str]] = []  # (kind, text): kind in comment/header/stmt
    pos = 0
    while pos < len(text):
        later = [s for s in starts if s > pos]
        if text[pos] == "#":
            end = later[0]
            lines.append(("comment", text[pos:end].strip()))
            pos = end
            continue
        for end in later:
            seg = text[pos:end].strip()
            if seg.endswith(":") and _compiles(seg + "\n    pass"):
                lines.append(("header", seg))
                break
            if _compiles(seg):
                lines.append(("stmt", seg))
                break
        else:  # the last statement: its shortest complete form, then prose follows
            words = text[pos:].split(" ")
            for n in range(1, len(words) + 1):
                seg = " ".join(words[:n])
                # a next word starting with an operator continues the expression;
                # prose starts with a letter ("or call them directly ...")
                if _compiles(seg) and (n == len(words) or words[n][0] not in _CONTINUES):
                    lines.append(("stmt", seg))
                    break
            break
        pos = end
    out, indent = [], ""
    for kind, line in lines:
        if kind == "comment":
            indent = ""
        out.append(indent + line)
        if kind == "header":
            indent += "    "
    return "\n".join(out) + "\n"


def code_blocks(doc: str) -> list[str]:
    """The bodies of the ``.. code-block:: python`` directives, as runnable source."""
    blocks = []
    for chunk in re.split(r"\.\. code-block:: python", doc)[1:]:
        if "\n" in chunk.strip("\n") and re.match(r"\s*\n\s*\n?( +)\S", chunk):
            body = re.match(r"\s*\n((?:[ \t]+.*\n|\s*\n)+)", chunk).group(1)
            blocks.append(textwrap.dedent(body).strip() + "\n")
        else:
            chunk = re.split(r"\s\.\. [\w:-]+::", chunk)[0]  # the next directive ends it
            blocks.append(rebuild(chunk))
    return blocks


def test_rebuild_recovers_the_documented_layout():
    """The rebuilt first block is django-q's original snippet, line for line."""
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) == 5
    assert blocks[0] == (
        "# result group example\n"
        "from django_q.tasks import async_task, result_group\n"
        "for i in range(4):\n"
        "    async_task('math.modf', i, group='modf')\n"
        "# wait until the group has 4 results\n"
        "result = result_group('modf', count=4)\n"
        "print(result)\n"
    )
    assert blocks[1] == "[(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]\n"
    assert blocks[4].splitlines()[-1] == "result = a.result_group(count=10)"
    assert code_blocks("x\n\n.. code-block:: python\n\n    a = 1\n    b = 2\n\nprose\n") == [
        "a = 1\nb = 2\n"]


def _run(code: str, namespace: dict) -> str:
    code = code.replace("django_q.tasks", "nbgroups")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<django-q-groups.rst>", "exec"), namespace)
    return out.getvalue()


def _statements(code: str):
    for node in ast.parse(code.replace("django_q.tasks", "nbgroups")).body:
        yield ast.unparse(node)


def test_every_code_block(nb):
    blocks = code_blocks(DOC.read_text())

    # 1. result group example, and 2. its documented output
    printed = _run(blocks[0], {})
    expected = ast.literal_eval(blocks[1])
    assert expected == [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    assert printed.strip() == blocks[1].strip()
    assert ast.literal_eval(printed) == expected

    # 3. fetch group example; one failure in the group, so the exclude branch runs
    nb.async_task("math.modf", "not a number", group="modf")
    nb.result_group("modf", count=5)
    code = blocks[2].replace("for task in successes", "for task in results")
    assert "successes" not in code.replace("# only use the successes", "")
    ns: dict = {}
    seen = []
    for stmt in _statements(code):
        exec(stmt, ns)
        if type(ns.get("results")) is list:  # a list of results, not a TaskList
            seen.append(ns["results"])
    assert ns["failure_count"] == 1
    assert seen == [expected] * 3 and ns["results"] == expected

    # 4. group functions on a task fetched by name
    for i in range(101):
        nb.async_task("math.floor", i + 0.5, group="big",
                      task_name="winter-speaker-alpha-ceiling" if i == 50 else None)
    nb.result_group("big", count=101)
    out = _run(blocks[3], {})
    lines = out.splitlines()
    assert ast.literal_eval(lines[0]) == list(range(101))
    assert lines[1] == "Deleted group big"
    assert nb.result_group("big") is None
    task = nb.fetch("winter-speaker-alpha-ceiling")
    assert task.result == 50 and task.group is None  # the label went, the task stayed

    # 5. AsyncTask, cached: wait until its group has 10 results
    for _ in range(10):
        nb.async_task("math.floor", 2.5, group="math", cached=True)
    ns = {}
    _run(blocks[4], ns)
    assert ns["result"] == [2] * 10
    assert ns["a"].id is None and ns["a"].cached is True
    assert nb.result_group("math") is None  # only in the cache layer


@pytest.mark.parametrize("block", [0, 2, 3, 4])
def test_blocks_compile_after_rebuild(block):
    assert _compiles(code_blocks(DOC.read_text())[block])
