"""A notebook function reads globals: each call gets them as they were when it
was made, also when a loop rebinds one between calls that share a page.

Cells run in a real IPython shell, so that the functions live in ``__main__``
and cloudpickle carries them, with their globals, by value (as in a
notebook); the calls run on a real loky pool."""

from __future__ import annotations

import textwrap

import nbgroups
from nbgroups import api
from nbgroups.funcstate import watch


def cell(shell, code):
    result = shell.run_cell(textwrap.dedent(code))
    result.raise_error()
    return result.result


def test_a_global_rebound_in_a_loop_reaches_each_call_as_it_was(ip):
    assert cell(ip, """
        SCALE = 0
        def scaled(x):
            return x * SCALE
        for s in range(5):
            SCALE = s
            nbgroups.async_task(scaled, 10, group="loop")
        SCALE = 100  # after the last call: no call sees it
        nbgroups.result_group("loop", wait=-1)
    """) == [0, 10, 20, 30, 40]


def test_what_a_helper_reads_a_closure_and_a_redefined_helper_count_too(ip):
    assert cell(ip, """
        OFFSET = 0
        def helper(v):
            return v + OFFSET
        def outer(x):
            return helper(x)
        for k in (1, 2):
            OFFSET = k
            nbgroups.async_task(outer, 0, group="deep")
        def helper(v):  # redefined, as in a later cell
            return -v
        nbgroups.async_task(outer, 5, group="deep")

        def make():
            step = 1
            def inner(x):
                return x * step
            def bump(v):
                nonlocal step
                step = v
            return inner, bump
        inner, bump = make()
        for v in (3, 4):
            bump(v)
            nbgroups.async_task(inner, 1, group="deep")
        nbgroups.result_group("deep", wait=-1)
    """) == [1, 2, -5, 3, 4]


def test_an_unchanged_function_is_pickled_once_per_page(ip):
    cell(ip, """
        TABLE = {"a": 2}
        def look(x):
            return TABLE["a"] * x
        for i in range(200):
            nbgroups.async_task(look, i, group="once")
        nbgroups.result_group("once", wait=-1)
    """)
    pages = {id(page): page for page, _, _ in api.runner().store.group_entries("once")}
    assert sum(len(p.funcs) for p in pages.values()) == len(pages) < 200
    assert cell(ip, "nbgroups.result_group('once')") == [2 * i for i in range(200)]


def test_library_code_and_dotted_paths_have_nothing_to_watch():
    import math

    assert watch("math.floor") is None
    assert watch(math.floor) is None
    assert watch(textwrap.dedent) is None  # pickled by reference: its globals do not travel
    assert watch(nbgroups.async_task) is None
