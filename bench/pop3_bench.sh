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
POP3_PORT=$POSTERN_PORT POP3S_PORT=0 LISTEN_ADDRESS=127.0.0.1 POP3_HOSTNAME=bench.test \
    env $(bus_login pop3d) "$BIN/pop3d" 2>"$DIR/pop3d.log" &
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
postern_login=$(run "$POSTERN_PORT" login "$RUN_SECONDS")
dovecot_login=$(run "$DOVECOT_PORT" login "$RUN_SECONDS")
postern_retr=$(run "$POSTERN_PORT" retr "$RUN_SECONDS")
dovecot_retr=$(run "$DOVECOT_PORT" retr "$RUN_SECONDS")

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
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
         "Dovecot login processes: $DOVECOT_LOGIN mode"
    echo "# command: sh bench/pop3_bench.sh  (build/bench/pop3_load, source bench/pop3_load.c)"
    echo "postern login  $postern_login"
    echo "dovecot login  $dovecot_login"
    echo "postern retr   $postern_retr"
    echo "dovecot retr   $dovecot_retr"
    echo "ratio postern/dovecot logins: rate $(ratio "$(field "$postern_login" ops_per_s)" "$(field "$dovecot_login" ops_per_s)")," \
         "p50 latency $(ratio "$(field "$postern_login" p50_us)" "$(field "$dovecot_login" p50_us)")," \
         "p99 latency $(ratio "$(field "$postern_login" p99_us)" "$(field "$dovecot_login" p99_us)")"
    echo "ratio postern/dovecot RETR: messages/s $(ratio "$(field "$postern_retr" ops_per_s)" "$(field "$dovecot_retr" ops_per_s)")," \
         "MB/s $(ratio "$(field "$postern_retr" mb_per_s)" "$(field "$dovecot_retr" mb_per_s)")," \
         "p50 latency $(ratio "$(field "$postern_retr" p50_us)" "$(field "$dovecot_retr" p50_us)")"
} | tee bench/results/pop3.txt
