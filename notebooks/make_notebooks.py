"""Write the example notebooks of this folder from the cell sources below.

Run ``python notebooks/make_notebooks.py`` after editing a cell here; the .ipynb
files are committed without outputs (``tests/test_notebooks.py`` runs them).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


QUICKSTART = [
    md("""
# nbgroups quickstart

The examples of django-q's *Groups* document, run from a notebook: each call goes
to a pool of worker processes, every result is kept on disk under its group, and
`%load_ext nbgroups` shows each group's progress in the cell that submitted to it.
"""),
    code("""
%load_ext nbgroups
import nbgroups
from nbgroups import (
    AsyncTask,
    async_task,
    count_group,
    delete_group,
    fetch,
    fetch_group,
    result_group,
)

# Results live in ./.nbgroups beside the notebook (the default store, which git here
# ignores) and survive kernel restarts.
nbgroups.configure(store='.nbgroups')

# Results add up across runs unless the groups are deleted first.
for group, cached in (('modf', False), ('math', True)):
    delete_group(group, tasks=True, cached=cached)
"""),
    md("""
## Groups

Pass `group=` to `async_task`; `result_group(..., count=4)` waits until four tasks
of the group have finished and returns their results in submission order.
"""),
    code("""
# result group example
for i in range(4):
    async_task('math.modf', i, group='modf')

# wait until the group has 4 results
result = result_group('modf', count=4)
print(result)
"""),
    md("""
`fetch_group` returns the `Task` records instead of the bare results; the list has
django-queryset-like helpers such as `exclude(success=False)`.
"""),
    code("""
# count the number of failures
failure_count = count_group('modf', failures=True)

# only use the successes
results = fetch_group('modf')
if failure_count:
    results = results.exclude(success=False)
successes = [task.result for task in results]

# this is the same as
results = fetch_group('modf', failures=False)
also = [task.result for task in results]

# and the same as
assert successes == also == result_group('modf')  # filters failures by default
print(failure_count, 'failures;', successes)
"""),
    md("""
## Group functions on a task

Every task has a human name (four words derived from its id); `fetch` finds a task
by id or by name, and the task record knows its group. Deleting the group's label
keeps the tasks (fetchable by id, with `group=None`), so the group is empty
afterwards; its progress view above keeps what it showed and says "group deleted".
"""),
    code("""
name = fetch_group('modf')[0].name
print('first task of the group:', name)

task = fetch(name)
if task.group_count() > 3:
    print(task.group_result())
    task.group_delete()
    print(f'Deleted group {task.group}')
"""),
    md("""
## AsyncTask, cached

`AsyncTask` takes the options as attributes; `cached=True` keeps the results only in
the fast, expiring cache layer. `result_group(count=10)` waits for ten results.
"""),
    code("""
# add tasks to the math group and run them cached
for i in range(10):
    a = AsyncTask('math.floor', i + 0.5, group='math', cached=True)
    a.run()

# wait until this task's group has 10 results
result = a.result_group(count=10)
print(result)
"""),
    md("""
Last cell: wait until every group of this notebook is final, so the progress views
saved with the notebook show the final counts.
"""),
    code("""
result_group('math', wait=-1, cached=True)
print('math:', count_group('math', cached=True), 'results')
"""),
]


SWEEP = [
    md("""
# A parameter sweep

How large is the bias of the Euler-Maruyama scheme? We simulate the Ornstein-Uhlenbeck
process $dX = -k\\,X\\,dt + \\sigma\\,dW$ (whose stationary variance is
$\\sigma^2 / 2k$) over a grid of stiffness `k` and step `dt`, one task per point, and
compare the simulated variance with the exact one.

Some points fail: `k = 0` has no stationary distribution, and the explicit scheme is
unstable when `k * dt >= 2`. The progress view shows the failures as they happen; at the
end we fix what can be fixed and retry only the failed points.
"""),
    code("""
%load_ext nbgroups
import json
import os
import tempfile

import numpy as np

import nbgroups

nbgroups.configure(store='.nbgroups')  # results are kept here, beside the notebook (the default)

N_PATHS = 2_000  # Monte Carlo paths per point: more paths, smaller error bars, longer runs
"""),
    md("""
## The model

The solver settings are read from a small JSON file **when a task runs**, not captured
when it is submitted. That matters for retrying: `retry_group` re-runs the *same* callable
with the same arguments, and a notebook function is shipped to the workers with the
values of the globals it uses at submission time, so changing a notebook variable
afterwards would not reach the retried tasks. A file the function reads does.
"""),
    code("""
# in a temporary directory, so that running the notebook leaves nothing beside it
SOLVER_FILE = os.path.join(tempfile.mkdtemp(prefix='nbgroups-sweep-'), 'solver.json')


def write_solver_settings(**settings):
    with open(SOLVER_FILE, 'w') as f:
        json.dump(settings, f)


write_solver_settings(substeps=1)


def simulate(k, dt, sigma=1.0, t_end=20.0, paths=N_PATHS, seed=0):
    \"\"\"Stationary variance of dX = -k X dt + sigma dW by Euler-Maruyama, vs sigma^2 / 2k.\"\"\"
    if k <= 0:
        raise ValueError(f'k must be > 0 for a stationary distribution, got k={k}')
    with open(SOLVER_FILE) as f:
        substeps = json.load(f)['substeps']
    h = dt / substeps
    if k * h >= 2:
        raise ValueError(f'unstable step: k*h = {k * h:.2f} >= 2 with {substeps} substep(s); '
                         'raise substeps in the solver settings')
    rng = np.random.default_rng(seed)
    x = np.zeros(paths)
    for _ in range(round(t_end / h)):
        x += -k * x * h + sigma * np.sqrt(h) * rng.standard_normal(paths)
    exact = sigma**2 / (2 * k)
    return {'variance': float(x.var()), 'exact': exact,
            'rel_error': float(x.var() / exact - 1), 'substeps': substeps}
"""),
    md("""
## The sweep

`nbgroups.sweep` submits one task per point of the grid and returns at once; the
progress view below the cell keeps updating while you work in other cells.
"""),
    code("""
K = [0.0, 5.0, 10.0, 15.0, 20.0]
DT = [0.01, 0.02, 0.05, 0.1, 0.2]

nbgroups.delete_group('grid', tasks=True)  # start from scratch when the notebook is re-run
nbgroups.sweep(simulate, 'grid', k=K, dt=DT)
"""),
    code("""
# The sweep runs in the background: this cell answers at once.
print(len(K) * len(DT), 'points submitted; now:', nbgroups.group_counts('grid'))
"""),
    md("""
## Waiting for the results

`result_group(..., wait=-1)` blocks until every point has finished (the view above goes
on updating meanwhile) and returns the successful results in submission order.
"""),
    code("""
results = nbgroups.result_group('grid', wait=-1)
print(len(results), 'points succeeded,', nbgroups.count_group('grid', failures=True), 'failed')
"""),
    md("""
## Results as a DataFrame

One row per point: the grid parameters, the result's fields, and how the task ended.
"""),
    code("""
df = nbgroups.fetch_group('grid').to_dataframe()
df[['k', 'dt', 'success', 'variance', 'exact', 'rel_error', 'error', 'time_taken']]
"""),
    code("""
# Relative error of the stationary variance: it grows with k * dt (the scheme's bias).
df.pivot(index='k', columns='dt', values='rel_error').round(3)
"""),
    code("""
failed = df[~df['success'].astype(bool)]
failed[['k', 'dt', 'error']]
"""),
    md("""
## Retrying the failures

The unstable points need substeps. Write the new setting where the function reads it,
then re-run only the failed points (the retry shows its own progress view; the one
above keeps the first run's end). The `k = 0` points are invalid and fail again.
"""),
    code("""
write_solver_settings(substeps=20)
print('re-submitted', nbgroups.retry_group('grid'), 'failed points')
"""),
    code("""
nbgroups.result_group('grid', wait=-1)
df = nbgroups.fetch_group('grid').to_dataframe()
print(nbgroups.group_counts('grid'))
df.loc[~df['success'].astype(bool), ['k', 'dt', 'error']]
"""),
    md("""
## Re-running the sweep

With `reuse=True` a point already done in the group is not run again, so a sweep cell
can be re-run after extending a list: only the new points run, and the progress view
says how many were reused. A point's key is the function's code and the arguments'
values (not the cell it was defined in), so it survives a kernel restart; changing
`simulate`, or a value it uses, runs the points again. A failed point runs again under
its task id, and `nbgroups.fetch(id).history()` keeps the earlier failure.

A small grid shows it (few paths, so it is quick):
"""),
    code("""
nbgroups.delete_group('fine', tasks=True)  # start from scratch when the notebook is re-run
nbgroups.sweep(simulate, 'fine', k=[5.0, 10.0], dt=[0.05, 0.1], paths=[200], reuse=True)
nbgroups.result_group('fine', wait=-1)
c = nbgroups.group_counts('fine')
print(f'{c.submitted} tasks, {c.done} done, {c.reused} reused')
"""),
    md("""
Extend the `dt` list and run the same sweep again: the four points already done are
reused, only the two new ones run.
"""),
    code("""
nbgroups.sweep(simulate, 'fine', k=[5.0, 10.0], dt=[0.05, 0.1, 0.2], paths=[200], reuse=True)
nbgroups.result_group('fine', wait=-1)
c = nbgroups.group_counts('fine')
print(f'{c.submitted} tasks, {c.done} done, {c.reused} reused')
nbgroups.fetch_group('fine').to_dataframe()[['k', 'dt', 'rel_error', 'time_taken']]
"""),
    md("""
Last cell: wait until every group of this notebook is final, so the progress views
saved with the notebook show the final counts.
"""),
    code("""
for group in ['grid', 'fine']:
    nbgroups.result_group(group, wait=-1)
    print(nbgroups.group_counts(group))
"""),
]


def write(name: str, cells: list) -> Path:
    for i, cell in enumerate(cells):
        cell["id"] = f"{name}-{i:02d}"  # stable ids: regenerating gives the same file
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                             "language_info": {"name": "python"}})
    nbformat.validate(nb)
    path = HERE / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main() -> None:
    for name, cells in (("quickstart", QUICKSTART), ("sweep", SWEEP)):
        print(write(name, cells))


if __name__ == "__main__":
    main()
