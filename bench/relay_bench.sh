#!/bin/sh
# Relaying: how fast relayd empties the outbound queue into a remote host, beside Postfix
# (Debian's postfix, a private instance on loopback) delivering the same messages to the same
# host, in the same run, reported as ratios Postern/Postfix. The remote host is Postfix's
# smtp-sink (answers 250 at once, counts what it takes). Standalone; about two minutes with
# the defaults. Needs root (Postfix's master runs as root).
#
#   sh bench/relay_bench.sh                (build first: make)
#   RELAY_BENCH_N=5000 RELAY_BENCH_RUNS=3 RELAY_BENCH_DOMAINS="1 10" POSTERN_BIN=build/bin \
#       sh bench/relay_bench.sh
#
# Each run, for each count of recipient domains in RELAY_BENCH_DOMAINS (1: every message to
# remote.test; 10: remote0.test .. remote9.test, all sent to the sink by the '*' transport
# and by relayhost), one side after the other:
#   Postern  RELAY_BENCH_N messages of 1 KiB, one recipient each, INSERTed into outbound_queue
#            (as postern_deliver does; a trigger fills outbound_recipients), VACUUM ANALYZE,
#            then relayd starts: the time from its start until the sink has counted N more
#            messages and the queue is empty; relayd's CPU time (/proc/PID/stat) and
#            PostgreSQL's (the postmaster and its children) over that time.
#   Postfix  the same messages submitted over SMTP to its smtpd, which puts them on hold
#            (check_client_access static:HOLD); when all N are in the hold queue,
#            `postsuper -H ALL` and `postqueue -f` release them: the time from the release
#            until the sink has counted N more and the queue is empty; the CPU time of the
#            master and its children (qmgr, smtp, scache, ...), exited ones through the
#            master's cutime/cstime, over that time.
# Both sides: at most RELAY_BENCH_CONCURRENCY (4) connections to the sink
# (relay.destination_concurrency, default_destination_concurrency_limit), no TLS (the sink
# offers none), connections reused for the next message, one relayd, PostgreSQL with its
# defaults (fsync on, as in production).
# Results are printed and written to bench/results/relay.txt and to the relay section of
# bench/results.md.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${POSTERN_BIN:-$ROOT/build/bin}
N=${RELAY_BENCH_N:-5000}
RUNS=${RELAY_BENCH_RUNS:-3}
DOMAIN_COUNTS=${RELAY_BENCH_DOMAINS:-1 10}
CONCURRENCY=${RELAY_BENCH_CONCURRENCY:-4}
SIZE=1024
BENCH=relay
NEEDS="$BIN/relayd $BIN/mailctl"
[ "$(id -u)" -eq 0 ] || { echo "relay_bench: run as root (Postfix's master runs as root)" >&2; exit 1; }
. bench/common.sh
PG_PORT=$(free_port)
NATS_PORT=$(free_port)
SINK_PORT=$(free_port)
PF_SMTPD_PORT=$(free_port)
TOOL="$PYTHON $DIR/relay_tool.py"
WAIT_TIMEOUT=${RELAY_BENCH_TIMEOUT:-120} # seconds one side may take to deliver N

# --- the helper: the messages, the sink's counter, the waits, CPU times ----------------------
cat >"$DIR/relay_tool.py" <<'EOF'
"""relay_bench.sh's helper.
  fill-pg URL N DOMAINS TAG     N messages into outbound_queue (one INSERT)
  fill-smtp PORT N DOMAINS CONNS  the same N messages over SMTP, CONNS connections at once
  count SINKOUT PORT            "sessions messages" from smtp-sink -c's output; sessions
                                that have not ended yet count: the connections to PORT
  wait SINKOUT BASE N TIMEOUT pg URL | spool DIR
                                until the sink has counted BASE+N messages and the queue is
                                empty; prints "sink_time empty_time" (epoch seconds)
  files DIR SUB...              the number of files under DIR/SUB...
  cpu PID                       CPU ms of PID and its children, live ones from their
                                /proc/PID/stat (utime+stime+cutime+cstime), exited ones
                                through PID's cutime+cstime"""
import os
import smtplib
import sys
import threading
import time

SENDER = "sender@bench.test"


def message(i, domains, size):
    """Message i: (recipient, bytes), exactly size bytes, CRLF line ends."""
    domain = "remote.test" if domains == 1 else "remote%d.test" % (i % domains)
    rcpt = "rcpt%d@%s" % (i, domain)
    head = ("From: Relay Bench <%s>\r\nTo: <%s>\r\nSubject: relay bench %d\r\n"
            "Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <relay-bench-%d@bench.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            % (SENDER, rcpt, i, i)).encode()
    room = size - len(head)
    lines = [b"x" * 70 + b"\r\n"] * (room // 72)
    rest = room % 72
    if rest >= 3:
        lines.append(b"y" * (rest - 2) + b"\r\n")
    elif rest:
        lines[-1] = b"x" * (70 + rest) + b"\r\n"
    raw = head + b"".join(lines)
    assert len(raw) == size
    return rcpt, raw


def fill_pg(url, n, domains, tag):
    import psycopg2
    import psycopg2.extras
    rows = []
    for i in range(n):
        rcpt, raw = message(i, domains, SIZE)
        rows.append(("%s-%d" % (tag, i), SENDER, [rcpt], psycopg2.Binary(raw)))
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, "INSERT INTO outbound_queue (queue_id, sender, recipients, raw) VALUES %s",
            rows, page_size=1000)
    conn.close()


def fill_smtp(port, n, domains, conns):
    errors = []

    def send(k):
        try:
            s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.test")
            for i in range(k, n, conns):
                rcpt, raw = message(i, domains, SIZE)
                s.sendmail(SENDER, [rcpt], raw)
            s.quit()
        except Exception as e:  # reported below, the bench fails
            errors.append(repr(e))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("fill-smtp: " + "; ".join(errors))


def count(sinkout):
    """smtp-sink -c writes "sess=S quit=Q mesg=M\\r" whenever a count changes."""
    with open(sinkout, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256))
        tail = f.read().decode("ascii", "replace")
    for entry in reversed(tail.split("\r")):
        kv = dict(p.split("=", 1) for p in entry.split() if "=" in p)
        if "sess" in kv and "mesg" in kv:
            return int(kv["sess"]), int(kv["mesg"])
    return 0, 0


def open_sessions(port):
    """Established TCP connections to 127.0.0.1:port (clients' ends), from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == "0100007F:%04X" % port and fields[3] == "01":
                n += 1
    return n


def files(d, subs):
    total = 0
    for sub in subs:
        for _, _, names in os.walk(os.path.join(d, sub)):
            total += len(names)
    return total


def wait(sinkout, base, n, timeout, mode, arg):
    deadline = time.time() + timeout
    while count(sinkout)[1] < base + n:
        if time.time() > deadline:
            sys.exit("wait: the sink has %d of %d messages after %ds"
                     % (count(sinkout)[1] - base, n, timeout))
        time.sleep(0.005)
    t_sink = time.time()
    if mode == "pg":
        import psycopg2
        conn = psycopg2.connect(arg)
        conn.autocommit = True
        cur = conn.cursor()
        while True:
            cur.execute("SELECT count(*) FROM outbound_queue")
            left = cur.fetchone()[0]
            if left == 0:
                break
            if time.time() > deadline:
                sys.exit("wait: %d messages still queued after %ds" % (left, timeout))
            time.sleep(0.005)
        conn.close()
    else:
        while files(arg, ["incoming", "active", "deferred"]):
            if time.time() > deadline:
                sys.exit("wait: messages still queued after %ds" % timeout)
            time.sleep(0.005)
    print("%.6f %.6f" % (t_sink, time.time()))


def stat(pid):
    """(ppid, own ticks, children's ticks) of pid, or None when it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def cpu(pid):
    pid = int(pid)
    own = stat(pid)
    if own is None:
        sys.exit("cpu: no process %d" % pid)
    ticks = own[1] + own[2]
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != pid:
            st = stat(name)
            if st and st[0] == pid:
                ticks += st[1] + st[2]
    print("%.0f" % (ticks * 1000.0 / os.sysconf("SC_CLK_TCK")))


SIZE = int(os.environ.get("RELAY_BENCH_SIZE", "1024"))
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "fill-pg":
    fill_pg(args[0], int(args[1]), int(args[2]), args[3])
elif cmd == "fill-smtp":
    fill_smtp(int(args[0]), int(args[1]), int(args[2]), int(args[3]))
elif cmd == "count":
    sess, mesg = count(args[0])
    print("%d %d" % (sess + open_sessions(int(args[1])), mesg))
elif cmd == "wait":
    wait(args[0], int(args[1]), int(args[2]), int(args[3]), args[4], args[5])
elif cmd == "files":
    print(files(args[0], args[1:]))
elif cmd == "cpu":
    cpu(args[0])
else:
    sys.exit("relay_tool: unknown command " + cmd)
EOF
export RELAY_BENCH_SIZE=$SIZE

# --- the sink ---------------------------------------------------------------------------------
SINK_OUT=$DIR/sink.out
SINK_CMD="smtp-sink -c -u nobody -h sink.bench.test 127.0.0.1:$SINK_PORT 1024"
$SINK_CMD >"$SINK_OUT" 2>"$DIR/sink.err" &
pids="$pids $!"
wait_port "$SINK_PORT" smtp-sink "$DIR/sink.err"

# --- Postern: PostgreSQL, NATS, the transport (relayd starts in each run) ---------------------
postern_stack
"$BIN/mailctl" transport set '*' "127.0.0.1:$SINK_PORT" >/dev/null
"$BIN/mailctl" config set relay.destination_concurrency "$CONCURRENCY" >/dev/null
PG_PID=$(head -1 "$DIR/pg/postmaster.pid")
RELAYD_ENV="SMTP_HOSTNAME=relay.bench.test HEALTH_PORT=0 DATABASE_URL=$DATABASE_URL NATS_URL=$NATS_URL"

# --- Postfix: a private instance under $DIR/postfix ------------------------------------------
PF=$DIR/postfix
postfix_main_cf "$PF"
cat >>"$PF/etc/main.cf" <<EOF
smtpd_relay_restrictions = permit_mynetworks, reject
# Everything received waits in the hold queue until the bench releases it.
smtpd_client_restrictions = check_client_access static:HOLD
relayhost = [127.0.0.1]:$SINK_PORT
default_destination_concurrency_limit = $CONCURRENCY
smtp_tls_security_level = none
biff = no
EOF
# Only the services this needs; smtpd on a free loopback port, nothing on port 25; no chroot.
cat >"$PF/etc/master.cf" <<EOF
127.0.0.1:$PF_SMTPD_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
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
postfix -c "$PF/etc" start >/dev/null 2>&1 || { tail -20 "$PF/maillog" >&2; exit 1; }
wait_port "$PF_SMTPD_PORT" postfix "$PF/maillog"
PF_MASTER=$(tr -d ' ' <"$PF/spool/pid/master.pid")

# --- the runs ---------------------------------------------------------------------------------
RAW=$DIR/raw.txt
: >"$RAW"
now() { date +%s.%N; }
# record SIDE DOMAINS RUN T0 T_SINK T_END CPU_MS [PG_CPU_MS] SESS0 MESG0: a raw line.
record() {
    side=$1 doms=$2 run=$3 t0=$4 tsink=$5 tend=$6 cpums=$7 pgms=$8 sess0=$9 mesg0=${10}
    sleep 0.2 # the sink notices closed connections
    set -- $($TOOL count "$SINK_OUT" "$SINK_PORT")
    awk -v side="$side" -v doms="$doms" -v run="$run" -v n="$N" -v t0="$t0" -v ts="$tsink" \
        -v te="$tend" -v cpu="$cpums" -v pg="$pgms" -v sess=$(($1 - sess0)) -v mesg=$(($2 - mesg0)) '
        BEGIN {
            secs = te - t0
            printf "%s domains=%s run=%s messages=%d sink_messages=%d sink_sessions=%d seconds=%.3f" \
                   " to_sink_seconds=%.3f msgs_per_s=%.1f cpu_ms=%d cpu_ms_per_msg=%.3f", side, doms, run,
                   n, mesg, sess, secs, ts - t0, n / secs, cpu, cpu / n
            if (pg != "-")
                printf " pg_cpu_ms=%d pg_cpu_ms_per_msg=%.3f", pg, pg / n
            printf " total_cpu_ms_per_msg=%.3f\n", (cpu + (pg != "-" ? pg : 0)) / n
        }' | tee -a "$RAW"
    [ $(($2 - mesg0)) -eq "$N" ] || echo "relay_bench: $side delivered $(($2 - mesg0)) messages, not $N" >&2
}

postern_run() { # postern_run DOMAINS RUN
    $TOOL fill-pg "$DATABASE_URL" "$N" "$1" "rb$1-$2"
    psql -q "$DATABASE_URL" -c "VACUUM ANALYZE outbound_queue" -c "VACUUM ANALYZE outbound_recipients"
    log=$DIR/relayd.$1.$2.log
    set -- "$1" "$2" $($TOOL count "$SINK_OUT" "$SINK_PORT")
    pg0=$($TOOL cpu "$PG_PID")
    t0=$(now)
    env $RELAYD_ENV "$BIN/relayd" 2>"$log" &
    relayd=$!
    pids="$pids $relayd"
    if ! times=$($TOOL wait "$SINK_OUT" "$4" "$N" "$WAIT_TIMEOUT" pg "$DATABASE_URL"); then
        tail -20 "$log" >&2
        exit 1
    fi
    cpums=$($TOOL cpu "$relayd")
    pg1=$($TOOL cpu "$PG_PID")
    # Warnings while it delivered (not those of its shutdown).
    problems=$(grep -E 'level=(warn|error)' "$log" || true)
    kill "$relayd"
    wait "$relayd" || echo "relay_bench: relayd exited with $?" >&2
    pids=$(echo "$pids" | sed "s/ $relayd\$//")
    record postern "$1" "$2" "$t0" $times "$cpums" $((pg1 - pg0)) "$3" "$4"
    [ -z "$problems" ] || { echo "relay_bench: relayd logged:" >&2; echo "$problems" | head -5 >&2; }
}

postfix_run() { # postfix_run DOMAINS RUN
    $TOOL fill-smtp "$PF_SMTPD_PORT" "$N" "$1" "$CONCURRENCY"
    i=0
    until [ "$($TOOL files "$PF/spool" hold)" -eq "$N" ]; do
        i=$((i + 1))
        [ $i -lt 600 ] || { echo "relay_bench: Postfix holds $($TOOL files "$PF/spool" hold) of $N" >&2; exit 1; }
        sleep 0.1
    done
    set -- "$1" "$2" $($TOOL count "$SINK_OUT" "$SINK_PORT")
    cpu0=$($TOOL cpu "$PF_MASTER")
    t0=$(now)
    postsuper -c "$PF/etc" -H ALL 2>/dev/null
    postqueue -c "$PF/etc" -f
    if ! times=$($TOOL wait "$SINK_OUT" "$4" "$N" "$WAIT_TIMEOUT" spool "$PF/spool"); then
        tail -20 "$PF/maillog" >&2
        exit 1
    fi
    cpu1=$($TOOL cpu "$PF_MASTER")
    record postfix "$1" "$2" "$t0" $times $((cpu1 - cpu0)) - "$3" "$4"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date +%s)
r=1
while [ "$r" -le "$RUNS" ]; do
    for d in $DOMAIN_COUNTS; do
        postern_run "$d" "$r"
        postfix_run "$d" "$r"
    done
    r=$((r + 1))
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - STARTED))
[ -n "${RELAY_BENCH_RAW:-}" ] && cp "$RAW" "$RELAY_BENCH_RAW"

# --- the report -------------------------------------------------------------------------------
# row DOMAINS FIELD LABEL: FIELD over the runs, Postern's and Postfix's, as a table row
# (bench/common.sh's peer_row).
row() {
    peer_row "$1" "domains=$1" "$2" "$3"
}

PF_VERSION=$(postconf -d -h mail_version)
report_facts # POSTERN_REV PG_VERSION CPU MEM (bench/common.sh)
WHEN=$(date -u +%Y-%m-%dT%H:%M:%SZ)

{
    echo "## Relaying: Postern relayd vs Postfix $PF_VERSION, into smtp-sink"
    echo
    echo "Same run, same messages, same sink. $WHEN."
    echo
    echo "- Machine: $(nproc) cores ($CPU), $MEM, Linux $(uname -r); load average" \
         "$LOAD_BEFORE before the measurements, $LOAD_AFTER after (anything above the" \
         "bench's own load is other work on the machine and widens the spread)."
    echo "- Versions: Postern $POSTERN_REV (relayd from $BIN), Postfix $PF_VERSION (Debian)," \
         "PostgreSQL $PG_VERSION."
    echo "- Command: \`sh bench/relay_bench.sh\` (also run by \`make bench\`, alone:" \
         "\`sh bench/run.sh relay\`); RELAY_BENCH_N=$N RELAY_BENCH_RUNS=$RUNS" \
         "RELAY_BENCH_DOMAINS=\"$DOMAIN_COUNTS\"; $RUNS runs in ${ELAPSED}s."
    echo "- Load: $N messages of $SIZE bytes, one recipient each (domains 1: remote.test;" \
         "domains 10: remote0.test … remote9.test, one destination for both sides), sender" \
         "sender@bench.test. At most $CONCURRENCY connections to the sink on both sides:" \
         "relayd's relay.destination_concurrency = $CONCURRENCY, Postfix's" \
         "default_destination_concurrency_limit = $CONCURRENCY; relay.concurrency (messages" \
         "in hand) at its default. No TLS (the sink offers none)."
    echo "- Sink: \`$(echo "$SINK_CMD" | sed "s/$SINK_PORT/PORT/")\` (250 at once; its -c counter)."
    echo "- Postern: \`mailctl transport set '*' 127.0.0.1:PORT\`; the messages INSERTed into" \
         "outbound_queue (queue_id, sender, recipients, raw) in one statement, then" \
         "\`VACUUM ANALYZE\` of outbound_queue and outbound_recipients; timed from" \
         "\`env SMTP_HOSTNAME=relay.bench.test DATABASE_URL=… NATS_URL=… relayd\` starting" \
         "until the sink has counted $N more and \`SELECT count(*) FROM outbound_queue\` is 0." \
         "CPU: relayd's utime+stime (/proc/PID/stat); PostgreSQL's: the postmaster and its" \
         "children over the same time (the claims, reads and per-message transactions, plus" \
         "its background processes and the bench's final count queries)."
    echo "- Postfix: a private instance (\`postfix -c DIR start\`; its own config, queue and" \
         "data directories; smtpd on a free loopback port, nothing on port 25;" \
         "relayhost = [127.0.0.1]:PORT). The same messages submitted over SMTP with" \
         "\`check_client_access static:HOLD\` (its smtpd adds a Received header of about" \
         "200 bytes); timed from \`postsuper -c DIR -H ALL; postqueue -c DIR -f\` until the" \
         "sink has counted $N more and incoming/, active/ and deferred/ are empty. CPU: the" \
         "master and its children (qmgr, smtp, trivial-rewrite, scache, postlogd …), live" \
         "ones from /proc, exited ones through the master's cutime+cstime; postsuper and" \
         "postqueue themselves are not counted."
    echo "- Figures: median over the runs (min–max in brackets). Ratio = Postern / Postfix:" \
         "above 1 means Postern delivers faster in msgs/s, uses more CPU in ms/msg. SMTP" \
         "sessions: the connections the sink accepted in the run (Postfix keeps idle ones in" \
         "its connection cache, its default; relayd keeps a session that has nothing to send" \
         "for 2 seconds, then ends it)."
    echo
    echo "| domains | figure | Postern | Postfix | ratio |"
    echo "| --- | --- | --- | --- | --- |"
    for d in $DOMAIN_COUNTS; do
        row "$d" msgs_per_s "delivered messages/s (queue to sink)"
        row "$d" seconds "seconds for $N"
        row "$d" cpu_ms_per_msg "CPU ms per message (relayd / Postfix's processes)"
        row "$d" pg_cpu_ms_per_msg "PostgreSQL CPU ms per message"
        row "$d" total_cpu_ms_per_msg "all CPU ms per message (relayd + PostgreSQL / Postfix)"
        row "$d" sink_sessions "SMTP sessions the sink saw"
    done
    echo
    echo "Raw lines (side domains run …; seconds: from the start to an empty queue;" \
         "to_sink_seconds: until the sink had all):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$DIR/section.md"

publish_section relay
