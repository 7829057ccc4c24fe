#!/bin/sh
# The instruction count (valgrind's callgrind, event Ir) of one SMTP transaction in smtpd
# and of one POP3 session with a RETR in pop3d, compared with tests/perf/baseline.txt: fails
# when one rose by more than 10%. Counts, not time: they do not depend on the machine's load
# (tests/perf/README.md says what is counted and why).
#
#   sh tests/perf/callgrind.sh            measure and compare (build first: make)
#   sh tests/perf/callgrind.sh --update   measure and write the baseline (make perf-baseline)
#
# Environment: POSTERN_BIN (default build/bin), PERF_N transactions measured (default 50),
# PERF_WARMUP before them (default 5), PERF_KEEP=1 keeps the working folder (logs, profiles).
#
# Each server runs under callgrind against a private PostgreSQL and nats-server (and the
# limiter, which checks every POP3 login), driven by tests/perf/drive.py. Only the loop
# callbacks that run session code are counted (TOGGLES below): reading and parsing input
# with the dispatch and the handlers it calls, sending replies, and the completions of the
# session's database queries and limiter checks. Startup, accepting and closing
# connections, timers, the database and bus clients' own reading, NATS's threads and the
# password hashing (on libuv's thread pool) are not.
set -eu
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
PYTHON=/usr/bin/python3 # Debian's, which has psycopg2
BIN=${POSTERN_BIN:-$ROOT/build/bin}
BASELINE=$ROOT/tests/perf/baseline.txt
N=${PERF_N:-50}
WARMUP=${PERF_WARMUP:-5}
LIMIT_PCT=10
PASSWORD=Perf-check-pw-1

update=false
case ${1:-} in
    --update) update=true ;;
    "") ;;
    *)
        echo "usage: sh tests/perf/callgrind.sh [--update]" >&2
        exit 2
        ;;
esac

say() { echo "perf: $*"; }
die() {
    echo "perf: $*" >&2
    exit 1
}

# The functions whose calls are counted (callgrind --toggle-collect), each the whole of one
# callback the loop makes into session code. None may call another of them (a toggle inside
# a counted call would stop the counting until it returns), and each name must be one
# function of the binary: checked below, so that a rename fails here instead of counting
# nothing. Front-end skeleton (lib/net/conn.c, lib/svc/fe_auth.c): input read, parsed and
# dispatched (read_cb); replies sent (flush_prepare_cb; write_cb, writable_idle_cb when the
# socket was full); login steps (auth_check_cb: the limiter's answer; secret_cb: the user's
# secret; verify_after_cb: the password checked).
TOGGLES_FE="read_cb flush_prepare_cb write_cb writable_idle_cb auth_check_cb secret_cb verify_after_cb"
# smtpd (services/smtpd): the recipient looked up, the message stored and answered, the
# limiter's answers for authenticated senders and unknown recipients.
TOGGLES_SMTPD="smtp_rcpt_looked_up single_cb batch_cb send_check_cb rcpt_limit_cb"
# pop3d (services/pop3d, lib/store/mailstore.c): the maildrop opened, a message read
# (raw_done, which calls pop3d's fetch_cb), QUIT's update.
TOGGLES_POP3D="open_cb raw_done update_cb"
# The command whose handler marks the start and the end of the measured window.
MARK_SMTPD=cmd_noop
MARK_POP3D=cmd_capa

for f in smtpd pop3d limiter mailctl; do
    [ -x "$BIN/$f" ] || die "$BIN/$f is missing: build first (make)"
done
command -v valgrind >/dev/null 2>&1 || die "valgrind is not installed (sh deploy/deps.sh installs it)"
command -v nm >/dev/null 2>&1 || die "nm is not installed (binutils)"
command -v callgrind_annotate >/dev/null 2>&1 || die "callgrind_annotate is missing (valgrind)"

# Skipped only where valgrind cannot run at all (an architecture or kernel it does not
# support); anything else that goes wrong fails.
if ! valgrind --tool=callgrind -q --callgrind-out-file=/dev/null /bin/true >/dev/null 2>&1; then
    say "skipped: valgrind cannot run here ($(valgrind --tool=callgrind -q /bin/true 2>&1 | head -n 1))"
    exit 0
fi

check_symbols() { # check_symbols BINARY NAME...
    b=$1
    shift
    for name in "$@"; do
        n=$(nm "$b" 2>/dev/null | awk -v f="$name" '($2 == "t" || $2 == "T") && $3 == f' | wc -l)
        [ "$n" -eq 1 ] ||
            die "$b has $n functions named $name (one expected): update the toggles in tests/perf/callgrind.sh"
    done
}
check_symbols "$BIN/smtpd" $TOGGLES_FE $TOGGLES_SMTPD $MARK_SMTPD
check_symbols "$BIN/pop3d" $TOGGLES_FE $TOGGLES_POP3D $MARK_POP3D

DIR=$(mktemp -d /tmp/postern-perf.XXXXXX)
chmod 755 "$DIR" # PostgreSQL runs as postgres when we are root
pids=""
cleanup() {
    for p in $pids; do
        { kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; } || true
    done
    sh deploy/localstack.sh stop "$DIR" >/dev/null 2>&1 || true
    if [ -n "${PERF_KEEP:-}" ]; then say "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Until PORT answers and LOG says the configuration is loaded (a front end refuses mail
# before), or fail with LOG's end.
wait_ready() { # wait_ready PORT NAME LOG PID
    i=0
    until grep -q 'configuration loaded' "$3" 2>/dev/null &&
        "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -ge 600 ] || ! kill -0 "$4" 2>/dev/null; then
            tail -n 20 "$3" >&2
            die "$2 did not start"
        fi
        sleep 0.2
    done
}

start=$(date +%s)
PG_PORT=$(free_port)
NATS_PORT=$(free_port)
SMTP_PORT=$(free_port)
POP3_PORT=$(free_port)
sh deploy/localstack.sh start "$DIR" "$PG_PORT" "$NATS_PORT" >/dev/null
set -a
. "$DIR/postern.env"
set +a
"$BIN/mailctl" migrate >/dev/null
"$BIN/mailctl" domain add perf.test >/dev/null
for u in smtp pop; do
    printf '%s\n' "$PASSWORD" | "$BIN/mailctl" user add "$u@perf.test" --password-stdin >/dev/null
done
"$BIN/mailctl" config set auth.allow_plaintext on >/dev/null
"$BIN/mailctl" config set auth.failure_delay_ms 0 >/dev/null
"$PYTHON" tests/perf/drive.py seed "$DATABASE_URL" pop@perf.test

# Runs PROGRAM as itself on the bus, its output in DIR/PROGRAM.log.
run_as() { # run_as PROGRAM COMMAND...
    prog=$1
    shift
    env $(sh deploy/localstack.sh nats-env "$DIR" "$prog") "$@" >"$DIR/$prog.log" 2>&1 &
    pids="$pids $!"
}

toggles() { # toggles NAME...: callgrind's options
    for f in "$@"; do printf ' --toggle-collect=%s' "$f"; done
}
CALLGRIND="valgrind --tool=callgrind --collect-atstart=no --dump-instr=no --compress-strings=no"

run_as limiter "$BIN/limiter"
# Both servers start at once: under valgrind, starting is the slow part. DRAIN_TIMEOUT=0:
# they stop at once when the run ends.
export DRAIN_TIMEOUT=0
SMTP_PORT=$SMTP_PORT SUBMISSION_PORT=0 SMTPS_PORT=0 LISTEN_ADDRESS=127.0.0.1 \
    SMTP_HOSTNAME=mx.perf.test run_as smtpd \
    $CALLGRIND $(toggles $TOGGLES_FE $TOGGLES_SMTPD) --dump-before=$MARK_SMTPD \
    --callgrind-out-file="$DIR/smtpd.cg" "$BIN/smtpd"
smtpd_pid=$!
POP3_PORT=$POP3_PORT POP3S_PORT=0 LISTEN_ADDRESS=127.0.0.1 POP3_HOSTNAME=pop.perf.test \
    run_as pop3d \
    $CALLGRIND $(toggles $TOGGLES_FE $TOGGLES_POP3D) --dump-before=$MARK_POP3D \
    --callgrind-out-file="$DIR/pop3d.cg" "$BIN/pop3d"
pop3d_pid=$!
wait_ready "$SMTP_PORT" smtpd "$DIR/smtpd.log" "$smtpd_pid"
wait_ready "$POP3_PORT" pop3d "$DIR/pop3d.log" "$pop3d_pid"
say "servers up under callgrind after $(($(date +%s) - start)) s; $WARMUP + $N transactions each"

"$PYTHON" tests/perf/drive.py smtp "$SMTP_PORT" smtp@perf.test "$WARMUP" "$N" ||
    die "the SMTP conversation failed (PERF_KEEP=1 keeps $DIR/smtpd.log)"
"$PYTHON" tests/perf/drive.py pop3 "$POP3_PORT" pop@perf.test "$PASSWORD" "$WARMUP" "$N" ||
    die "the POP3 conversation failed (PERF_KEEP=1 keeps $DIR/pop3d.log)"

# Instructions counted in one profile, less what the NATS client spent taking its locks:
# natsMutex_Lock spins (up to 2000 tries) while another of its threads holds the lock, and
# how often that happens depends on how the threads were scheduled, not on the code;
# uncontended it is a few dozen instructions a call.
profile_ir() { # profile_ir PROFILE
    [ -f "$1" ] || die "no profile $1 (callgrind did not dump at the mark)"
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" | awk '
        / PROGRAM TOTALS$/ { gsub(",", "", $1); total = $1 }
        /:natsMutex_Lock / { gsub(",", "", $1); locks = $1 }
        END { if (total > 0) print total - locks }'
}
# Per transaction: profile 3 (the marks' part and the N transactions) less profile 2 (the
# marks' part alone), divided by N.
per_transaction() { # per_transaction NAME
    marks=$(profile_ir "$DIR/$1.cg.2")
    window=$(profile_ir "$DIR/$1.cg.3")
    [ -n "$marks" ] && [ -n "$window" ] && [ "$window" -gt "$marks" ] ||
        die "no instructions counted for $1 (profiles in $DIR; PERF_KEEP=1 keeps them)"
    echo $(((window - marks + N / 2) / N))
}
smtp_ir=$(per_transaction smtpd)
pop3_ir=$(per_transaction pop3d)
say "measured in $(($(date +%s) - start)) s"

if $update; then
    cat >"$BASELINE" <<EOF
# Instructions (callgrind Ir) per transaction, written by tests/perf/callgrind.sh --update
# (make perf-baseline) from $N transactions after $WARMUP to warm up, build/bin as built by
# make (gcc -O2), $(valgrind --version), $(ldd --version 2>&1 | head -n 1 | sed 's/^ldd //').
# The check fails when a figure rises more than $LIMIT_PCT% above these (tests/perf/README.md).
# smtp_transaction_ir: smtpd, one connection: greeting, EHLO, MAIL, RCPT to a local user,
#   DATA with a fixed 4 KB message, the 250 after the commit, QUIT.
# pop3_retr_ir: pop3d, one connection: greeting, USER, PASS, STAT, RETR 1 (the same 4 KB
#   message), QUIT.
# Refresh it when a rise is intended (or after a fall), and commit it with the change.
smtp_transaction_ir $smtp_ir
pop3_retr_ir $pop3_ir
EOF
    say "baseline written: smtp_transaction_ir $smtp_ir, pop3_retr_ir $pop3_ir ($BASELINE)"
    exit 0
fi

[ -f "$BASELINE" ] || die "no baseline $BASELINE: write one with make perf-baseline"
status=0
compare() { # compare NAME MEASURED
    base=$(awk -v k="$1" '$1 == k { print $2 }' "$BASELINE")
    [ -n "$base" ] || die "no $1 in $BASELINE: write it with make perf-baseline"
    verdict=$(awk -v m="$2" -v b="$base" -v lim="$LIMIT_PCT" 'BEGIN {
        r = m / b
        v = r > 1 + lim / 100 ? "FAIL" : r < 1 - lim / 100 ? "fell" : "ok"
        printf "%.3f %s", r, v
    }')
    ratio=${verdict% *}
    v=${verdict#* }
    printf 'perf: %-20s measured %10s  baseline %10s  ratio %s  %s\n' "$1" "$2" "$base" "$ratio" "$v"
    case $v in
        FAIL)
            echo "perf: $1 rose more than $LIMIT_PCT% over the baseline. If the rise is intended," \
                "refresh the baseline (make perf-baseline) and commit it with the change."
            status=1
            ;;
        fell)
            echo "perf: $1 fell more than $LIMIT_PCT% under the baseline: refresh it" \
                "(make perf-baseline) so that the check guards the new figure."
            ;;
    esac
}
compare smtp_transaction_ir "$smtp_ir"
compare pop3_retr_ir "$pop3_ir"
exit $status
