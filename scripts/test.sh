#!/usr/bin/env bash
# The whole test suite, from a fresh machine: bash scripts/test.sh [pytest args...]
#
# Needs python3 >= 3.10 (with venv).  As root on Debian it also installs the
# `chromium` package for the browser tests (Playwright cannot download a browser
# here).  Phases: venv -> pip install -e '.[test,dask,docs]' -> chromium -> tmux
# (terminal tests) -> ruff -> mypy -> docs -> pytest.  Idempotent: the pip phase is skipped while
# pyproject.toml is unchanged.  Before pytest, `ruff check nbgroups tests` and
# `mypy nbgroups` must pass.
#
# The docs phase builds the documentation site (Sphinx, warnings as errors,
# nitpicky: a link or reference that does not resolve fails; the notebooks are
# executed) into docs/_build/html. It runs for the whole suite (no pytest
# arguments, as CI runs it) and is skipped when pytest arguments pick a subset,
# unless NBGROUPS_DOCS=1; NBGROUPS_DOCS=0 skips it always.
#
# Environment:
#   PYTHON=python3.12        interpreter used to create .venv (default python3)
#   CI=true                  a missing/failed Chromium install is an error, and
#                            browser tests fail instead of skipping
#   NBGROUPS_FORCE_INSTALL=1 re-run pip install even if nothing changed
#   NBGROUPS_CHROMIUM=path   Chromium binary (default /usr/lib/chromium/chromium)
#   NBGROUPS_SKIP_LINT=1     skip ruff and mypy (a quick local rerun of some tests)
#   NBGROUPS_DOCS=0|1        skip / force the docs build (default: only without args)
# Exit status: 1 if ruff, mypy or the docs build fails, else pytest's; "no tests
# collected" (5) is reported as a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
CHROMIUM="${NBGROUPS_CHROMIUM:-/usr/lib/chromium/chromium}"
CI="${CI:-false}"
STAMP="$VENV/.nbgroups-install-stamp"

TIMINGS=()
now() { date +%s.%N; }
PHASE_NAME=""
PHASE_T0=""
phase() { # phase NAME: close the running phase (if any), start NAME
    phase_end
    PHASE_NAME="$1"
    PHASE_T0="$(now)"
    echo "==> $PHASE_NAME"
}
phase_end() {
    if [[ -n "$PHASE_NAME" ]]; then
        local dt
        dt="$(awk -v a="$PHASE_T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
        TIMINGS+=("$(printf '%-10s %7ss' "$PHASE_NAME" "$dt")")
        echo "    ($PHASE_NAME: ${dt}s)"
        PHASE_NAME=""
    fi
}
summary() {
    phase_end
    echo "==> timings"
    printf '    %s\n' "${TIMINGS[@]}"
}
die() {
    echo "ERROR: $*" >&2
    exit 1
}
is_ci() { [[ "$CI" == "true" || "$CI" == "1" ]]; }

# ------------------------------------------------------------------ venv
phase venv
if [[ ! -x "$VPY" ]]; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need Python >= 3.10)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); nbgroups needs Python >= 3.10"
    echo "    creating .venv with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (Debian: apt-get install python3-venv)"
    "$VPY" -m pip install -q --disable-pip-version-check --upgrade pip
else
    echo "    .venv exists ($("$VPY" -V 2>&1))"
fi

# ------------------------------------------------------------------ pip install
phase install
want_stamp="$( (cat pyproject.toml; "$VPY" -V) 2>&1 | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
# The editable install must point at this checkout (find_spec does not import it).
installed_here() {
    "$VPY" - "$ROOT" <<'EOF' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("nbgroups")
ok = spec is not None and spec.origin and os.path.realpath(spec.origin).startswith(
    os.path.realpath(sys.argv[1]) + os.sep)
sys.exit(0 if ok else 1)
EOF
}
if [[ "${NBGROUPS_FORCE_INSTALL:-0}" != "1" && "$want_stamp" == "$have_stamp" ]] && installed_here; then
    echo "    up to date (pyproject.toml unchanged; NBGROUPS_FORCE_INSTALL=1 to redo)"
else
    rm -f "$STAMP"
    pip_log="$(mktemp)"
    # Output kept for failures only: build warnings are noise here.
    if ! "$VPY" -m pip install -q --disable-pip-version-check -e '.[test,dask,docs]' >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        die "pip install -e '.[test,dask,docs]' failed"
    fi
    rm -f "$pip_log"
    installed_here || die "nbgroups is not importable from $ROOT after pip install -e"
    echo "$want_stamp" >"$STAMP"
    echo "    installed -e '.[test,dask,docs]'"
fi

# ------------------------------------------------------------------ chromium
phase chromium
if [[ -x "$CHROMIUM" ]]; then
    echo "    $CHROMIUM present"
elif [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    echo "    $CHROMIUM missing: apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    if apt-get -o DPkg::Lock::Timeout=600 update -qq >"$apt_log" 2>&1 \
        && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >>"$apt_log" 2>&1 \
        && [[ -x "$CHROMIUM" ]]; then
        echo "    installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
    else
        tail -n 30 "$apt_log" >&2
        if is_ci; then
            die "could not install Debian chromium (CI=true): browser tests cannot run"
        fi
        echo "    WARNING: chromium install failed; browser tests will be skipped" >&2
    fi
    rm -f "$apt_log"
else
    if is_ci; then
        die "$CHROMIUM missing and cannot apt-get install it (not root or no apt-get)"
    fi
    echo "    WARNING: $CHROMIUM missing (run as root to install it); browser tests will be skipped" >&2
fi
if is_ci; then
    export NBGROUPS_REQUIRE_BROWSER=1 # a browser test must run, not skip
fi

# ------------------------------------------------------------------ tmux
# tests/test_terminal.py runs terminal IPython in tmux: a real terminal whose
# screen can be read back (a pty alone gives the bytes, not what they draw).
phase tmux
if command -v tmux >/dev/null; then
    echo "    $(tmux -V) present"
elif [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get -o DPkg::Lock::Timeout=600 install -y -qq tmux >/dev/null 2>&1 \
        || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 \
             && apt-get -o DPkg::Lock::Timeout=600 install -y -qq tmux >/dev/null 2>&1; }; then
        echo "    installed $(tmux -V)"
    elif is_ci; then
        die "could not install tmux (CI=true): terminal tests cannot run"
    else
        echo "    WARNING: tmux install failed; terminal IPython tests will be skipped" >&2
    fi
elif is_ci; then
    die "tmux missing and cannot apt-get install it (not root or no apt-get)"
else
    echo "    WARNING: tmux missing (run as root to install it); terminal IPython tests will be skipped" >&2
fi
if is_ci; then
    export NBGROUPS_REQUIRE_TMUX=1 # a terminal test must run, not skip
fi

# ------------------------------------------------------------------ lint
# Static checks first: they take seconds, and a type or lint error fails the run
# before minutes of tests. NBGROUPS_SKIP_LINT=1 skips them (a quick local rerun).
if [[ "${NBGROUPS_SKIP_LINT:-0}" != "1" ]]; then
    phase ruff
    "$VPY" -m ruff check nbgroups tests || { summary; die "ruff check failed"; }
    phase mypy
    "$VPY" -m mypy nbgroups || { summary; die "mypy failed"; }
fi

# ------------------------------------------------------------------ docs
if [[ "${NBGROUPS_DOCS:-}" == "1" || ( -z "${NBGROUPS_DOCS:-}" && $# -eq 0 ) ]]; then
    phase docs
    docs_log="$(mktemp)"
    # -W: warnings are errors; -n: nitpicky (unresolved references warn);
    # --keep-going: report every warning, not only the first.
    if ! "$VPY" -m sphinx -W --keep-going -n -q -b html docs docs/_build/html >"$docs_log" 2>&1; then
        grep -v 'IPKernelApp\] WARNING | Kernel is running over TCP' "$docs_log" >&2 || true
        rm -f "$docs_log"
        summary
        die "the documentation build failed (python -m sphinx -W --keep-going -n -b html docs docs/_build/html)"
    fi
    rm -f "$docs_log"
    echo "    built docs/_build/html"
fi

# ------------------------------------------------------------------ pytest
phase pytest
mkdir -p test-artifacts
set +e
"$VPY" -m pytest --junitxml=test-artifacts/junit.xml "$@"
rc=$?
set -e
summary
if [[ $rc -ne 0 && $rc -ne 5 ]]; then
    "$VPY" scripts/failures.py test-artifacts/junit.xml || true
fi
if [[ $rc -eq 5 ]]; then
    echo "FAILED: pytest collected no tests (exit 5)" >&2
elif [[ $rc -ne 0 ]]; then
    echo "FAILED: pytest exit status $rc" >&2
else
    echo "OK"
fi
exit "$rc"
