#!/bin/sh
# Runs built libFuzzer harnesses one after the other, each in one process:
#   tests/fuzz/run.sh fuzz  BUILD SECONDS NAME...   (make fuzz)
#   tests/fuzz/run.sh smoke BUILD SECONDS NAME...   (make fuzz-smoke)
#
# fuzz: BUILD/fuzz_NAME for SECONDS from tests/fuzz/corpus/NAME/; the inputs it finds go to a
#   scratch directory (BUILD/new/NAME), and those that reach code (an edge, not merely a
#   new hit count: -use_counters=0) the committed corpus does not are merged into
#   tests/fuzz/corpus/NAME/ at the end (libFuzzer -merge=1), which keeps the corpus small.
# smoke: the same for SECONDS on a copy of the corpus (BUILD/smoke/NAME); the tree is left
#   as it is.
# Both: tests/fuzz/NAME.dict is used when it exists; a crash, leak, timeout (FUZZ_TIMEOUT
#   seconds for one input, default 10) or sanitizer report fails the harness, and its input
#   is kept as BUILD/artifacts/NAME-crash-... (reproduce: BUILD/fuzz_NAME that-file). The
#   last lines list each harness's executions; the exit status is non-zero when any failed.
set -u

cd "$(dirname "$0")/../.." || exit 1

mode=${1:-}
build=${2:-}
seconds=${3:-}
case $mode in
    fuzz | smoke) ;;
    *)
        echo "usage: tests/fuzz/run.sh fuzz|smoke BUILD SECONDS NAME..." >&2
        exit 2
        ;;
esac
[ -n "$build" ] && [ -n "$seconds" ] || exit 2
shift 3

timeout=${FUZZ_TIMEOUT:-10}
# Reports stop the run (halt_on_error); leaks are looked for after every input and at exit.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS

mkdir -p "$build/artifacts" "$build/logs"
summary=""
failed=0
total=0

for name in "$@"; do
    bin=$build/fuzz_$name
    corpus=tests/fuzz/corpus/$name
    log=$build/logs/$name.$mode.log
    if ! [ -x "$bin" ]; then
        echo "== fuzz $name: $bin is not built"
        failed=$((failed + 1))
        summary="$summary
  $name: not built"
        continue
    fi
    mkdir -p "$corpus"
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    if [ "$mode" = fuzz ]; then
        work=$build/new/$name
        rm -rf "$work"
        mkdir -p "$work"
        dirs="$work $corpus"
    else
        work=$build/smoke/$name
        rm -rf "$work"
        mkdir -p "$work"
        cp -R "$corpus/." "$work/"
        dirs=$work
    fi
    echo "== fuzz $name ($mode, ${seconds} s): log in $log"
    # shellcheck disable=SC2086 # dirs and dict are lists of words on purpose
    # -close_fd_mask=2: what the code under test logs goes nowhere (it is still formatted);
    # libFuzzer's and the sanitizers' reports still reach the log.
    "$bin" -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        -close_fd_mask=2 -artifact_prefix="$build/artifacts/$name-" $dict $dirs >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    execs=${execs:-0}
    total=$((total + execs))
    if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        echo "== FAIL fuzz $name (exit $rc) after $execs executions; the report:"
        grep -E -A 30 '^==[0-9]+==ERROR|runtime error|^SUMMARY|Test unit written|deadly signal' \
            "$log" | head -n 60
        summary="$summary
  $name: $execs executions, FAILED (exit $rc, $log)"
        continue
    fi
    summary="$summary
  $name: $execs executions"
    if [ "$mode" = fuzz ]; then
        before=$(find "$corpus" -type f | wc -l)
        "$bin" -merge=1 -use_counters=0 -close_fd_mask=2 "$corpus" "$work" \
            >"$build/logs/$name.merge.log" 2>&1 ||
            echo "== fuzz $name: merging into $corpus failed (see $build/logs/$name.merge.log)"
        after=$(find "$corpus" -type f | wc -l)
        summary="$summary, corpus $before -> $after files"
    fi
done

echo "== fuzz ($mode) executions per harness:$summary"
echo "== fuzz ($mode) total: $total executions, $failed harness(es) failed"
[ "$failed" -eq 0 ]
