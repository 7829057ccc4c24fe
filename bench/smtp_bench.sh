#!/bin/sh
# SMTP: how fast Postern's smtpd takes mail into a mailbox, beside Postfix (Debian's postfix,
# a private instance on loopback delivering to maildirs with virtual(8), with Dovecot's auth
# for SASL), in the same run, under the same client load, reported as ratios Postern/Postfix.
# Standalone; about five minutes with the defaults. Needs root (Postfix's master and
# Dovecot run as root).
#
#   sh bench/smtp_bench.sh                 (build first: make)
#   SMTP_BENCH_RUNS=3 SMTP_BENCH_N=400 SMTP_BENCH_SUB_SESSIONS=100 POSTERN_BIN=build/bin \
#       sh bench/smtp_bench.sh
#
# Points, each measured SMTP_BENCH_RUNS times (3), Postern then Postfix within a run; every
# message has one recipient, inbound@bench.test, a mailbox on both sides:
#   mx_1k_s1    Postfix's smtp-source on the MX port (no TLS, no AUTH), 1 KiB of body
#               (its -l) per message, a new connection per message, 1 session at a time:
#               N/4 messages (N = SMTP_BENCH_N, 2000)
#   mx_1k_s16   the same, 16 sessions at once: N messages
#   mx_1k_s64   64 sessions at once: N messages
#   mx_64k_s16  64 KiB of body, 16 sessions: N/4 messages
#   mx_1m_s16   1 MiB of body, 16 sessions: N/20 messages
#   sub_1       submission: build/bench/smtp_load (bench/smtp_load.c), SMTP_BENCH_SUB_CLIENTS
#               (16) sessions at once, each EHLO, STARTTLS (a full TLS handshake), EHLO,
#               AUTH PLAIN as submit@bench.test, one message of 1 KiB, QUIT:
#               SMTP_BENCH_SUB_SESSIONS (400) sessions
#   sub_5       the same with 5 messages per session: SMTP_BENCH_SUB_SESSIONS/2 sessions
# The clock runs from the client's start until every message is in the mailbox: for Postern
# until the client has its last 250 (smtpd answers after PostgreSQL's commit); for Postfix
# until its queue is empty and the maildir holds every message (smtpd answers once cleanup
# has fsynced the queue file; virtual(8) then delivers, fsyncing each maildir file).
# CPU time per message, summed over every server process of a side, from /proc (exited
# children through their parent's cutime/cstime): Postern's smtpd, limiter, nats-server and
# PostgreSQL (the postmaster and its children); Postfix's master and its children, and
# Dovecot's (its auth serves Postfix's SASL; idle in the MX points).
# With two cores or more, the servers run on CPU 0 and the clients (and this script's
# helpers) on CPU 1 (SMTP_BENCH_PIN=no: no pinning).
# SMTP_BENCH_POINTS="mx_1k_s16 sub_1" measures only those points (the raw lines are printed,
# the results files stay as they are). SMTP_BENCH_PERF=DIR records `perf record -a -g` of the
# whole machine into DIR/<point>.<run>.data while Postern serves each point (for finding
# where its time goes; the raw lines only then).
# Results are printed and written to bench/results/smtp.txt and to the SMTP section of
# bench/results.md.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${POSTERN_BIN:-$ROOT/build/bin}
LOAD=${SMTP_LOAD:-$ROOT/build/bench/smtp_load}
RUNS=${SMTP_BENCH_RUNS:-3}
N=${SMTP_BENCH_N:-2000}
SUB_CLIENTS=${SMTP_BENCH_SUB_CLIENTS:-16}
SUB_SESSIONS=${SMTP_BENCH_SUB_SESSIONS:-400}
WAIT_TIMEOUT=${SMTP_BENCH_TIMEOUT:-120} # seconds one measurement may take
PASSWORD=Bench-smtp-pw-1
RCPT=inbound@bench.test
SUBMITTER=submit@bench.test
SENDER=sender@client.bench.test
BENCH=smtp
NEEDS="$BIN/smtpd $BIN/limiter $BIN/mailctl $LOAD"
[ "$(id -u)" -eq 0 ] || { echo "smtp_bench: run as root (Postfix's master runs as root)" >&2; exit 1; }
. bench/common.sh
command -v smtp-source >/dev/null || { echo "smtp_bench: smtp-source is missing (postfix)" >&2; exit 1; }
PG_PORT=$(free_port)
NATS_PORT=$(free_port)
POSTERN_MX=$(free_port)
POSTERN_SUB=$(free_port)
PF_MX=$(free_port)
PF_SUB=$(free_port)
TOOL="$PYTHON $DIR/smtp_tool.py"

# --- pinning: servers on CPU 0 (everything this shell starts from now on), clients on CPU 1
CORES=$(nproc)
CLIENT=
PINNING="not pinned"
if [ "${SMTP_BENCH_PIN:-yes}" != no ] && [ "$CORES" -ge 2 ] && taskset -p -c 0 $$ >/dev/null 2>&1; then
    CLIENT="taskset -c 1"
    PINNING="servers on CPU 0, the clients and the bench's helpers on CPU 1 (taskset)"
fi

# --- the helper: CPU times, the wait for Postfix's deliveries ---------------------------------
cat >"$DIR/smtp_tool.py" <<'EOF'
"""smtp_bench.sh's helper.
  cpu PID...                    CPU ms of the PIDs and their children: live ones from their
                                /proc/PID/stat (utime+stime+cutime+cstime), exited ones
                                through their parent's cutime+cstime
  files DIR                     the number of files in DIR
  delivered MAILDIR N TIMEOUT SPOOL
                                until Postfix's queue under SPOOL is empty and MAILDIR/new
                                holds N files or more; prints the time (epoch seconds). Fails
                                at once when a message is deferred."""
import os
import sys
import time

QUEUES = ["maildrop", "incoming", "active", "deferred", "hold"]


def stat(pid):
    """(ppid, own ticks, children's ticks) of pid, or None when it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cpu(pids):
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(name)
            if st:
                procs[int(name)] = st
    ticks = 0
    for pid in pids:
        if pid not in procs:
            sys.exit("cpu: no process %d" % pid)
        ticks += procs[pid][1] + procs[pid][2]
        ticks += sum(st[1] + st[2] for p, st in procs.items() if st[0] == pid and p not in pids)
    print("%.0f" % (ticks * 1000.0 / os.sysconf("SC_CLK_TCK")))


def files(d):
    total = 0
    for _, _, names in os.walk(d):
        total += len(names)
    return total


def delivered(maildir, n, timeout, spool):
    deadline = time.time() + timeout
    while True:
        if files(os.path.join(spool, "deferred")):
            sys.exit("delivered: Postfix deferred a message (see its maillog)")
        queued = sum(files(os.path.join(spool, q)) for q in QUEUES)
        have = len(os.listdir(os.path.join(maildir, "new")))
        if queued == 0 and have >= n:
            break
        if time.time() > deadline:
            sys.exit("delivered: %d of %d in the maildir, %d queued after %ds"
                     % (have, n, queued, timeout))
        time.sleep(0.005)
    print("%.6f" % time.time())


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "cpu":
    cpu([int(a) for a in args])
elif cmd == "files":
    print(files(args[0]))
elif cmd == "delivered":
    delivered(args[0], int(args[1]), int(args[2]), args[3])
else:
    sys.exit("smtp_tool: unknown command " + cmd)
EOF

# --- the certificate both sides present -------------------------------------------------------
CERT=$DIR/tls/cert.pem
KEY=$DIR/tls/key.pem
mkdir -p "$DIR/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$KEY" -out "$CERT" \
    -subj /CN=mail.bench.test 2>/dev/null

# --- Postern: PostgreSQL, NATS, the limiter, smtpd --------------------------------------------
postern_stack
for u in "$RCPT" "$SUBMITTER"; do
    printf '%s\n' "$PASSWORD" | "$BIN/mailctl" user add "$u" --password-stdin >/dev/null
done
# Limits far above the load: every submitted message gets the limiter's full check, allowed.
"$BIN/mailctl" hamr set --system --max 1000000 --interval 60 >/dev/null
env $(bus_login limiter) "$BIN/limiter" 2>"$DIR/limiter.log" &
LIMITER_PID=$!
pids="$pids $LIMITER_PID"
# smtpd asks the limiter for the block list as it starts: the limiter answers first.
i=0
until grep -qs 'msg="limiter replica leads' "$DIR/limiter.log"; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "smtp_bench: the limiter did not start:" >&2; tail -n 20 "$DIR/limiter.log" >&2; exit 1; }
    sleep 0.1
done
env $(bus_login smtpd) TLS_CERT="$CERT" TLS_KEY="$KEY" SMTP_PORT="$POSTERN_MX" \
    SUBMISSION_PORT="$POSTERN_SUB" SMTPS_PORT=0 LISTEN_ADDRESS=127.0.0.1 \
    SMTP_HOSTNAME=postern.bench.test WORKERS=${WORKERS:-auto} "$BIN/smtpd" 2>"$DIR/smtpd.log" &
SMTPD_PID=$!
pids="$pids $SMTPD_PID"
PG_PID=$(head -1 "$DIR/pg/postmaster.pid")
NATS_PID=$(cat "$DIR/nats.pid")
POSTERN_PIDS="$SMTPD_PID $LIMITER_PID $NATS_PID $PG_PID"

# --- Postfix: a private instance under $DIR/postfix, mail under $DIR/pfmail ------------------
PF=$DIR/postfix
MAILDIR=$DIR/pfmail/bench.test/inbound
mkdir -p "$MAILDIR/new" "$MAILDIR/cur" "$MAILDIR/tmp"
chown -R "$(id -u nobody):$(id -g nobody)" "$DIR/pfmail"
postfix_main_cf "$PF"
echo "$RCPT bench.test/inbound/" >"$PF/etc/vmailbox"
cat >>"$PF/etc/main.cf" <<EOF
# bench.test's mailboxes: maildirs written by virtual(8) as nobody.
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $DIR/pfmail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
smtpd_tls_cert_file = $CERT
smtpd_tls_key_file = $KEY
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
biff = no
EOF
# Only the services this needs; no chroot; the MX smtpd and the submission smtpd (STARTTLS
# required, AUTH through Dovecot) on free loopback ports, nothing on ports 25 and 587.
cat >"$PF/etc/master.cf" <<EOF
127.0.0.1:$PF_MX inet n - n - - smtpd
127.0.0.1:$PF_SUB inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
postfix_stop() {
    postfix -c "$PF/etc" stop >/dev/null 2>&1 || return 0
    i=0
    while postfix -c "$PF/etc" status >/dev/null 2>&1 && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}
at_exit postfix_stop
postfix -c "$PF/etc" check
postfix -c "$PF/etc" start >/dev/null 2>&1 || { tail -n 20 "$PF/maillog" >&2; exit 1; }
wait_port "$PF_MX" postfix "$PF/maillog"
wait_port "$PF_SUB" postfix "$PF/maillog"
PF_MASTER=$(tr -d ' ' <"$PF/spool/pid/master.pid")

# --- Dovecot: its auth only, for Postfix's SASL (the passwd-file of dovecot_config) -----------
# dovecot_config writes an IMAP configuration (on DOVECOT_PORT): here no protocol is served,
# only the auth socket in Postfix's queue directory.
BENCH=imap
DOVECOT_PORT=$(free_port)
dovecot_config "$SUBMITTER"
BENCH=smtp
sed -i 's/^protocols = .*/protocols = none/' "$D/dovecot.conf"
cat >>"$D/dovecot.conf" <<EOF
service auth {
  unix_listener $PF/spool/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
"$DOVECOT" -c "$D/dovecot.conf"
i=0
until [ -S "$PF/spool/private/auth" ] && [ -s "$D/run/master.pid" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "smtp_bench: Dovecot's auth did not start" >&2; tail -n 20 "$D/dovecot.log" >&2; exit 1; }
    sleep 0.1
done
DOVECOT_PID=$(cat "$D/run/master.pid")
POSTFIX_PIDS="$PF_MASTER $DOVECOT_PID"

wait_port "$POSTERN_MX" smtpd "$DIR/smtpd.log"
wait_port "$POSTERN_SUB" smtpd "$DIR/smtpd.log"

# --- the points -------------------------------------------------------------------------------
# point POINT: KIND (mx or sub), SIZE (bytes), SESSIONS (at once), COUNT (messages; for sub:
# sessions in all), PER (messages per session, sub).
point() {
    PER=1
    case $1 in
    mx_1k_s1) KIND=mx SIZE=1024 SESSIONS=1 COUNT=$((N / 4)) ;;
    mx_1k_s16) KIND=mx SIZE=1024 SESSIONS=16 COUNT=$N ;;
    mx_1k_s64) KIND=mx SIZE=1024 SESSIONS=64 COUNT=$N ;;
    mx_64k_s16) KIND=mx SIZE=65536 SESSIONS=16 COUNT=$((N / 4)) ;;
    mx_1m_s16) KIND=mx SIZE=1048576 SESSIONS=16 COUNT=$((N / 20)) ;;
    sub_1) KIND=sub SIZE=1024 SESSIONS=$SUB_CLIENTS COUNT=$SUB_SESSIONS ;;
    sub_5) KIND=sub SIZE=1024 SESSIONS=$SUB_CLIENTS COUNT=$((SUB_SESSIONS / 2)) PER=5 ;;
    *) echo "smtp_bench: unknown point $1" >&2; exit 2 ;;
    esac
    [ "${WARMUP:-0}" -eq 0 ] || COUNT=$((COUNT / 4)) # a warm-up: a quarter
    [ "$COUNT" -gt 0 ] || COUNT=1
}
ports() { # ports SIDE: MX_PORT SUB_PORT
    if [ "$1" = postern ]; then MX_PORT=$POSTERN_MX SUB_PORT=$POSTERN_SUB; else MX_PORT=$PF_MX SUB_PORT=$PF_SUB; fi
}
source_cmd() { # source_cmd PORT: smtp-source for the point
    echo "smtp-source -4 -s $SESSIONS -m $COUNT -l $SIZE -M client.bench.test -f $SENDER -t $RCPT 127.0.0.1:$1"
}
load_cmd() { # load_cmd PORT: smtp_load for the point
    echo "$LOAD --port $1 --clients $SESSIONS --sessions $COUNT --per-session $PER --size $SIZE" \
         "--user $SUBMITTER --password $PASSWORD --rcpt $RCPT"
}
now() { date +%s.%N; }
# CHILDREN_MS: the CPU ms of this shell's finished children so far (the clients run as its
# children; not in a subshell, whose children are its own).
children_cpu() {
    times >"$DIR/times"
    CHILDREN_MS=$(awk 'NR == 2 { split($1 " " $2, t, /[ms ]+/)
        printf "%.0f", (t[1] + t[3]) * 60000 + (t[2] + t[4]) * 1000 }' "$DIR/times")
}
stored() { # messages in inbound@bench.test's INBOX on SIDE
    if [ "$1" = postern ]; then
        psql -tA "$DATABASE_URL" -c "SELECT b.uidnext - 1 FROM mailboxes b JOIN users u
            ON u.id = b.user_id WHERE u.address = '$RCPT' AND b.name = 'INBOX'"
    else
        $TOOL files "$MAILDIR/new"
    fi
}
server_cpu() { # server_cpu SIDE: CPU ms of its processes so far; fails when one is gone
    if [ "$1" = postern ]; then set -- "$1" $POSTERN_PIDS; else set -- "$1" $POSTFIX_PIDS; fi
    side=$1
    shift
    $CLIENT $TOOL cpu "$@" || { echo "smtp_bench: a server process of $side is gone" >&2; logs "$side"; exit 1; }
}
logs() { # the ends of SIDE's logs, on stderr
    if [ "$1" = postern ]; then
        tail -n 5 "$DIR/smtpd.log" "$DIR/limiter.log" >&2 || true
    else
        tail -n 5 "$PF/maillog" "$D/dovecot.log" >&2 || true
    fi
}

RAW=$DIR/raw.txt
: >"$RAW"
PROBLEMS=0
# measure POINT SIDE RUN: one measurement, its raw line into $RAW. WARMUP=1: nothing recorded.
measure() {
    point "$1"
    ports "$2"
    base=$(stored "$2")
    cpu0=$(server_cpu "$2")
    failed=0
    children_cpu
    ccpu0=$CHILDREN_MS
    t0=$(now)
    WRAP=
    if [ -n "${SMTP_BENCH_PERF:-}" ] && [ "$2" = postern ] && [ "${WARMUP:-0}" -eq 0 ]; then
        mkdir -p "$SMTP_BENCH_PERF"
        WRAP="perf record -q -a -g -o $SMTP_BENCH_PERF/$1.$3.data --"
    fi
    if [ "$KIND" = mx ]; then
        $CLIENT $WRAP timeout "$WAIT_TIMEOUT" $(source_cmd "$MX_PORT") >"$DIR/client.out" 2>"$DIR/client.err" || failed=1
        sent=$COUNT
        extra=""
    else
        $CLIENT $WRAP timeout "$WAIT_TIMEOUT" $(load_cmd "$SUB_PORT") >"$DIR/client.out" 2>"$DIR/client.err" || failed=1
        sent=$(sed -n 's/.* messages=\([0-9]*\) .*/\1/p' "$DIR/client.out")
        [ -n "$sent" ] || { sent=0; failed=1; }
        grep -q ' failures=0 ' "$DIR/client.out" || failed=1
        extra=" $(sed 's/\([a-z0-9_]*\)=/load_\1=/g' "$DIR/client.out")"
    fi
    t1=$(now)
    children_cpu
    ccpu1=$CHILDREN_MS
    tend=$t1
    if [ "$2" = postfix ]; then
        # Every message accepted must reach the maildir (after a failure: what was accepted).
        want=$((base + sent))
        [ "$failed" -eq 0 ] || want=0
        if ! tend=$($CLIENT $TOOL delivered "$MAILDIR" "$want" "$WAIT_TIMEOUT" "$PF/spool"); then
            logs postfix
            exit 1
        fi
    fi
    cpu1=$(server_cpu "$2")
    got=$(($(stored "$2") - base))
    if [ "$2" = postfix ]; then # the maildir stays small: the next count starts from 0
        find "$MAILDIR/new" -type f -delete
    fi
    if [ "$failed" -ne 0 ] || [ "$got" -ne "$((COUNT * PER))" ]; then
        echo "smtp_bench: $1 on $2 (run $3): $got of $((COUNT * PER)) messages stored;" \
             "the client said:" >&2
        tail -n 3 "$DIR/client.err" "$DIR/client.out" >&2 || true
        logs "$2"
        PROBLEMS=$((PROBLEMS + 1))
    fi
    [ "${WARMUP:-0}" -eq 0 ] || return 0
    awk -v point="$1" -v side="$2" -v run="$3" -v size="$SIZE" -v sess="$SESSIONS" \
        -v n="$((COUNT * PER))" -v got="$got" -v failed="$failed" -v t0="$t0" -v t1="$t1" \
        -v te="$tend" -v cpu="$((cpu1 - cpu0))" -v ccpu="$((ccpu1 - ccpu0))" -v extra="$extra" '
        BEGIN {
            printf "%s %s %s size=%d sessions=%d messages=%d stored=%d client_failed=%d" \
                   " seconds=%.3f msgs_per_s=%.1f smtp_seconds=%.3f smtp_msgs_per_s=%.1f" \
                   " cpu_ms=%d cpu_ms_per_msg=%.3f client_cpu_ms=%d client_cpu_pct=%.0f%s\n",
                   point, side, run, size, sess, n, got, failed, te - t0, got / (te - t0),
                   t1 - t0, got / (t1 - t0), cpu, got ? cpu / got : 0, ccpu,
                   100 * ccpu / 1000 / (t1 - t0), extra
        }' | tee -a "$RAW"
}

# Warm up both (Postfix spawns its smtpd processes and creates the maildir's files, the
# limiter answers, PostgreSQL's caches fill); the limiter may take a moment to start.
i=0
until $CLIENT "$LOAD" --port "$POSTERN_SUB" --clients 1 --sessions 1 --user "$SUBMITTER" \
        --password "$PASSWORD" --rcpt "$RCPT" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 50 ] || { echo "smtp_bench: no submission through Postern:" >&2; logs postern; exit 1; }
    sleep 0.2
done
WARMUP=1
for side in postern postfix; do
    measure mx_1k_s64 "$side" 0 >/dev/null
    measure sub_1 "$side" 0 >/dev/null
done
WARMUP=0

ALL_POINTS="mx_1k_s1 mx_1k_s16 mx_1k_s64 mx_64k_s16 mx_1m_s16 sub_1 sub_5"
POINTS=${SMTP_BENCH_POINTS:-$ALL_POINTS}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
r=1
while [ "$r" -le "$RUNS" ]; do
    for p in $POINTS; do
        measure "$p" postern "$r"
        measure "$p" postfix "$r"
    done
    r=$((r + 1))
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))
[ -n "${SMTP_BENCH_RAW:-}" ] && cp "$RAW" "$SMTP_BENCH_RAW"
if [ "$POINTS" != "$ALL_POINTS" ] || [ -n "${SMTP_BENCH_PERF:-}" ]; then
    # A partial run: the raw lines only (printed above), the results files stay as they are.
    [ "$PROBLEMS" -eq 0 ] || { echo "smtp_bench: $PROBLEMS measurements had problems (above)" >&2; exit 1; }
    exit 0
fi

# --- the report -------------------------------------------------------------------------------
# row POINT FIELD LABEL: FIELD over the runs, Postern's and Postfix's, as a table row
# (bench/common.sh's peer_row).
row() {
    peer_row "$1" "$1" "$2" "$3"
}
field_of() { # field_of POINT SIDE FIELD: the field in the point's first raw line of SIDE
    awk -v point="$1" -v side="$2" -v field="$3" '
        $1 == point && $2 == side { for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == field) { print kv[2]; exit } } }' "$RAW"
}

PF_VERSION=$(postconf -d -h mail_version)
DOVECOT_VERSION=$("$DOVECOT" --version | cut -d' ' -f1)
report_facts # POSTERN_REV PG_VERSION CPU MEM (bench/common.sh)
PG_DURABILITY=$(psql -tA "$DATABASE_URL" -c "SELECT string_agg(name || ' = ' || setting, ', ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes')")
NATS_VERSION=$(nats-server --version 2>/dev/null | sed 's/^nats-server: //')
OPENSSL_VERSION=$(openssl version | cut -d' ' -f1-2)
WHEN=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CLIENT_MAX=$(awk '{ for (i = 4; i <= NF; i++) if ($i ~ /^client_cpu_pct=/) { split($i, kv, "=")
    if (kv[2] + 0 > m) m = kv[2] + 0 } } END { print m + 0 }' "$RAW")
point mx_1k_s16
SOURCE_EXAMPLE=$(source_cmd PORT)
point sub_5
LOAD_EXAMPLE=$(load_cmd PORT | sed "s|$ROOT/||; s|$PASSWORD|PW|")

{
    echo "## SMTP: Postern smtpd vs Postfix $PF_VERSION (Dovecot $DOVECOT_VERSION SASL), into a mailbox"
    echo
    echo "Same run, same clients, one mailbox on each side. $WHEN."
    echo
    echo "- Machine: $CORES cores ($CPU), $MEM, Linux $(uname -r); load average" \
         "$LOAD_BEFORE before the measurements, $LOAD_AFTER after (anything above the" \
         "bench's own load is other work on the machine and widens the spread). Pinning:" \
         "$PINNING."
    echo "- Versions: Postern $POSTERN_REV (smtpd and limiter from $BIN), Postfix $PF_VERSION" \
         "(Debian), Dovecot $DOVECOT_VERSION (auth only), PostgreSQL $PG_VERSION ($PG_DURABILITY)," \
         "nats-server $NATS_VERSION, $OPENSSL_VERSION."
    echo "- Command: \`sh bench/smtp_bench.sh\` (also run by \`make bench\`, alone:" \
         "\`sh bench/run.sh smtp\`); SMTP_BENCH_RUNS=$RUNS SMTP_BENCH_N=$N" \
         "SMTP_BENCH_SUB_CLIENTS=$SUB_CLIENTS SMTP_BENCH_SUB_SESSIONS=$SUB_SESSIONS;" \
         "$RUNS runs in ${ELAPSED}s."
    echo "- MX points (mx_*): Postfix's smtp-source, e.g. \`$SOURCE_EXAMPLE\`: -l is the body" \
         "(smtp-source adds its headers), a new connection for every message, no pipelining;" \
         "-s sessions at once. No TLS, no AUTH; one recipient, inbound@bench.test, a mailbox" \
         "on both sides. Messages per point: $((N / 4)) (1 KiB, 1 session), $N (1 KiB, 16 and" \
         "64 sessions), $((N / 4)) (64 KiB), $((N / 20)) (1 MiB)."
    echo "- Submission points (sub_*): build/bench/smtp_load (bench/smtp_load.c), e.g." \
         "\`$LOAD_EXAMPLE\`: $SUB_CLIENTS sessions at once, each EHLO, STARTTLS with a full" \
         "handshake (no resumption; $(field_of sub_1 postern load_tls) with Postern," \
         "$(field_of sub_1 postfix load_tls) with Postfix; the same RSA-2048 certificate)," \
         "EHLO, AUTH PLAIN as submit@bench.test (a PBKDF2-SHA-256 SCRAM secret of 4096" \
         "iterations on both sides), then 1 (sub_1, $SUB_SESSIONS sessions) or 5 (sub_5," \
         "$((SUB_SESSIONS / 2)) sessions) messages of 1024 bytes to inbound@bench.test, QUIT."
    echo "- Postern: PostgreSQL with its defaults (durable: smtpd answers 250 after the commit)," \
         "nats-server with JetStream, the limiter (every AUTH and every submitted message" \
         "checked; HAMR limit raised to 1,000,000 a minute so all are allowed), smtpd with" \
         "its defaults (a pool of 4 database connections, 3 of them for deliveries: messages that wait for one share the next transaction, group commit; WORKERS=auto as \`make run\` runs it," \
         "one process per CPU it may use: one, as the servers are pinned), every service with its own bus" \
         "login. Clock: the client's run (its last 250 means all is committed). CPU: smtpd," \
         "limiter, nats-server, the postmaster and its children."
    echo "- Postfix: a private instance (\`postfix -c DIR start\`, no chroot, its defaults" \
         "otherwise: Postfix 3.7 has no switch that turns its fsyncs off); cleanup fsyncs the" \
         "queue file before smtpd's 250, virtual(8) delivers to a maildir (fsync, then" \
         "a link into new/). The submission smtpd requires STARTTLS and authenticates through" \
         "Dovecot's auth socket (passwd-file). Clock: from the client's start until the queue" \
         "is empty and every message is in the maildir (smtp_seconds: the client's run" \
         "alone, i.e. queued, not delivered). CPU: Postfix's master and its children (smtpd," \
         "cleanup, qmgr, virtual, trivial-rewrite, tlsmgr, postlogd …, exited ones through" \
         "the master's cutime+cstime) and Dovecot's master and children."
    if [ "$CLIENT_MAX" -lt 80 ]; then verdict="the servers, not the clients, set the pace"
    else verdict="a client may have set the pace of some points"; fi
    echo "- Clients: at most $CLIENT_MAX% of one core while they ran (client_cpu_pct in the" \
         "raw lines: the client's CPU time over its run), so $verdict."
    if [ "$PROBLEMS" -ne 0 ]; then
        echo "- Problems: $PROBLEMS measurements lost messages or saw a client fail" \
             "(client_failed, stored against messages in the raw lines); their figures count" \
             "what was stored."
    fi
    echo "- Figures: median over the runs (min–max in brackets). Ratio = Postern / Postfix:" \
         "above 1 means Postern is faster in messages/s, uses more CPU in ms/message," \
         "waits longer in latencies."
    echo
    echo "| point | figure | Postern | Postfix | ratio |"
    echo "| --- | --- | --- | --- | --- |"
    for p in mx_1k_s1 mx_1k_s16 mx_1k_s64 mx_64k_s16 mx_1m_s16; do
        point "$p"
        case $SIZE in 1024) what="1 KiB" ;; 65536) what="64 KiB" ;; *) what="1 MiB" ;; esac
        if [ "$SESSIONS" -eq 1 ]; then at="1 session"; else at="$SESSIONS sessions"; fi
        row "$p" msgs_per_s "$what, $at: messages/s into the mailbox"
        row "$p" smtp_msgs_per_s "messages/s accepted (client's time; Postfix: queued)"
        row "$p" cpu_ms_per_msg "CPU ms per message, all server processes"
    done
    for p in sub_1 sub_5; do
        point "$p"
        row "$p" msgs_per_s "STARTTLS + AUTH, $PER per session: messages/s into the mailbox"
        row "$p" load_sessions_per_s "sessions/s (client's time)"
        row "$p" load_p50_us "p50 session latency µs (connect to QUIT's reply)"
        row "$p" load_p99_us "p99 session latency µs"
        row "$p" cpu_ms_per_msg "CPU ms per message, all server processes"
    done
    echo
    echo "Raw lines (point side run …; seconds: until all are in the mailbox; smtp_seconds:" \
         "the client's run; load_*: smtp_load's own figures):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$DIR/section.md"

publish_section smtp
[ "$PROBLEMS" -eq 0 ] || { echo "smtp_bench: $PROBLEMS measurements had problems (above)" >&2; exit 1; }
