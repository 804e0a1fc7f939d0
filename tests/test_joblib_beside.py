"""joblib (and so scikit-learn's ``n_jobs=``) works beside a live nbgroups pool.

joblib vendors its own loky; two copies of loky in one process fought over the
multiprocessing context registered as ``'loky'`` (see nbgroups.pool_compat), so
joblib's workers lost their resource tracker: auto-memmapped arrays failed to
load or were reported as leaked, with ``KeyError`` tracebacks. These tests run
joblib with auto-memmapping (a 50 MB array) after nbgroups' pool has started,
in a real interpreter and in a real kernel, and read everything they print.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap

import nbformat
import pytest

from tests.jupyter_env import run_notebook

# joblib memmaps arguments over 1 MB; 50 MB makes it write one file per Parallel call.
SCRIPT = textwrap.dedent("""
    import os

    import numpy as np
    from joblib import Parallel, delayed

    import nbgroups

    def part_sum(a, i):
        return float(a[i::7].sum())

    def joblib_sums(a):
        return Parallel(n_jobs=2)(delayed(part_sum)(a, i) for i in range(7))

    if __name__ == "__main__":
        a = np.arange(50 * 2**20 // 8, dtype=float)
        expected = [part_sum(a, i) for i in range(7)]
        nbgroups.configure(store=STORE, workers=2, progress=False)
        assert nbgroups.result(nbgroups.async_task("math.modf", 1.5), wait=-1) == (0.5, 1.0)
        for _ in range(3):  # joblib's pool starts while nbgroups' is live
            assert joblib_sums(a) == expected
        tid = nbgroups.async_task(part_sum, a, 3)  # and so does nbgroups
        assert nbgroups.result(tid, wait=-1) == expected[3]
        print("done", os.getpid())
""")

NOISE = ("Traceback", "KeyError", "leaked", "Warning", "Error")


def test_joblib_memmapping_beside_a_live_pool_in_a_script(tmp_path):
    script = tmp_path / "beside.py"
    script.write_text(SCRIPT.replace("STORE", repr(str(tmp_path / "store"))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    # stderr is read to its end, which comes when the resource trackers (they
    # hold it) have exited: their leak warnings at exit are in it too.
    assert proc.returncode == 0, proc.stderr
    word, pid = proc.stdout.split()
    assert word == "done"
    assert not any(word in proc.stderr for word in NOISE), proc.stderr
    assert proc.stderr.strip() == ""
    assert glob.glob(f"/dev/shm/joblib_memmapping_folder_{pid}_*") == []


@pytest.mark.timeout(200)
def test_joblib_memmapping_beside_a_live_pool_in_a_kernel(tmp_path, capfd):
    body = SCRIPT.split('if __name__ == "__main__":')
    cells = [
        body[0],
        f"STORE = {str(tmp_path / 'store')!r}\n" + textwrap.dedent(body[1]),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    capfd.readouterr()
    out = run_notebook(nb, tmp_path, timeout=150)
    # The kernel and every process it starts (workers, resource trackers) write
    # their stderr to this process's, captured here; cell outputs do not show it.
    kernel_stderr = capfd.readouterr().err
    streams = [(o.get("name"), o.get("text", "")) for c in out.cells for o in c.outputs]
    done = [text.split() for name, text in streams if text.startswith("done")]
    assert len(done) == 1, streams
    stderr = "".join(text for name, text in streams if name == "stderr")
    assert not any(word in stderr for word in NOISE), stderr
    assert not any(word in kernel_stderr for word in ("Traceback", "KeyError", "leaked")), \
        kernel_stderr
    errors = [o for c in out.cells for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []


@pytest.mark.parametrize("joblib_first", [True, False])
def test_the_name_loky_stays_joblibs(tmp_path, joblib_first):
    """Whether joblib's loky was imported before nbgroups started its pool or after,
    the start method joblib looks up by name is its own, and nbgroups' pool runs."""
    code = textwrap.dedent(f"""
        import multiprocessing
        if {joblib_first}:
            import joblib.externals.loky
        import nbgroups
        nbgroups.configure(store={str(tmp_path / 'store')!r}, workers=1, progress=False)
        assert nbgroups.result(nbgroups.async_task("math.modf", 1.5), wait=-1) == (0.5, 1.0)
        import joblib.externals.loky
        print(type(multiprocessing.get_context("loky")).__module__)
        print(type(multiprocessing.get_context("loky_init_main")).__module__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["joblib.externals.loky.backend.context"] * 2


SKLEARN = textwrap.dedent("""
    import numpy as np
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import cross_val_score

    import nbgroups

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        X = rng.random((50 * 2**20 // 8 // 100, 100))  # 50 MB: joblib memmaps it
        y = np.arange(len(X)) % 2
        nbgroups.configure(store=STORE, workers=2, progress=False)
        assert nbgroups.result(nbgroups.async_task("math.modf", 1.5), wait=-1) == (0.5, 1.0)
        for _ in range(2):
            scores = cross_val_score(DummyClassifier(), X, y, cv=4, n_jobs=2)
            assert list(scores) == [0.5] * 4, scores
        print("done")
""")


def test_scikit_learn_n_jobs_beside_a_live_pool(tmp_path):
    """scikit-learn's n_jobs= is joblib with a loky pool: the same trap, the same fix."""
    pytest.importorskip("sklearn")
    script = tmp_path / "sk.py"
    script.write_text(SKLEARN.replace("STORE", repr(str(tmp_path / "store"))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert proc.stderr.strip() == "", proc.stderr
