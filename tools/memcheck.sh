#!/usr/bin/env bash
# valgrind memcheck over a short run of tools/memory.py (issue #14): no definite leak and no invalid
# access may be attributed to our code (a stack through originshield/_speedups.c).
#
#   tools/memcheck.sh [REQUESTS]     default 5000 mixed requests after 1000 warm-up
#
# PYTHONMALLOC=malloc: every Python object is its own malloc block, so memcheck sees its bounds and
# its lifetime (pymalloc's arenas would hide both). tools/valgrind-python.supp silences what the
# interpreter itself keeps until exit on purpose. The full log is build/memcheck.log; the summary
# lists every error, and the exit status is 1 when one involves _speedups.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
requests=${1:-5000}
mkdir -p build
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
PYTHONMALLOC=malloc ORIGINSHIELD_REQUIRE_SPEEDUPS=1 valgrind --tool=memcheck --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=40 \
    --suppressions=tools/valgrind-python.supp --log-file=build/memcheck.log \
    "$PYTHON" tools/memory.py --requests "$requests" --warmup 1000 --distinct 3000 --limit-kb 1000000
exec "$PYTHON" tools/memcheck_report.py build/memcheck.log
