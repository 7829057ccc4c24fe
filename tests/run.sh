#!/bin/sh
# Runs Postern's tests: tests/run.sh [unit|e2e|fuzz|perf|faults|deploy|all] (default all).
#
#   unit  every cmocka binary build/tests/test_*, then build/san/tests/test_* if built
#   e2e   the end-to-end suite (tests/e2e, pytest) against build/bin, then against
#         build/san/bin (AddressSanitizer + UBSan build) if it exists
#   fuzz  every libFuzzer harness (tests/fuzz) for FUZZ_SMOKE_SECONDS (15) each: make fuzz-smoke
#   faults  the fault matrix (tests/faults): every service and server killed, restarted and
#         stopped under a mixed load, against build/bin, then build/san/bin if built
#   deploy  the Helm chart and compose checks (tests/deploy), then the compose stack end
#         to end (tests/deploy/e2e_docker.sh) when a Docker engine answers
#
# Each binary and each pytest run counts as one suite; the last line says how many passed
# and failed, and the exit status is non-zero when any failed. Build first (`make`,
# `make SAN=1`); `make test` does both.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
PYTHON=/usr/bin/python3   # Debian's, which has pytest, psycopg2 and protobuf

what=${1:-all}
case $what in
    unit | e2e | fuzz | perf | faults | deploy | all) ;;
    *)
        echo "usage: tests/run.sh [unit|e2e|fuzz|perf|faults|deploy|all]" >&2
        exit 2
        ;;
esac

passed=0
failed=0
failures=""

record() { # record NAME STATUS
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
        echo "== PASS $1"
    else
        failed=$((failed + 1))
        failures="$failures
    $1"
        echo "== FAIL $1 (exit $2)"
    fi
}

# Runs a command with the sanitizer settings for everything built with SAN=1. UBSan's
# suppressions (tests/ubsan.supp) name only code that is not ours, each with why.
UBSAN_SETTINGS=print_stacktrace=1:halt_on_error=1:suppressions=$ROOT/tests/ubsan.supp
san() {
    if [ -f "$ROOT/tests/lsan.supp" ]; then
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=$UBSAN_SETTINGS \
            LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp "$@"
    else
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=$UBSAN_SETTINGS "$@"
    fi
}

plain() {
    "$@"
}

run_unit_dir() { # run_unit_dir DIR WRAPPER
    found=0
    for t in "$1"/test_*; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        found=1
        echo "== unit $t"
        $2 "$t"
        record "$t" $?
    done
    [ "$found" -eq 1 ] || echo "== no unit test binaries in $1"
}

# Unit tests that need PostgreSQL (test_db) get a private one for the run.
unit_db_start() {
    UNIT_DB_DIR=$(mktemp -d /tmp/postern-unit.XXXXXX)
    chmod 755 "$UNIT_DB_DIR"
    port=$((40000 + $$ % 10000))
    if sh deploy/localstack.sh start "$UNIT_DB_DIR" "$port" "$((port + 1))" >/dev/null; then
        POSTERN_TEST_DATABASE_URL=$(sed -n 's/^DATABASE_URL=//p' "$UNIT_DB_DIR/postern.env")
        export POSTERN_TEST_DATABASE_URL
    else
        echo "== could not start PostgreSQL for the unit tests; test_db will skip"
    fi
}

unit_db_stop() {
    sh deploy/localstack.sh stop "$UNIT_DB_DIR" >/dev/null 2>&1
    rm -rf "$UNIT_DB_DIR"
    unset POSTERN_TEST_DATABASE_URL
}

run_unit() {
    echo "== unit tests/unit/check_layers.sh"
    sh tests/unit/check_layers.sh
    record "lib layers (tests/unit/check_layers.sh)" $?
    unit_db_start
    if [ -d build/tests ]; then
        run_unit_dir build/tests plain
    else
        echo "== build/tests does not exist: run 'make' first"
        record "unit (not built)" 1
    fi
    if [ -d build/san/tests ]; then
        run_unit_dir build/san/tests san
    fi
    unit_db_stop
}

# One pytest directory against the programs in BINDIR, run through WRAPPER (plain or san).
run_pytest_with() { # run_pytest_with NAME DIR BINDIR WRAPPER
    if ! [ -d "$3" ]; then
        echo "== $3 does not exist: run 'make' first"
        record "$1 ($3, not built)" 1
        return 1
    fi
    echo "== $1 ($2) with POSTERN_BIN=$3"
    POSTERN_BIN=$ROOT/$3 $4 "$PYTHON" -m pytest -q "$2"
    status=$?
    record "$1 ($3)" $status
    return $status
}

# Both builds: build/bin, then build/san/bin (AddressSanitizer + UBSan) when it exists.
run_pytest_builds() { # run_pytest_builds NAME DIR [AFTER]  (AFTER BUILD runs after each)
    run_pytest_with "$1" "$2" build/bin plain
    [ -z "${3:-}" ] || "$3" plain
    if [ -d build/san/bin ]; then
        run_pytest_with "$1" "$2" build/san/bin san
        [ -z "${3:-}" ] || "$3" san
    fi
}

run_e2e() {
    run_pytest_builds e2e tests/e2e
}

# Every fuzz harness for a short while on a copy of its corpus; a crash, leak, timeout or
# sanitizer report fails it (build/fuzz/artifacts keeps the input).
run_fuzz() {
    if ! command -v clang >/dev/null 2>&1; then
        echo "== fuzz: clang is not installed (sh deploy/deps.sh installs it)"
        record "fuzz smoke (clang missing)" 1
        return
    fi
    echo "== fuzz smoke (tests/fuzz, make fuzz-smoke)"
    make -s fuzz-smoke
    record "fuzz smoke (tests/fuzz)" $?
}

# The instruction counts of one SMTP transaction and one POP3 RETR (callgrind) against the
# stored baseline: a rise over 10% fails (tests/perf/README.md).
run_perf() {
    echo "== perf: instruction counts (tests/perf/callgrind.sh)"
    sh tests/perf/callgrind.sh
    record "perf (tests/perf/callgrind.sh)" $?
}

# The fault matrix (tests/faults/README.md) on both builds (failure paths are where memory
# errors hide); each build's figures are kept side by side.
keep_fault_results() { # keep_fault_results BUILD
    [ -f build/faults/results.md ] && mv build/faults/results.md "build/faults/results-$1.md"
}

run_faults() {
    run_pytest_builds faults tests/faults keep_fault_results
}

# The Helm chart and compose file checks, then the compose stack end to end where a
# Docker engine answers (images are built offline from Debian packages the first time).
run_deploy() {
    echo "== deploy: chart and compose checks"
    "$PYTHON" -m pytest -q -rs tests/deploy
    record "deploy checks (tests/deploy)" $?
    if docker info >/dev/null 2>&1; then
        # The compose file under both Compose versions: v2 (`docker compose`, built from the
        # Go module proxy where Debian has only v1) for the stack end to end, Debian's v1
        # (docker-compose) for the scale-out proofs.
        v2=$(sh deploy/compose-v2.sh) || v2=""
        [ -n "$v2" ] || echo "== deploy: no Compose v2 (see above): e2e-docker runs with what there is"
        echo "== deploy: compose stack end to end (tests/deploy/e2e_docker.sh, ${v2:-default compose})"
        COMPOSE=$v2 sh tests/deploy/e2e_docker.sh
        record "e2e-docker${v2:+ (compose v2)}" $?
        v1=""
        command -v docker-compose >/dev/null 2>&1 && v1=docker-compose
        echo "== deploy: smtpd x3 under one HAMR limit, limiter killed, PostgreSQL restarted under load (${v1:-default compose})"
        COMPOSE=$v1 E2E_NO_BUILD=1 sh tests/deploy/e2e_docker_scale.sh
        record "e2e-docker-scale${v1:+ (compose v1)}" $?
    else
        echo "== deploy: no Docker engine answers (docker info): e2e-docker skipped"
    fi
}

case $what in
    unit) run_unit ;;
    e2e) run_e2e ;;
    fuzz) run_fuzz ;;
    perf) run_perf ;;
    faults) run_faults ;;
    deploy) run_deploy ;;
    all)
        run_unit
        run_e2e
        run_fuzz
        run_perf
        run_faults
        run_deploy
        ;;
esac

if [ -n "$failures" ]; then
    echo "Failed:$failures"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
