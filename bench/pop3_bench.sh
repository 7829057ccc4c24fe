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
DOVECOT_LOGIN=${DOVECOT_LOGIN:-security}
PASSWORD=Bench-pop3-pw-1
PYTHON=/usr/bin/python3

sh deploy/deps.sh bench # dovecot-core and dovecot-pop3d, when missing
for f in "$BIN/pop3d" "$BIN/limiter" "$BIN/mailctl" "$LOAD"; do
    [ -x "$f" ] || { echo "pop3_bench: $f is missing: build first (make)" >&2; exit 1; }
done
DOVECOT=$(command -v dovecot || echo /usr/sbin/dovecot)
DOVEADM=$(command -v doveadm || echo /usr/bin/doveadm)

DIR=$(mktemp -d /tmp/postern-pop3-bench.XXXXXX)
chmod 755 "$DIR"
pids=""
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [ -f "$DIR/dovecot/dovecot.conf" ] && "$DOVECOT" -c "$DIR/dovecot/dovecot.conf" stop 2>/dev/null
    sh deploy/localstack.sh stop "$DIR" >/dev/null 2>&1 || true
    if [ -n "${POP3_BENCH_KEEP:-}" ]; then echo "pop3_bench: kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PG_PORT=$(free_port)
NATS_PORT=$(free_port)
POSTERN_PORT=$(free_port)
DOVECOT_PORT=$(free_port)

wait_port() { # wait_port PORT NAME LOG
    i=0
    until "$PYTHON" -c "import socket, sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "pop3_bench: $2 did not start:" >&2; tail -20 "$3" >&2; exit 1; }
        sleep 0.1
    done
}

# --- Postern: PostgreSQL, NATS, the limiter, pop3d ---------------------------------------
sh deploy/localstack.sh start "$DIR" "$PG_PORT" "$NATS_PORT" >/dev/null
set -a
. "$DIR/postern.env"
set +a
"$BIN/mailctl" migrate >/dev/null
"$BIN/mailctl" domain add bench.test >/dev/null
i=0
while [ $i -lt "$CLIENTS" ]; do
    printf '%s\n' "$PASSWORD" | "$BIN/mailctl" user add "bench$i@bench.test" --password-stdin >/dev/null
    i=$((i + 1))
done
"$BIN/mailctl" config set auth.allow_plaintext on >/dev/null
"$BIN/mailctl" config set auth.failure_delay_ms 0 >/dev/null
"$BIN/limiter" 2>"$DIR/limiter.log" &
pids="$pids $!"
POP3_PORT=$POSTERN_PORT POP3S_PORT=0 LISTEN_ADDRESS=127.0.0.1 POP3_HOSTNAME=bench.test \
    "$BIN/pop3d" 2>"$DIR/pop3d.log" &
pids="$pids $!"

# --- Dovecot: a private instance under $DIR/dovecot -------------------------------------------
# As root, Dovecot's own users run the login and internal processes (as its documentation
# has it) and the mail processes run as nobody; otherwise everything runs as the caller.
if [ "$(id -u)" -eq 0 ]; then
    MAIL_UID=$(id -u nobody)
    MAIL_GID=$(id -g nobody)
    LOGIN_USER=dovenull
    INTERNAL_USER=dovecot
    CHROOT=login
else
    MAIL_UID=$(id -u)
    MAIL_GID=$(id -g)
    LOGIN_USER=$(id -un)
    INTERNAL_USER=$(id -un)
    CHROOT=
fi
D=$DIR/dovecot
mkdir -p "$D" "$DIR/mail"
chmod 755 "$DIR/mail"
cat >"$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/state
instance_name = postern-bench
log_path = $D/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = $LOGIN_USER
default_internal_user = $INTERNAL_USER
first_valid_uid = $MAIL_UID
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = $D/passwd
}
userdb {
  driver = passwd-file
  args = $D/passwd
}
service pop3-login {
  chroot = $CHROOT
$(if [ "$DOVECOT_LOGIN" = performance ]; then
    printf '  service_count = 0\n  process_min_avail = %s\n' "$(nproc)"
fi)
  inet_listener pop3 {
    port = $DOVECOT_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
EOF
: >"$D/passwd"
i=0
while [ $i -lt "$CLIENTS" ]; do
    hash=$("$DOVEADM" -c "$D/dovecot.conf" pw -s SCRAM-SHA-256 -p "$PASSWORD")
    printf 'bench%d@bench.test:%s:%s:%s::%s::\n' "$i" "$hash" "$MAIL_UID" "$MAIL_GID" \
        "$DIR/mail/bench$i@bench.test" >>"$D/passwd"
    i=$((i + 1))
done
chmod 640 "$D/passwd"
chgrp "$(id -gn "$INTERNAL_USER")" "$D/passwd" # the auth process reads it

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
        tail -5 "$DIR/pop3d.log" "$D/dovecot.log" >&2
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
