#!/bin/sh
# POP3 logins per second and RETR throughput of Postern's pop3d beside Dovecot's pop3d
# (Debian's dovecot-pop3d, a private instance on loopback), in the same run, with the same
# mailbox contents and the same client load (build/bench/pop3_load, source
# bench/pop3_load.c), reported as ratios Postern/Dovecot. Standalone; about two minutes.
#
#   sh bench/pop3_bench.sh                 (build first: make)
#   CLIENTS=4 RUN_SECONDS=15 MESSAGES=20 POSTERN_BIN=build/bin sh bench/pop3_bench.sh
#
# Both servers: plaintext USER/PASS on loopback (no TLS, so the servers and not the TLS
# library are measured), passwords as PBKDF2-SHA-256 SCRAM secrets with 4096 iterations
# (Postern's RFC 5803 secrets, Dovecot's {SCRAM-SHA-256} passwd-file entries), one user per
# client (a maildrop takes one session at a time), MESSAGES messages of 2 to 128 kB each.
# Postern also runs its limiter (every login is checked) and PostgreSQL; Dovecot runs with
# its defaults otherwise: a login process per connection ("high-security mode"), or with
# DOVECOT_LOGIN=performance long-lived login processes ("high-performance mode", its docs).
# RETR reads each user's messages over and over: both servers answer from memory, Dovecot
# from the kernel's page cache, Postern from its processes' cache of messages read (a first
# read of a message comes from PostgreSQL). Server CPU is the CPU time of every process
# serving on that side per operation.
# Results are printed and written to bench/results/pop3.txt.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${POSTERN_BIN:-$ROOT/build/bin}
LOAD=${POP3_LOAD:-$ROOT/build/bench/pop3_load}
CLIENTS=${CLIENTS:-4}
RUN_SECONDS=${RUN_SECONDS:-15}
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
# measure SIDE MODE: one run, its line with the servers' CPU per operation (µs) added: every
# process serving on that side (Postern: pop3d, the limiter, PostgreSQL, NATS; Dovecot: its
# master and children).
measure() {
    if [ "$1" = postern ]; then port=$POSTERN_PORT; procs=$(postern_server_pids $pids); else port=$DOVECOT_PORT; procs=$(dovecot_pids); fi
    c0=$(cpu_ms $procs)
    line=$(run "$port" "$2" "$RUN_SECONDS")
    c1=$(cpu_ms $procs)
    echo "$line cpu_us_per_op=$(awk -v a="$c0" -v b="$c1" -v n="$(field "$line" ops)" \
        'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1000 / n; else print 0 }')"
}
postern_login=$(measure postern login)
dovecot_login=$(measure dovecot login)
postern_retr=$(measure postern retr)
dovecot_retr=$(measure dovecot retr)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for line in "$postern_login" "$dovecot_login" "$postern_retr" "$dovecot_retr"; do
    if [ "$(field "$line" failures)" != 0 ]; then
        echo "pop3_bench: failures in: $line" >&2
        tail -n 5 "$DIR/pop3d.log" "$D/dovecot.log" >&2
    fi
done

mkdir -p bench/results
{
    echo "# POP3: Postern pop3d vs Dovecot $("$DOVECOT" --version | cut -d' ' -f1) pop3d (same run, same load)"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores; $CLIENTS clients, ${RUN_SECONDS}s per run," \
         "$MESSAGES messages of 2-128 kB per user; plaintext USER/PASS on loopback;" \
         "Dovecot login processes: $DOVECOT_LOGIN mode; pop3d WORKERS=${WORKERS:-auto} (as \`make run\`)"
    echo "# command: sh bench/pop3_bench.sh  (build/bench/pop3_load, source bench/pop3_load.c)"
    echo "postern login  $postern_login"
    echo "dovecot login  $dovecot_login"
    echo "postern retr   $postern_retr"
    echo "dovecot retr   $dovecot_retr"
    echo "ratio postern/dovecot logins: rate $(ratio "$(field "$postern_login" ops_per_s)" "$(field "$dovecot_login" ops_per_s)")," \
         "p50 latency $(ratio "$(field "$postern_login" p50_us)" "$(field "$dovecot_login" p50_us)")," \
         "p99 latency $(ratio "$(field "$postern_login" p99_us)" "$(field "$dovecot_login" p99_us)")," \
         "server CPU per login $(ratio "$(field "$postern_login" cpu_us_per_op)" "$(field "$dovecot_login" cpu_us_per_op)")"
    echo "ratio postern/dovecot RETR: messages/s $(ratio "$(field "$postern_retr" ops_per_s)" "$(field "$dovecot_retr" ops_per_s)")," \
         "MB/s $(ratio "$(field "$postern_retr" mb_per_s)" "$(field "$dovecot_retr" mb_per_s)")," \
         "p50 latency $(ratio "$(field "$postern_retr" p50_us)" "$(field "$dovecot_retr" p50_us)")," \
         "server CPU per message $(ratio "$(field "$postern_retr" cpu_us_per_op)" "$(field "$dovecot_retr" cpu_us_per_op)")"
} | tee bench/results/pop3.txt
