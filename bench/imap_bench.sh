#!/bin/sh
# IMAP: Postern's imapd beside Dovecot's imap (Debian's dovecot-imapd, a private instance on
# loopback), in the same run, with byte-identical mailboxes and the same client load
# (build/bench/imap_load, source bench/imap_load.c), reported as ratios Postern/Dovecot.
# Standalone; about three minutes with the defaults.
#
#   sh bench/imap_bench.sh                 (build first: make)
#   RUNS=3 RUN_SECONDS=3 DATA_CLIENTS=4 POSTERN_BIN=build/bin sh bench/imap_bench.sh
#
# Points, each measured RUNS times, the two servers one after the other within a run:
#   login      connect, LOGIN, LOGOUT; 8 concurrent connections (users login0..login7)
#   select     SELECT INBOX of 10,000 messages of 1 KiB, again and again
#   flags      FETCH 1:* (FLAGS) on that mailbox (messages/s = the FETCH responses)
#   body1k     FETCH n BODY.PEEK[] of the 1 KiB messages, n cycling over the mailbox
#   body64k    FETCH n BODY.PEEK[] of LARGE messages of 64 KiB (another user)
#   envbs_cold FETCH a:b (ENVELOPE BODYSTRUCTURE), 100 messages never fetched before: one
#              command on one connection, its latency (a different range in each run)
#   envbs      FETCH 1:100 (ENVELOPE BODYSTRUCTURE) again and again (structures cached)
#   search_body    SEARCH BODY zebrafish (100 of the 10,000 messages match)
#   search_flagged SEARCH FLAGGED (1,000 match)
# The data points run DATA_CLIENTS connections at once, all logged in as the same user.
#
# Both servers: plaintext LOGIN on loopback (no TLS, so the servers and not the TLS library
# are measured), passwords as PBKDF2-SHA-256 SCRAM secrets with 4096 iterations. Postern
# runs its limiter (every login is checked), NATS and PostgreSQL; Dovecot runs with its
# defaults otherwise (maildir, a login process per connection; DOVECOT_LOGIN=performance
# gives long-lived login processes). Mail is loaded by bench/imap_seed.py: for Postern one
# INSERT into the user's INBOX, for Dovecot the maildir files; before any measurement both
# servers must give the same answers to the benchmark's commands (imap_seed.py check).
# POINTS="select flags" measures only those points; IMAP_BENCH_PERF=DIR records
# `perf record -a -g` of the whole machine into DIR/<point>.<run>.data while Postern serves
# each point (for finding where its time goes).
# Results are printed and written to bench/results/imap.txt and to the IMAP section of
# bench/results.md.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${POSTERN_BIN:-$ROOT/build/bin}
LOAD=${IMAP_LOAD:-$ROOT/build/bench/imap_load}
RUNS=${RUNS:-3}
RUN_SECONDS=${RUN_SECONDS:-3}
LOGIN_CLIENTS=8
DATA_CLIENTS=${DATA_CLIENTS:-4}
SMALL=10000      # messages of 1 KiB in small@bench.test's INBOX
LARGE=${LARGE:-200} # messages of 64 KiB in large@bench.test's INBOX
PASSWORD=Bench-imap-pw-1
BENCH=imap
NEEDS="$BIN/imapd $BIN/limiter $BIN/mailctl $LOAD"
. bench/common.sh
bench_ports

USERS="small@bench.test large@bench.test"
i=0
while [ $i -lt $LOGIN_CLIENTS ]; do
    USERS="$USERS login$i@bench.test"
    i=$((i + 1))
done

# --- Postern: PostgreSQL, NATS, the limiter (imapd starts once the mail is in) ---------------
postern_start $USERS
# --- Dovecot: a private instance under $DIR/dovecot -------------------------------------------
dovecot_config $USERS

# --- the same mail for both ----------------------------------------------------------------
"$PYTHON" bench/imap_seed.py "$DATABASE_URL" "$DIR/mail" small@bench.test "$SMALL" 1024 "$MAIL_UID" "$MAIL_GID"
"$PYTHON" bench/imap_seed.py "$DATABASE_URL" "$DIR/mail" large@bench.test "$LARGE" 65536 "$MAIL_UID" "$MAIL_GID"
psql -q "$DATABASE_URL" -c "VACUUM ANALYZE messages" >/dev/null

# As `make run` runs it: one worker process per CPU (WORKERS=auto, lib/svc/workers.h).
IMAP_PORT=$POSTERN_PORT IMAPS_PORT=0 LISTEN_ADDRESS=127.0.0.1 IMAP_HOSTNAME=bench.test \
    WORKERS=${WORKERS:-auto} env $(bus_login imapd) "$BIN/imapd" 2>"$DIR/imapd.log" &
imapd_pid=$!
pids="$pids $imapd_pid"
"$DOVECOT" -c "$D/dovecot.conf"
wait_port "$DOVECOT_PORT" dovecot "$D/dovecot.log"
wait_port "$POSTERN_PORT" imapd "$DIR/imapd.log"
IMAPD_WORKERS=$(ps -o pid= --ppid "$imapd_pid" | wc -l)
[ "$IMAPD_WORKERS" -gt 0 ] || IMAPD_WORKERS=1

# Both answer the benchmark's commands alike (counts of matches, flags, bodies byte for byte).
"$PYTHON" bench/imap_seed.py check "$POSTERN_PORT" "$DOVECOT_PORT" small@bench.test "$PASSWORD" "$SMALL" 1024
"$PYTHON" bench/imap_seed.py check "$POSTERN_PORT" "$DOVECOT_PORT" large@bench.test "$PASSWORD" "$LARGE" 65536

# --- the points ------------------------------------------------------------------------------
# load PORT ARGS...: one imap_load run; the plaintext password is the same for everyone.
# WRAP, when set, is a command that runs the load (perf record).
WRAP=
load() {
    port=$1
    shift
    $WRAP "$LOAD" --port "$port" --password "$PASSWORD" "$@"
}
point_command() {
    case $1 in
    select) echo "SELECT INBOX" ;;
    flags) echo "FETCH 1:* (FLAGS)" ;;
    body1k | body64k) echo "FETCH %n BODY.PEEK[]" ;;
    envbs) echo "FETCH 1:100 (ENVELOPE BODYSTRUCTURE)" ;;
    search_body) echo "SEARCH BODY zebrafish" ;;
    search_flagged) echo "SEARCH FLAGGED" ;;
    esac
}
point_user() {
    case $1 in
    body64k) echo large@bench.test ;;
    *) echo small@bench.test ;;
    esac
}
point_last() {
    case $1 in
    body64k) echo "$LARGE" ;;
    *) echo "$SMALL" ;;
    esac
}
run_point() { # run_point NAME PORT SECONDS
    name=$1
    port=$2
    secs=$3
    if [ "$name" = login ]; then
        load "$port" --mode login --clients "$LOGIN_CLIENTS" --user-format 'login%d@bench.test' \
            --seconds "$secs"
    elif [ "$name" = select ]; then
        load "$port" --mode command --clients "$DATA_CLIENTS" --user-format small@bench.test \
            --command "SELECT INBOX" --seconds "$secs"
    else
        load "$port" --mode command --clients "$DATA_CLIENTS" --user-format "$(point_user "$name")" \
            --select INBOX --command "$(point_command "$name")" --first 1 --last "$(point_last "$name")" \
            --seconds "$secs"
    fi
}
cold_range() { # the 100 messages of run $1 (1-based) for envbs_cold, near the mailbox's end
    # (the last 100 stay out: imap_seed.py check reads the last message)
    lo=$((SMALL - 100 * (RUNS + 1) + 100 * ($1 - 1) + 1))
    echo "$lo:$((lo + 99))"
}
cold_point() { # cold_point PORT RUN
    load "$1" --mode command --clients 1 --user-format small@bench.test --select INBOX \
        --command "FETCH $(cold_range "$2") (ENVELOPE BODYSTRUCTURE)" --ops 1 --seconds 60
}

RAW=$DIR/raw.txt
: >"$RAW"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# cpu SERVER: CPU ms so far of every process serving on that side (Postern: imapd, the
# limiter, PostgreSQL, NATS; Dovecot: its master and children)
cpu() {
    if [ "$1" = postern ]; then cpu_ms $(postern_server_pids $pids); else cpu_ms $(dovecot_pids); fi
}
# measure POINT SERVER RUN LINE: the load's line, with the servers' CPU per operation (µs,
# from CPU0, the servers' CPU ms before the load) added.
measure() {
    cpu1=$(cpu "$2")
    ops=$(echo "$4" | tr ' ' '\n' | sed -n 's/^ops=//p')
    cpu_op=$(awk -v a="$CPU0" -v b="$cpu1" -v n="$ops" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1000 / n; else print 0 }')
    set -- "$1" "$2" "$3" "$4 cpu_us_per_op=$cpu_op"
    echo "$1 $2 $3 $4" >>"$RAW"
    case $4 in *"failures=0 "*) ;; *)
        echo "imap_bench: failures in $1 on $2: $4" >&2
        tail -n 5 "$DIR/imapd.log" "$D/dovecot.log" >&2 ;;
    esac
}

# Warm up both: the first SELECT (Dovecot builds its index files), the flags, the cached
# structures of 1:100 and a little of everything else. envbs_cold's ranges stay untouched
# (the body fetches below start at the mailbox's start and do not reach them).
for port in "$POSTERN_PORT" "$DOVECOT_PORT"; do
    for user in small@bench.test large@bench.test; do
        load "$port" --mode command --clients 1 --user-format "$user" --select INBOX \
            --command "FETCH 1:* (FLAGS)" --ops 2 --seconds 60 >/dev/null
    done
    load "$port" --mode command --clients 1 --user-format small@bench.test --select INBOX \
        --command "FETCH 1:100 (ENVELOPE BODYSTRUCTURE)" --ops 2 --seconds 60 >/dev/null
done
# envbs_cold, once per run (a fresh range each time), before any body fetch.
r=1
while [ "$r" -le "$RUNS" ]; do
    CPU0=$(cpu postern)
    measure envbs_cold postern "$r" "$(cold_point "$POSTERN_PORT" "$r")"
    CPU0=$(cpu dovecot)
    measure envbs_cold dovecot "$r" "$(cold_point "$DOVECOT_PORT" "$r")"
    r=$((r + 1))
done
for port in "$POSTERN_PORT" "$DOVECOT_PORT"; do
    for p in login body1k body64k search_body; do
        run_point "$p" "$port" 0.5 >/dev/null
    done
done

ALL_POINTS="login select flags body1k body64k envbs search_body search_flagged"
POINTS=${POINTS:-$ALL_POINTS}
r=1
while [ "$r" -le "$RUNS" ]; do
    for p in $POINTS; do
        if [ -n "${IMAP_BENCH_PERF:-}" ]; then
            # The whole machine (imapd, PostgreSQL, the load) while Postern serves the point.
            mkdir -p "$IMAP_BENCH_PERF"
            WRAP="perf record -q -a -g -o $IMAP_BENCH_PERF/$p.$r.data --"
        fi
        CPU0=$(cpu postern)
        measure "$p" postern "$r" "$(run_point "$p" "$POSTERN_PORT" "$RUN_SECONDS")"
        WRAP=
        CPU0=$(cpu dovecot)
        measure "$p" dovecot "$r" "$(run_point "$p" "$DOVECOT_PORT" "$RUN_SECONDS")"
    done
    r=$((r + 1))
done
[ -n "${IMAP_BENCH_RAW:-}" ] && cp "$RAW" "$IMAP_BENCH_RAW"
if [ "$POINTS" != "$ALL_POINTS" ] || [ -n "${IMAP_BENCH_PERF:-}" ]; then
    # A partial or profiled run: the raw lines only, the results files stay as they are.
    cat "$RAW"
    exit 0
fi

# --- the report ------------------------------------------------------------------------------
# row POINT FIELD LABEL: FIELD over the runs, Postern's and Dovecot's, as a table row
# (bench/common.sh's peer_row).
row() {
    peer_row "$1" "$1" "$2" "$3"
}

DOVECOT_VERSION=$("$DOVECOT" --version | cut -d' ' -f1)
report_facts # POSTERN_REV PG_VERSION CPU MEM (bench/common.sh)
NATS_VERSION=$(nats-server --version 2>/dev/null | sed 's/^nats-server: //')
WHEN=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench/results
{
    echo "## IMAP: Postern imapd vs Dovecot $DOVECOT_VERSION imap"
    echo
    echo "Same run, same load, byte-identical mailboxes. $WHEN."
    echo
    echo "- Machine: $(nproc) cores ($CPU), $MEM, Linux $(uname -r); load average" \
         "$LOAD_BEFORE before the measurements, $LOAD_AFTER after (anything above the" \
         "bench's own load is other work on the machine and widens the spread)."
    echo "- Versions: Postern $POSTERN_REV (imapd from $BIN, WORKERS=${WORKERS:-auto} as \`make run\`" \
         "runs it: $IMAPD_WORKERS processes), Dovecot $DOVECOT_VERSION (maildir," \
         "login processes in $DOVECOT_LOGIN mode), PostgreSQL $PG_VERSION, nats-server $NATS_VERSION."
    echo "- Command: \`sh bench/imap_bench.sh\` (also run by \`make bench\`); load generator" \
         "build/bench/imap_load (bench/imap_load.c), mail from bench/imap_seed.py."
    echo "- Load: $RUNS runs of ${RUN_SECONDS}s per point and server; logins with" \
         "$LOGIN_CLIENTS concurrent connections, the other points with $DATA_CLIENTS" \
         "connections of one user; plaintext LOGIN on loopback, no TLS. Mailboxes:" \
         "$SMALL messages of 1 KiB (every 10th \\\\Flagged, every 100th with the body word)," \
         "$LARGE of 64 KiB."
    echo "- Figures: median over the runs (min–max in brackets). Ratio = Postern / Dovecot:" \
         "above 1 is better for Postern in rates, worse in latencies and CPU. Server CPU is" \
         "the CPU time of every process serving on that side (Postern: imapd, the limiter," \
         "PostgreSQL, NATS; Dovecot: all its processes) during the run, per operation: what" \
         "the hardware pays, and less disturbed by other work on the machine than the rates."
    echo
    echo "| point | figure | Postern | Dovecot | ratio |"
    echo "| --- | --- | --- | --- | --- |"
    row login ops_per_s "logins/s (connect, LOGIN, LOGOUT)"
    row login p50_us "p50 latency µs (whole cycle)"
    row login p99_us "p99 latency µs"
    row select ops_per_s "SELECTs/s (10,000 messages)"
    row select p50_us "p50 latency µs"
    row select cpu_us_per_op "server CPU µs per SELECT"
    row flags items_per_s "FETCH 1:* (FLAGS): messages/s"
    row flags p50_us "p50 latency µs (one FETCH of 10,000)"
    row flags cpu_us_per_op "server CPU µs per FETCH of 10,000"
    row body1k ops_per_s "FETCH n BODY.PEEK[] 1 KiB: messages/s"
    row body1k mb_per_s "MB/s"
    row body1k p99_us "p99 latency µs"
    row body1k cpu_us_per_op "server CPU µs per message"
    row body64k ops_per_s "FETCH n BODY.PEEK[] 64 KiB: messages/s"
    row body64k mb_per_s "MB/s"
    row body64k p99_us "p99 latency µs"
    row body64k cpu_us_per_op "server CPU µs per message"
    row envbs_cold p50_us "FETCH 1:100 (ENVELOPE BODYSTRUCTURE), first time: latency µs"
    row envbs ops_per_s "FETCH 1:100 (ENVELOPE BODYSTRUCTURE), cached: commands/s"
    row envbs p50_us "p50 latency µs"
    row search_body ops_per_s "SEARCH BODY word: searches/s"
    row search_body p50_us "p50 latency µs"
    row search_body cpu_us_per_op "server CPU µs per search"
    row search_flagged ops_per_s "SEARCH FLAGGED: searches/s"
    row search_flagged p50_us "p50 latency µs"
    row search_flagged cpu_us_per_op "server CPU µs per search"
    echo
    echo "Raw lines (point server run imap_load output):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$DIR/section.md"

publish_section imap
