#!/usr/bin/env bash
# The test legs of CI (README.md's test command; .ci/run adds ruff and mypy after it). From a fresh
# clone it creates one virtualenv per interpreter and installs the project with its test extra.
#
#   3.11         full suite, the C extension required (a failed build fails the run)
#   pure-python  ORIGINSHIELD_NO_SPEEDUPS=1: the product without its C extension; the suite but the
#                run-once tests (ONCE below: -m slow, and the operator tooling, -m tooling: CLI, exports,
#                config parsing), so decision, middleware, refresher, GeoIP...
#   3.12, 3.13   the same selection as pure-python, the C extension required
#   sanitizers   tools/sanitize.sh: gcc ASan+UBSan build, the C-facing tests under it; clang build
#                with libFuzzer coverage, both differential fuzzers for FUZZ_SECONDS (default 40) in all
#
# Every leg must pass (any non-zero exit, pytest's 5 for "no tests collected" included, stops the run).
# CI_LEGS="3.11 pure-python" runs a subset (a developer's quick check); the default is all of them.
# Times of each leg are printed at the end (the budget: the whole of .ci/run under 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
LEGS=${CI_LEGS:-3.11 pure-python 3.12 3.13 sanitizers}
# Two workers: the suite is mostly CPU (parsing, worker processes), and these machines have 2 cores.
PYTEST=(-m pytest -q -p no:cacheprovider -n "${CI_WORKERS:-2}")
mkdir -p build/ci
report=()

# find_python 3.12: that interpreter from PATH, or from pyenv's versions (a pyenv shim for a version
# that is not selected exists but does not run: each candidate must answer with the right version).
find_python() {
    local v=$1 p
    for p in "$(command -v "python$v" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
        if [ -n "$p" ] && [ -x "$p" ] &&
            "$p" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$v')" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "ci: python$v not found (PATH, pyenv); every supported version is tested" >&2
    return 1
}

# The package index answers pip's lookups one by one, a second or more each: pip took over five
# minutes for one virtualenv here. uv (from PyPI, into .venv) resolves and downloads in parallel
# (20 s for the same set); pip stays the fallback. The dependencies of the three virtualenvs
# install at once, then the project itself (its C extension built in place for each interpreter)
# one at a time; 3.12 and 3.13 finish behind the 3.11 legs.
requirements() { # the project's dependencies and its test extra, from pyproject.toml
    "$1" - <<'PY' >build/ci/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
}

install() { # install DIR ARGS...: pip install ARGS into DIR's interpreter, through uv when there is one
    local dir=$1
    shift
    if [ -x .venv/bin/uv ]; then
        .venv/bin/uv pip install --python "$dir/bin/python" -q "$@"
    else
        "$dir/bin/pip" install -q "$@"
    fi
}

bootstrap() { # .venv (3.11), uv in it, the requirements list
    local py
    py=$(find_python 3.11)
    [ -x .venv/bin/python ] || "$py" -m venv .venv
    .venv/bin/pip install -q uv >build/ci/uv.log 2>&1 || echo "ci: uv did not install; pip it is" >&2
    requirements "$py"
}

# CPU seconds used so far by finished child processes (user + system) into build/ci/cpu, from bash's
# `times` run in this shell (in a $(...) subshell it would report the subshell's children only).
cpu_now() {
    times >build/ci/times
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
        build/ci/times >build/ci/cpu
}

# leg NAME COMMAND...: run, time and record one leg; a failure stops CI with that leg's status.
# Wall clock and CPU are both shown: on a shared machine the wall clock says little on its own.
leg() {
    local name=$1 start=$SECONDS cpu0 cpu1 status=0
    cpu_now
    cpu0=$(<build/ci/cpu)
    shift
    echo "ci: ---- $name"
    "$@" || status=$?
    cpu_now
    cpu1=$(<build/ci/cpu)
    report+=("$(printf '%-12s %4d s wall %5d s CPU  %s' "$name" $((SECONDS - start)) $((cpu1 - cpu0)) \
        "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")")")
    if [ $status -ne 0 ]; then
        printf 'ci: %s\n' "${report[@]}" >&2
        exit "$status"
    fi
}

suite() { # suite VENV [env arguments...] [-- pytest arguments...]: the suite with that interpreter
    local dir=$1 envs=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    [ $# -eq 0 ] || shift
    env "${envs[@]}" "$dir/bin/python" "${PYTEST[@]}" "$@"
}

wants() { [[ " $LEGS " == *" $1 "* ]]; }

total=$SECONDS
leg bootstrap bootstrap
versions=(3.11)
for v in 3.12 3.13; do wants "$v" && versions+=("$v"); done
declare -A installing
for v in "${versions[@]}"; do
    dir=.venv-$v
    [ "$v" = 3.11 ] && dir=.venv
    # One project build at a time (flock): editable builds write next to each other in the tree.
    (
        [ -x "$dir/bin/python" ] || "$(find_python "$v")" -m venv "$dir"
        install "$dir" -r build/ci/requirements.txt
        { flock 9 && install "$dir" --no-deps -e .; } 9>build/ci/project.lock
    ) >"build/ci/install-$v.log" 2>&1 &
    installing[$v]=$!
done
installed() { # installed VERSION...: wait for those installs; show the log of one that failed
    local v
    for v in "$@"; do
        wait "${installing[$v]}" || { cat "build/ci/install-$v.log"; return 1; }
    done
}
leg install-3.11 installed 3.11
if wants 3.11; then
    leg 3.11 suite .venv ORIGINSHIELD_REQUIRE_SPEEDUPS=1
fi
# Run once, in the 3.11 leg: the tests marked slow (pyproject.toml's markers), the end-to-end runs of
# real servers and worker processes (every ASGI server, serve with several workers, the logging recipe,
# host metrics, restart-at-every-step replays, the examples, the benchmark smoke run), and the operator
# tooling marked tooling (CLI, exports, configuration files), which never decides a request: none of
# them runs code that differs by interpreter version or by C/Python. The other legs keep every test of
# the decision, middleware, refresher and GeoIP. Without this the five legs take about 20 minutes, over
# CI's 15-minute budget. Selected by marker: a new test file marks itself, no edit here.
ONCE=(-m "not slow and not tooling")
if wants pure-python; then
    leg pure-python suite .venv -u ORIGINSHIELD_REQUIRE_SPEEDUPS ORIGINSHIELD_NO_SPEEDUPS=1 -- "${ONCE[@]}"
fi
[ ${#versions[@]} -eq 1 ] || leg install-more installed "${versions[@]:1}"
for v in "${versions[@]:1}"; do
    leg "$v" suite ".venv-$v" ORIGINSHIELD_REQUIRE_SPEEDUPS=1 -- "${ONCE[@]}"
done
if wants sanitizers; then
    leg sanitizers env PYTHON=.venv/bin/python tools/sanitize.sh all "${FUZZ_SECONDS:-40}"
fi
report+=("$(printf '%-12s %4d s' total $((SECONDS - total)))")
printf 'ci: %s\n' "${report[@]}"
