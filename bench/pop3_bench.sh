#!/bin/sh
# POP3 logins per second, RETR and TOP throughput of Postern's pop3d beside Dovecot's pop3d
# (Debian's dovecot-pop3d, a private instance on loopback), in the same run, with the same
# mailbox contents and the same client load (build/bench/pop3_load, source
# bench/pop3_load.c), reported as ratios Postern/Dovecot. Standalone; about two minutes.
#
#   sh bench/pop3_bench.sh                 (build first: make)
#   RUNS=3 CLIENTS=4 RUN_SECONDS=5 MESSAGES=20 POSTERN_BIN=build/bin sh bench/pop3_bench.sh
#
# Both servers: plaintext USER/PASS on loopback (no TLS, so the servers and not the TLS
# library are measured), passwords as PBKDF2-SHA-256 SCRAM secrets with 4096 iterations
# (Postern's RFC 5803 secrets, Dovecot's {SCRAM-SHA-256} passwd-file entries), one user per
# client (a maildrop takes one session at a time), MESSAGES messages of 2 to 128 kB each.
# Postern also runs its limiter (every login is checked) and PostgreSQL; Dovecot runs with
# its defaults otherwise: a login process per connection ("high-security mode"), or with
# DOVECOT_LOGIN=performance long-lived login processes ("high-performance mode", its docs).
# RETR and TOP read each user's messages over and over: both servers answer from memory, Dovecot
# from the kernel's page cache, Postern from its processes' cache of messages read (a first
# read of a message comes from PostgreSQL). Server CPU is the CPU time of every process
# serving on that side per operation.
# Each point is measured RUNS times (3), the two servers one after the other within a run.
# Results are printed and written to bench/results/pop3.txt and to the POP3 section of
# bench/results.md.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${POSTERN_BIN:-$ROOT/build/bin}
LOAD=${POP3_LOAD:-$ROOT/build/bench/pop3_load}
CLIENTS=${CLIENTS:-4}
RUNS=${RUNS:-3}
RUN_SECONDS=${RUN_SECONDS:-5}
MESSAGES=${MESSAGES:-20}
PASSWORD=Bench-pop3-pw-1
BENCH=pop3
NEEDS="$BIN/pop3d $BIN/limiter $BIN/mailctl $LOAD"
. bench/common.sh
bench_ports

USERS=""
i=0
while [ $i -lt "$CLIENTS" ]; do
    USERS="$USERS bench$i@bench.test"
    i=$((i + 1))
done

# --- Postern: PostgreSQL, NATS, the limiter, pop3d ---------------------------------------
postern_start $USERS
# As `make run` runs it: one worker process per CPU (WORKERS=auto, lib/svc/workers.h).
POP3_PORT=$POSTERN_PORT POP3S_PORT=0 LISTEN_ADDRESS=127.0.0.1 POP3_HOSTNAME=bench.test \
    WORKERS=${WORKERS:-auto} env $(bus_login pop3d) "$BIN/pop3d" 2>"$DIR/pop3d.log" &
pids="$pids $!"

# --- Dovecot: a private instance under $DIR/dovecot -------------------------------------------
dovecot_config $USERS

# --- the same mail for both ----------------------------------------------------------------
"$PYTHON" bench/pop3_seed.py "$DATABASE_URL" "$DIR/mail" "$CLIENTS" "$MESSAGES" "$MAIL_UID" "$MAIL_GID"

"$DOVECOT" -c "$D/dovecot.conf"
wait_port "$DOVECOT_PORT" dovecot "$D/dovecot.log"
wait_port "$POSTERN_PORT" pop3d "$DIR/pop3d.log"

run() { # run PORT MODE SECONDS
    "$LOAD" --port "$1" --mode "$2" --clients "$CLIENTS" --seconds "$3" \
        --user-format 'bench%d@bench.test' --password "$PASSWORD"
}
# Warm up both (caches, Dovecot's index files), then measure.
run "$POSTERN_PORT" retr 2 >/dev/null
run "$DOVECOT_PORT" retr 2 >/dev/null
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# measure POINT SIDE RUN: one run of pop3_load in mode POINT, its line into $RAW with the
# servers' CPU per operation (µs) added: every process serving on that side (Postern: pop3d,
# the limiter, PostgreSQL, NATS; Dovecot: its master and children).
RAW=$DIR/raw.txt
: >"$RAW"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
measure() {
    if [ "$2" = postern ]; then port=$POSTERN_PORT; procs=$(postern_server_pids $pids); else port=$DOVECOT_PORT; procs=$(dovecot_pids); fi
    c0=$(cpu_ms $procs)
    line=$(run "$port" "$1" "$RUN_SECONDS")
    c1=$(cpu_ms $procs)
    line="$1 $2 $3 $line cpu_us_per_op=$(awk -v a="$c0" -v b="$c1" -v n="$(field "$line" ops)" \
        'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1000 / n; else print 0 }')"
    echo "$line" >>"$RAW"
    if [ "$(field "$line" failures)" != 0 ]; then
        echo "pop3_bench: failures in: $line" >&2
        tail -n 5 "$DIR/pop3d.log" "$D/dovecot.log" >&2
    fi
}
r=1
while [ "$r" -le "$RUNS" ]; do
    for p in login retr top; do
        measure "$p" postern "$r"
        measure "$p" dovecot "$r"
    done
    r=$((r + 1))
done

# --- the report ------------------------------------------------------------------------------
row() { # row POINT FIELD LABEL (bench/common.sh's peer_row)
    peer_row "$1" "$1" "$2" "$3"
}
DOVECOT_VERSION=$("$DOVECOT" --version | cut -d' ' -f1)
report_facts # POSTERN_REV PG_VERSION CPU MEM (bench/common.sh)
{
    echo "## POP3: Postern pop3d vs Dovecot $DOVECOT_VERSION pop3"
    echo
    echo "Same run, same load, the same messages. $(date -u +%Y-%m-%dT%H:%M:%SZ)."
    echo
    echo "- Machine: $(nproc) cores ($CPU), $MEM, Linux $(uname -r); load average" \
         "$LOAD_BEFORE before the measurements, $(cut -d' ' -f1-3 /proc/loadavg) after."
    echo "- Versions: Postern $POSTERN_REV (pop3d from $BIN, WORKERS=${WORKERS:-auto} as" \
         "\`make run\` runs it), Dovecot $DOVECOT_VERSION (maildir, login processes in" \
         "$DOVECOT_LOGIN mode), PostgreSQL $PG_VERSION."
    echo "- Command: \`sh bench/pop3_bench.sh\` (also run by \`make bench\`, alone:" \
         "\`sh bench/run.sh pop3\`); load generator build/bench/pop3_load (bench/pop3_load.c)," \
         "mail from bench/pop3_seed.py."
    echo "- Load: $RUNS runs of ${RUN_SECONDS}s per point and server, $CLIENTS clients, one" \
         "user each with $MESSAGES messages of 2 to 128 kB; plaintext USER/PASS on loopback," \
         "no TLS. login: connect, USER, PASS, QUIT; retr: RETR of each message in turn in one" \
         "session; top: TOP n 10 (the header and 10 lines of the body) likewise."
    echo "- Figures: median over the runs (min–max in brackets). Ratio = Postern / Dovecot:" \
         "above 1 is better for Postern in rates, worse in latencies and CPU. Server CPU:" \
         "every process serving on that side (Postern: pop3d, the limiter, PostgreSQL, NATS;" \
         "Dovecot: all its processes) during the run, per operation."
    echo
    echo "| point | figure | Postern | Dovecot | ratio |"
    echo "| --- | --- | --- | --- | --- |"
    row login ops_per_s "logins/s (connect, USER, PASS, QUIT)"
    row login p50_us "p50 latency µs (connect to PASS's reply)"
    row login p99_us "p99 latency µs"
    row login cpu_us_per_op "server CPU µs per login"
    row retr ops_per_s "RETR: messages/s"
    row retr mb_per_s "MB/s"
    row retr p50_us "p50 latency µs"
    row retr cpu_us_per_op "server CPU µs per message"
    row top ops_per_s "TOP n 10: commands/s"
    row top p50_us "p50 latency µs"
    row top cpu_us_per_op "server CPU µs per command"
    echo
    echo "Raw lines (point server run pop3_load output):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$DIR/section.md"
publish_section pop3
