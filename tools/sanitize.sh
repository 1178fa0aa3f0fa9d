#!/usr/bin/env bash
# The C extension under AddressSanitizer + UndefinedBehaviorSanitizer (issue #14).
#
#   tools/sanitize.sh test [pytest args]   gcc -fsanitize=address,undefined build; the tests under it
#                                          (default: the C-facing modules, see TESTS below)
#   tools/sanitize.sh fuzz [SECONDS]       clang -fsanitize=fuzzer-no-link,address,undefined build;
#                                          each fuzz target for SECONDS/2 (default 60 in all), with
#                                          libFuzzer coverage of the C code and of the Python code
#   tools/sanitize.sh [all] [SECONDS]      both (the one command the README gives)
#
# Why two compilers: gcc's libasan is what these machines have for the tests, but atheris gets no
# coverage feedback from a gcc build (libFuzzer's edge counters need clang's -fsanitize=fuzzer-no-link
# and atheris' own ASan runtime, asan_with_fuzzer.so). Each build goes to its own copy of the tree
# under build/ so that the normal extension in originshield/ is never replaced by an instrumented one.
#
# PYTHON (default .venv/bin/python) must have the project's test dependencies; atheris is installed
# into it when missing, clang and libclang-rt-14-dev with apt-get when missing. Any sanitizer report,
# failed test or fuzz finding exits non-zero.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PYTHON=${PYTHON:-.venv/bin/python}
PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
mode=${1:-all}
shift || true
# The modules whose code paths reach the C extension most: the C decision and __call__ (test_gate
# before issue #12, test_decision and test_shield after), the client-address rules, the middleware
# end to end, the fuzz corpus replay. (The radix walk runs under all of them and under the fuzzers.)
TESTS=()
for t in tests/test_gate.py tests/test_decision.py tests/test_shield.py tests/test_client_ip.py \
    tests/test_middleware.py tests/test_fuzz_corpus.py; do
    [ ! -e "$t" ] || TESTS+=("$t")
done
FLAGS="-g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
# Python objects come from malloc, not pymalloc's arenas, so ASan sees each one's bounds and lifetime.
# Leak detection is off: the interpreter keeps its own objects alive until exit by design (the
# valgrind run, tools/memcheck.sh, is where leaks are judged).
export PYTHONMALLOC=malloc
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# build DIR CC FLAGS: copy the tree (no .git, no builds, no venvs) to DIR and build the extension there.
build() {
    local dir=$1 cc=$2 flags=$3
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -C "$root" --exclude=./.git --exclude=./build --exclude='./.venv*' --exclude='*.so' \
        --exclude=__pycache__ --exclude=./.mypy_cache --exclude=./.ruff_cache -cf - . | tar -C "$dir" -xf -
    # The compiler directly (not setup.py): no setuptools version in the way, and exactly these flags.
    local include suffix
    include=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    suffix=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    # shellcheck disable=SC2086 # FLAGS is a list of words
    $cc $flags -fPIC -shared -Wall -I"$include" originshield/_speedups.c -o "$dir/originshield/_speedups$suffix"
}

run_tests() {
    local dir=build/sanitize-gcc
    echo "sanitize: gcc -fsanitize=address,undefined build in $dir"
    build "$dir" gcc "$FLAGS -fsanitize=address,undefined"
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=("${TESTS[@]}")
    echo "sanitize: pytest ${args[*]}"
    # python itself is not instrumented: the ASan runtime must be loaded first (LD_PRELOAD); the
    # ORIGINSHIELD_REQUIRE_SPEEDUPS check makes sure the instrumented extension is the one tested.
    (cd "$dir" && LD_PRELOAD=$(gcc -print-file-name=libasan.so) ORIGINSHIELD_REQUIRE_SPEEDUPS=1 \
        "$PYTHON" -m pytest -q -p no:cacheprovider "${args[@]}")
}

need_clang() {
    if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.a >/dev/null 2>&1; then
        echo "sanitize: installing clang and libclang-rt-14-dev"
        apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
    fi
    if ! "$PYTHON" -c "import atheris" 2>/dev/null; then
        local uv
        uv=$(dirname "$PYTHON")/uv # ci/tests.sh installs uv next to the interpreter: much faster
        if [ -x "$uv" ]; then "$uv" pip install --python "$PYTHON" -q atheris; else "$PYTHON" -m pip install -q atheris; fi
    fi
}

run_fuzz() {
    local seconds=${1:-60} dir=build/sanitize-clang
    need_clang
    echo "sanitize: clang -fsanitize=fuzzer-no-link,address,undefined build in $dir"
    build "$dir" clang "$FLAGS -fsanitize=fuzzer-no-link,address,undefined"
    local atheris_dir
    atheris_dir=$("$PYTHON" -c "import atheris; print(atheris.path())")
    local target status=0
    for target in address decision; do
        # New inputs go to a scratch directory; the repository's corpus is read only.
        local scratch
        scratch=$(mktemp -d)
        echo "sanitize: fuzz $target for $((seconds / 2)) s"
        # -timeout is per input, and the decision target compiles its engines on the first one: under
        # ASan on a loaded shared machine that alone took over 20 s (a false "timeout" finding).
        (cd "$dir" && LD_PRELOAD="$atheris_dir/asan_with_fuzzer.so" ORIGINSHIELD_REQUIRE_SPEEDUPS=1 \
            "$PYTHON" -m fuzz "$target" -max_total_time=$((seconds / 2)) -timeout=120 -rss_limit_mb=4096 \
            -print_final_stats=1 -artifact_prefix="$root/build/fuzz-$target-" "$scratch" "fuzz/corpus/$target" \
            >"$root/build/fuzz-$target.log" 2>&1) || status=$?
        grep -E "DONE|stat::number_of_executed_units|FINDING|ERROR|SUMMARY|Mismatch" \
            "$root/build/fuzz-$target.log" | cut -c1-600 || true
        rm -rf "$scratch"
        if [ "$status" -ne 0 ]; then
            tail -40 "$root/build/fuzz-$target.log" | cut -c1-2000
            echo "sanitize: fuzz $target failed (exit $status); input saved as build/fuzz-$target-*" >&2
            return "$status"
        fi
    done
}

mkdir -p build
case $mode in
    test) run_tests "$@" ;;
    fuzz) run_fuzz "$@" ;;
    all) run_tests && run_fuzz "$@" ;;
    *) echo "usage: tools/sanitize.sh [test [pytest args] | fuzz [SECONDS] | all [SECONDS]]" >&2; exit 2 ;;
esac
