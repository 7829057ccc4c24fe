#!/bin/sh
# Postern in containers, scaled out and knocked about (issue 5, "Proven here"): the compose
# stack of docker-compose.yml, unchanged, under a project of its own, with smtpd scaled to 3
# replicas behind its load balancer (HAProxy, service `lb`). The balancer's mail ports are
# published on 127.0.0.1 with ports the engine picks (host port 0; `docker compose port lb
# PORT` says which), every client (Python's smtplib, here) goes through them, and which
# replica took a message is read from the replicas' logs.
#
#   1. HAMR across replicas: `mailctl hamr set --user U --max 3 --interval 300`; U sends 3
#      messages (accepted, by more than one replica), then 6 more: every one is `451 4.7.1`,
#      from more than one replica. Exactly 3 are stored.
#   2. The answering limiter killed (docker-compose.yml runs two): a user limited to 6 per
#      hour sends 3, the limiter that answers (`mailctl limiter status`) is killed, the other
#      one takes over; 3 more are accepted (retried while the takeover is under way), the 7th
#      is throttled: the count held. The killed one is started again (a standby).
#   3. Every limiter killed (`kill limiter`): authenticated messages get 451 4.7.1 (one per
#      replica sent) and nothing is stored, mail from other servers still flows, smtpd stays
#      up; `start limiter`: the client's retry goes through (waited for with a deadline), once.
#   4. PostgreSQL restarted under load: messages (MX to a mailbox, authenticated submissions
#      to the relay queue, spread over the replicas by the balancer) sent in a loop while
#      `restart postgres` happens in the middle; every queue id acknowledged with 250 is then
#      in a mailbox or in the queue, exactly once, every failure was 4xx, smtpd stayed up, and
#      both kinds of mail are accepted again.
#   5. The balancer: a client in the project's network is known to smtpd by its own address
#      (from the PROXY v2 header), not the balancer's; failed logins from this host block this
#      host's address (the network's gateway, as the balancer sees it), not the balancer's:
#      that client is refused at connect while the other one is still greeted, until
#      `mailctl harvest unblock`; one smtpd replica stopped (`docker stop`, it drains) under
#      a stream of messages leaves the rotation (HAProxy's check of its /readyz) and every
#      message sent after the stop gets 250; started again, it is back in the rotation.
#
# Ends with `N passed, N failed` (the five items) and a non-zero status when one failed.
# The project and its volumes are removed at the end whatever happens (down -v).
#
# Environment:
#   COMPOSE            the compose command (default: `docker compose`, else `docker-compose`)
#   E2E_PROJECT        compose project name (default postern-e2e-scale)
#   E2E_TIMEOUT        seconds to wait for the stack to be healthy (default 180)
#   E2E_REPLICAS       smtpd replicas (default 3)
#   E2E_LOAD           messages in the PostgreSQL-restart loop (default 60)
#   E2E_LOAD_WORKERS   clients sending them at once (default: one per replica)
#   E2E_LOAD_PACE      seconds each client waits between two messages (default 0.5)
#   E2E_NO_BUILD=1     use the images as they are (else built as e2e_docker.sh does; cached)
#   E2E_KEEP=1         leave the stack running afterwards (remove it with the printed command)
#   POSTERN_BASE_IMAGE, POSTGRES_IMAGE, NATS_IMAGE   registry images instead of the
#                      offline ones (then build-base.sh is not run)
set -eu

cd "$(dirname "$0")/../.."
PROJECT=${E2E_PROJECT:-postern-e2e-scale}
TIMEOUT=${E2E_TIMEOUT:-180}
REPLICAS=${E2E_REPLICAS:-3}
LOAD=${E2E_LOAD:-60}
WORKERS=${E2E_LOAD_WORKERS:-$REPLICAS}
PACE=${E2E_LOAD_PACE:-0.5}
PYTHON=/usr/bin/python3
T0=$(date +%s)
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/postern-e2e-scale.XXXXXX")
PASSED=0
FAILED=0
ITEMS="hamr failover limiter postgres balancer"
DONE=""
LOAD_PID=""

# step, bad (a check inside an item that did not hold: the item fails), fail (the stack
# itself could not be set up), pick_compose, build_images, ids, wait_healthy, show_stack,
# remove_stack.
. tests/deploy/common.sh
pick_compose
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON is not installed"

compose() {
    # shellcheck disable=SC2086
    $COMPOSE -p "$PROJECT" -f docker-compose.yml "$@"
}

# Host port 0: the engine picks free ports for the balancer's (and webd's) listeners.
export POSTERN_HOST_IP=127.0.0.1 SMTP_HOST_PORT=0 SUBMISSION_HOST_PORT=0 SMTPS_HOST_PORT=0 \
    POP3_HOST_PORT=0 POP3S_HOST_PORT=0 IMAP_HOST_PORT=0 IMAPS_HOST_PORT=0 WEB_HOST_PORT=0
export SMTP_HOSTNAME=mail.example.test
DOMAIN=example.test
RUN=$$-$(date +%s)
HAMR_USER=hamr@$DOMAIN       # item 1: HAMR, HAMR_MAX messages per 300 s
HAMR_MAX=3
FAILOVER_USER=failover@$DOMAIN  # item 2: FAILOVER_MAX per 3600 s, the answering limiter killed
FAILOVER_MAX=6
SENDER=sender@$DOMAIN        # items 2 and 3: authenticated mail (HAMR's defaults)
INBOX_USER=alice@$DOMAIN     # items 2 and 3: MX mail lands here
OUTSIDE=someone@example.org  # relayed: the outbound queue
PASSWORD=e2e-scale-$RUN-pw

finish() {
    status=$?
    trap - EXIT INT TERM
    [ -z "$LOAD_PID" ] || kill "$LOAD_PID" 2>/dev/null || true
    if [ "$status" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        compose logs --no-color >"$LOGDIR/compose.log" 2>&1 || true
        show_stack 15
    fi
    remove_stack
    # Items the run did not reach count as failed.
    for item in $ITEMS; do
        case " $DONE " in
            *" $item "*) ;;
            *) [ "$status" -eq 0 ] || { echo "== not run: $item"; FAILED=$((FAILED + 1)); } ;;
        esac
    done
    [ "$FAILED" -eq 0 ] || [ "$status" -ne 0 ] || status=1
    if [ "$status" -eq 0 ]; then
        rm -rf "$LOGDIR"
        step "e2e-docker-scale passed"
    else
        echo "== logs kept in $LOGDIR"
    fi
    echo "$PASSED passed, $FAILED failed"
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted run under the same project name.
compose down -v --remove-orphans >/dev/null 2>&1 || true

# ---- the SMTP client --------------------------------------------------------------------
# python3 smtpc.py send PORT MODE USER PASSWORD FROM TO TOKEN
#     one message; prints "CODE QUEUE_ID TEXT" (QUEUE_ID "-" unless accepted; CODE 0: no
#     reply, the connection failed or dropped). MODE mx: plain SMTP; sub: STARTTLS, AUTH PLAIN.
# python3 smtpc.py load OUT N WORKERS PACE PORTS MX_TO USER PASSWORD SUB_TO PREFIX
#     N messages (about 64 KB each) sent by WORKERS clients at once, each pausing PACE seconds
#     between its messages; message I goes to replica I mod R of the R comma-separated PORTS
#     ("mx_port/submission_port" each), by rounds alternately MX to MX_TO and authenticated
#     from USER to SUB_TO. One line per message appended to OUT:
#     "I MODE PORT TOKEN CODE QUEUE_ID TEXT".
cat >"$LOGDIR/smtpc.py" <<'EOF'
import base64, re, smtplib, ssl, sys, threading, time

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE          # the stack's self-signed certificate


def message(sender, to, token, lines=0):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: scale {token}\r\n"
            f"Message-ID: <{token}@client.example.org>\r\n\r\n"
            f"e2e-docker-scale: {token}\r\n" + f"{'x' * 76}\r\n" * lines).encode()


def text(b):
    return (b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)).replace("\n", " ")


def send(port, mode, user, password, sender, to, token, timeout=60, lines=0):
    """(code, queue_id, text) of the first reply that is not a success, else of DATA's end."""
    try:
        s = smtplib.SMTP("127.0.0.1", int(port), local_hostname="client.example.org",
                         timeout=timeout)
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, "-", text(e.smtp_error)
    except (OSError, smtplib.SMTPException) as e:
        return 0, "-", f"no connection: {e!r}"
    try:
        code, msg = s.ehlo()
        if code != 250:
            return code, "-", text(msg)
        if mode == "sub":
            s.starttls(context=CTX)
            s.ehlo()
            plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            code, msg = s.docmd("AUTH", "PLAIN " + plain)
            if code != 235:
                return code, "-", text(msg)
        for code, msg in (s.mail(sender), s.rcpt(to)):
            if code >= 300:
                return code, "-", text(msg)
        code, msg = s.data(message(sender, to, token, lines))
        m = re.search(r"queued as (\S+)", text(msg))
        return code, (m.group(1) if code == 250 and m else "-"), text(msg)
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, "-", text(e.smtp_error)
    except (OSError, smtplib.SMTPException) as e:
        return 0, "-", f"no reply: {e!r}"
    finally:
        try:
            s.quit()
        except Exception:
            s.close()


def main():
    if sys.argv[1] == "send":
        code, qid, msg = send(*sys.argv[2:9])
        print(code, qid, msg)
    elif sys.argv[1] == "load":
        out, n, workers, pace, ports, mx_to, user, password, sub_to, prefix = sys.argv[2:12]
        n, workers, pace = int(n), int(workers), float(pace)
        ports = [p.split("/") for p in ports.split(",")]
        lock = threading.Lock()
        f = open(out, "a")

        def worker(w):
            for i in range(w, n, workers):
                mx_port, sub_port = ports[i % len(ports)]
                mode = "mx" if (i // len(ports)) % 2 == 0 else "sub"
                token = f"{prefix}-{i}"
                if mode == "mx":
                    port = mx_port
                    r = send(port, "mx", "", "", "someone@outside.example", mx_to, token,
                             lines=840)
                else:
                    port = sub_port
                    r = send(port, "sub", user, password, user, sub_to, token, lines=840)
                with lock:
                    print(i, mode, port, token, *r, file=f, flush=True)
                time.sleep(pace)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        f.close()


main()
EOF

smtpc() {
    "$PYTHON" "$LOGDIR/smtpc.py" "$@"
}

sql() {
    docker exec -i "$(ids postgres)" psql -X -q -At -U postern -d postern -c "$1"
}

# mailctl through its compose service, as an administrator runs it.
mailctl() {
    echo "\$ mailctl $*" >>"$LOGDIR/mailctl.log"
    compose run --rm -T mailctl "$@" >>"$LOGDIR/mailctl.log" 2>&1 || {
        tail -n 20 "$LOGDIR/mailctl.log"
        return 1
    }
}

# Container ids of a service's replicas, in replica order (index 1, 2, ...).
replicas() {
    ids "$1" | while read -r id; do
        printf '%s %s\n' "$(docker inspect -f '{{index .Config.Labels "com.docker.compose.container-number"}}' "$id")" "$id"
    done | sort -n | cut -d' ' -f2
}

# "id started-at restart-count status" of every replica: compared before and after a test.
fingerprint() {
    for id in $(replicas "$1"); do
        docker inspect -f '{{.Id}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Status}}' "$id"
    done
}

# The host port of the balancer's listener on container port $1.
host_port() {
    compose port lb "$1" | sed 's/.*://'
}

# The replica (1, 2, ...) whose log says it accepted queue id $1.
accepted_by() {
    i_=1
    for id_ in $(replicas smtpd); do
        docker logs "$id_" 2>&1 | grep -q "message accepted.* id=$1 " && { echo "$i_"; return 0; }
        i_=$((i_ + 1))
    done
    return 1
}

# "N1 N2 N3": how many lines matching $1 each smtpd replica logged.
per_replica() {
    for id_ in $(replicas smtpd); do
        printf '%s ' "$(docker logs "$id_" 2>&1 | grep -c -- "$1")"
    done
}

# How many of the words in $1 are different.
distinct() {
    echo $1 | tr ' ' '\n' | grep . | sort -u | wc -l
}

# Copies of the message with token $2 in the INBOX of $1 plus entries in the outbound queue
# (found by its Message-ID, <TOKEN@client.example.org>: no token is a prefix of another's).
stored() {
    sql "SELECT (SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                 JOIN users u ON u.id = b.user_id
                 WHERE u.address = '$1' AND position(convert_to('<$2@', 'UTF8') IN m.raw) > 0)
              + (SELECT count(*) FROM outbound_queue WHERE position(convert_to('<$2@', 'UTF8') IN raw) > 0)"
}

# smtpc send ARGS... again and again, as a client retrying after a 4xx, until it gets 250 or
# the time is past $1 (seconds since the epoch); prints the last reply. Fails on anything but
# 250 and 4xx.
send_until_accepted() {
    until_=$1
    shift
    while :; do
        r_=$(smtpc send "$@")
        echo "$*: $r_" >>"$LOGDIR/retries.log"
        case $r_ in
            "250 "*) echo "$r_"; return 0 ;;
            4*) [ "$(date +%s)" -lt "$until_" ] || { echo "$r_"; return 1; } ;;
            *) echo "$r_"; return 1 ;;
        esac
        sleep 1
    done
}

# A reply as smtpc prints it ("CODE QUEUE_ID TEXT"), without the queue id.
said() {
    echo "$1" | cut -d' ' -f1,3-
}

# ---- images -----------------------------------------------------------------------------
if [ "${E2E_NO_BUILD:-0}" != 1 ]; then
    build_images
fi

# ---- up, smtpd x REPLICAS -----------------------------------------------------------------
step "compose up --scale smtpd=$REPLICAS (project $PROJECT, mail ports on 127.0.0.1, engine-picked)"
timeout 300 $COMPOSE -p "$PROJECT" -f docker-compose.yml up -d --no-build \
    --scale smtpd="$REPLICAS" >"$LOGDIR/up.log" 2>&1 || {
    cat "$LOGDIR/up.log"
    fail "compose up"
}
SERVICES=$(compose config --services | grep -vxE 'postgres|nats|certs|nats-secrets|migrate|mailctl|webmail' | tr '\n' ' ')
step "waiting for healthy: postgres nats $SERVICES(at most ${TIMEOUT}s)"
# shellcheck disable=SC2086
wait_healthy "$TIMEOUT" postgres nats $SERVICES || fail "the stack did not come up"
n=$(replicas smtpd | wc -l)
[ "$n" -eq "$REPLICAS" ] || fail "$n smtpd replicas running, not $REPLICAS"
MX_PORT=$(host_port 2525) SUB_PORT=$(host_port 2587)
[ -n "$MX_PORT" ] && [ -n "$SUB_PORT" ] || fail "the balancer publishes no port for 2525 or 2587"
step "healthy; the balancer: MX 127.0.0.1:$MX_PORT, submission 127.0.0.1:$SUB_PORT, $REPLICAS smtpd replicas behind it"

# ---- administer -------------------------------------------------------------------------
step "mailctl (compose run): domain $DOMAIN, users $HAMR_USER $SENDER $INBOX_USER; hamr set --user $HAMR_USER --max $HAMR_MAX --interval 300"
mailctl domain add "$DOMAIN" || fail "mailctl domain add"
# Relayed mail goes to a port where nothing listens in relayd's container: deferred, it stays
# in the queue where the counts below look for it.
mailctl transport set example.org 127.0.0.1:9 || fail "mailctl transport set"
for u in "$HAMR_USER" "$FAILOVER_USER" "$SENDER" "$INBOX_USER"; do
    printf '%s\n' "$PASSWORD" | compose run --rm -T mailctl user add "$u" --password-stdin \
        >>"$LOGDIR/mailctl.log" 2>&1 || {
        tail -n 20 "$LOGDIR/mailctl.log"
        fail "mailctl user add $u"
    }
done
# Before the user's first message: the limiter reads a user's settings when it first sees it.
mailctl hamr set --user "$HAMR_USER" --max "$HAMR_MAX" --interval 300 --action throttle ||
    fail "mailctl hamr set"
mailctl hamr set --user "$FAILOVER_USER" --max "$FAILOVER_MAX" --interval 3600 --action throttle ||
    fail "mailctl hamr set"

# The domain reaches every replica over the bus (config.changed); it may take a moment: until
# every replica has accepted a message for it.
deadline=$(($(date +%s) + 60))
k=0 by=""
while [ "$(distinct "$by")" -lt "$REPLICAS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] ||
        fail "not every replica takes mail for $DOMAIN (accepted by replicas:$by): $r"
    r=$(smtpc send "$MX_PORT" mx "" "" someone@outside.example "$INBOX_USER" "warmup-$RUN-$k")
    k=$((k + 1))
    if [ "${r%% *}" = 250 ]; then
        by="$by $(accepted_by "$(echo "$r" | cut -d' ' -f2)")"
    else
        sleep 1
    fi
done
step "every replica takes mail for $DOMAIN (through the balancer: $k messages, accepted by replicas$by)"

# ---- 1. HAMR across the replicas --------------------------------------------------------
item_hamr() {
    # Through the balancer, which spreads the connections: the first HAMR_MAX are accepted,
    # the next ones (two per replica) refused, by whichever replica takes them.
    accepted=0 qids="" by="" k=0 n=$((HAMR_MAX + 2 * REPLICAS))
    before=$(per_replica "user=\"$HAMR_USER\".*retry_after")
    while [ "$k" -lt "$n" ]; do
        r=$(smtpc send "$SUB_PORT" sub "$HAMR_USER" "$PASSWORD" "$HAMR_USER" "$OUTSIDE" "hamr-$RUN-$k")
        echo "message $k $r" >>"$LOGDIR/hamr.log"
        if [ "$k" -lt "$HAMR_MAX" ]; then
            [ "${r%% *}" = 250 ] || { bad "message $((k + 1)) of $HAMR_MAX refused: $(said "$r")"; return 1; }
            accepted=$((accepted + 1))
            qid=$(echo "$r" | cut -d' ' -f2)
            qids="$qids $qid"
            i=$(accepted_by "$qid") || { bad "no replica logged accepting $qid"; return 1; }
            by="$by $i"
            [ "$((k + 1))" = "$HAMR_MAX" ] &&
                step "   $HAMR_MAX messages: 250 (queue ids$qids), accepted by replicas$by"
        else
            case $r in
                "451 - 4.7.1 "*) ;;
                250*) accepted=$((accepted + 1)); bad "message $((k + 1)), past the limit, accepted"; return 1 ;;
                *) bad "message $((k + 1)), past the limit: $(said "$r") (want 451 4.7.1)"; return 1 ;;
            esac
        fi
        k=$((k + 1))
    done
    [ "$(distinct "$by")" -ge 2 ] || { bad "every accepted message went to one replica ($by)"; return 1; }
    # Each replica's refusals, from its log ("send refused: throttled ... user=U retry_after=").
    after=$(per_replica "user=\"$HAMR_USER\".*retry_after")
    refused="" total=0 replicas_refusing=0
    set -- $before
    for c in $after; do
        d=$((c - $1))
        shift
        refused="$refused $d" total=$((total + d))
        [ "$d" -eq 0 ] || replicas_refusing=$((replicas_refusing + 1))
    done
    step "   then $((2 * REPLICAS)) more: every one $(said "$(grep -m1 ' 451 ' "$LOGDIR/hamr.log" | cut -d' ' -f3-)"); refusals per replica:$refused"
    [ "$total" -eq $((2 * REPLICAS)) ] && [ "$replicas_refusing" -ge 2 ] || {
        bad "refusals per replica:$refused (want $((2 * REPLICAS)) in all, from more than one replica)"
        return 1
    }
    stored_n=$(sql "SELECT count(*) FROM outbound_queue WHERE sender = '$HAMR_USER'")
    [ "$accepted" = "$HAMR_MAX" ] && [ "$stored_n" = "$HAMR_MAX" ] || {
        bad "$accepted accepted, $stored_n queued for $HAMR_USER (want $HAMR_MAX and $HAMR_MAX)"
        return 1
    }
    step "   exactly $HAMR_MAX accepted and stored for $HAMR_USER across $REPLICAS replicas"
}

# ---- 2. the answering limiter killed: the other one counts on ---------------------------
# The replica that answers, from `mailctl limiter status` (its id starts with its host name,
# which is the container's id); prints the container id.
answering_limiter() {
    holder=$(compose run --rm -T mailctl --json limiter status 2>>"$LOGDIR/failover.log" |
        "$PYTHON" -c 'import json, sys; l = json.load(sys.stdin)["lease"]; print(l["replica"] if l and l["owns"] else "")') || return 1
    [ -n "$holder" ] || return 1
    for id in $(ids limiter); do
        case $id in "${holder%%:*}"*) echo "$id"; return 0 ;; esac
    done
    return 1
}

item_failover() {
    n=$(ids limiter | wc -l)
    [ "$n" -ge 2 ] || { bad "$n limiter containers running, not 2 (docker-compose.yml's default)"; return 1; }
    first=$(answering_limiter) || { bad "no limiter answers (mailctl limiter status)"; return 1; }
    k=0
    half=$((FAILOVER_MAX / 2))
    while [ "$k" -lt "$half" ]; do
        r=$(smtpc send "$SUB_PORT" sub "$FAILOVER_USER" "$PASSWORD" "$FAILOVER_USER" "$OUTSIDE" "failover-$RUN-$k")
        echo "message $((k + 1)) $r" >>"$LOGDIR/failover.log"
        [ "${r%% *}" = 250 ] || { bad "message $((k + 1)) of $FAILOVER_MAX refused: $(said "$r")"; return 1; }
        k=$((k + 1))
    done
    step "   $half messages accepted; limiter ${first%"${first#????????????}"} answers; killing it"
    t0=$(date +%s)
    docker kill "$first" >>"$LOGDIR/failover.log" 2>&1 || { bad "docker kill $first"; return 1; }
    second=""
    while [ -z "$second" ] || [ "$second" = "$first" ]; do
        [ "$(($(date +%s) - t0))" -lt 30 ] || { bad "no other limiter answers 30 s after the kill"; return 1; }
        sleep 0.5
        second=$(answering_limiter) || second=""
    done
    step "   limiter ${second%"${second#????????????}"} answers, $(($(date +%s) - t0)) s after the kill (as seen by mailctl)"
    deadline=$(($(date +%s) + 60))
    while [ "$k" -lt "$FAILOVER_MAX" ]; do
        r=$(send_until_accepted "$deadline" "$SUB_PORT" sub "$FAILOVER_USER" "$PASSWORD" "$FAILOVER_USER" "$OUTSIDE" "failover-$RUN-$k")
        echo "message $((k + 1)) $r" >>"$LOGDIR/failover.log"
        [ "${r%% *}" = 250 ] || { bad "message $((k + 1)) of $FAILOVER_MAX, after the takeover, refused: $(said "$r")"; return 1; }
        k=$((k + 1))
    done
    r=$(smtpc send "$SUB_PORT" sub "$FAILOVER_USER" "$PASSWORD" "$FAILOVER_USER" "$OUTSIDE" "failover-$RUN-over")
    echo "message $((k + 1)) $r" >>"$LOGDIR/failover.log"
    case $r in
        "451 - 4.7.1 "*"try again in"*) ;;
        *) bad "message $((k + 1)), past the limit of $FAILOVER_MAX after the takeover: $(said "$r") (want 451 4.7.1, try again in)"; return 1 ;;
    esac
    stored_n=$(sql "SELECT count(*) FROM outbound_queue WHERE sender = '$FAILOVER_USER'")
    [ "$stored_n" = "$FAILOVER_MAX" ] || { bad "$stored_n queued for $FAILOVER_USER, not $FAILOVER_MAX"; return 1; }
    step "   $FAILOVER_MAX accepted and stored in all, the next one $(said "$r" | cut -c1-60)..."
    docker start "$first" >>"$LOGDIR/failover.log" 2>&1 || { bad "docker start $first"; return 1; }
    # shellcheck disable=SC2086
    wait_healthy 60 limiter || { bad "the killed limiter did not come back healthy"; return 1; }
    step "   the killed limiter started again and healthy (a standby now)"
}

# ---- 3. the limiter killed and started again --------------------------------------------
item_limiter() {
    before=$(fingerprint smtpd)
    # One accepted first: the sender's settings are known, the path works.
    r=$(smtpc send "$SUB_PORT" sub "$SENDER" "$PASSWORD" "$SENDER" "$OUTSIDE" "pre-$RUN")
    [ "${r%% *}" = 250 ] || { bad "an authenticated message before the kill was refused: $r"; return 1; }
    compose kill limiter >>"$LOGDIR/limiter.log" 2>&1 || { bad "compose kill limiter"; return 1; }
    # every replica of it (docker-compose.yml runs two)
    for id in $(ids limiter); do
        state=$(docker inspect -f '{{.State.Status}}' "$id")
        [ "$state" != running ] || { bad "the limiter still runs after compose kill"; return 1; }
    done
    step "   limiter killed (now $state)"
    i=1 toks=""
    while [ "$i" -le "$REPLICAS" ]; do
        tok=down-$RUN-$i
        toks="$toks $tok"
        r=$(smtpc send "$SUB_PORT" sub "$SENDER" "$PASSWORD" "$SENDER" "$OUTSIDE" "$tok")
        echo "limiter down: message $i $r" >>"$LOGDIR/limiter.log"
        case $r in
            "451 - 4.7.1 "*) ;;
            *) bad "authenticated message $i without the limiter: $r (want 451 4.7.1)"; return 1 ;;
        esac
        [ "$(stored "$INBOX_USER" "$tok")" = 0 ] || { bad "$tok was stored although refused"; return 1; }
        i=$((i + 1))
    done
    step "   $REPLICAS authenticated messages: $(said "$(grep -m1 'limiter down' "$LOGDIR/limiter.log" | cut -d' ' -f5-)"), nothing stored"
    # Mail from other servers does not ask the limiter.
    i=1
    while [ "$i" -le "$REPLICAS" ]; do
        r=$(smtpc send "$MX_PORT" mx "" "" someone@outside.example "$INBOX_USER" "mx-down-$RUN-$i")
        [ "${r%% *}" = 250 ] || { bad "MX mail $i without the limiter: $r"; return 1; }
        i=$((i + 1))
    done
    step "   $REPLICAS MX messages still accepted"
    [ "$(fingerprint smtpd)" = "$before" ] || { bad "an smtpd replica restarted: $(fingerprint smtpd)"; return 1; }
    step "   every smtpd replica still up (same containers, no restarts)"

    compose start limiter >>"$LOGDIR/limiter.log" 2>&1 || { bad "compose start limiter"; return 1; }
    t=$(date +%s)
    deadline=$((t + 90))
    for tok in $toks; do
        # The client retries the same message, as an MTA does after a 4xx.
        r=$(send_until_accepted "$deadline" "$SUB_PORT" sub "$SENDER" "$PASSWORD" "$SENDER" "$OUTSIDE" "$tok") || {
            bad "$tok, once the limiter was started: $(said "$r") (want 4xx until 250, within 90 s)"
            return 1
        }
        [ "$(stored "$INBOX_USER" "$tok")" = 1 ] || { bad "$tok stored $(stored "$INBOX_USER" "$tok") times (want 1)"; return 1; }
    done
    step "   limiter started: the $REPLICAS retries went through after $(($(date +%s) - t))s, each stored once"
    wait_healthy 60 limiter || return 1
    [ "$(fingerprint smtpd)" = "$before" ] || { bad "an smtpd replica restarted: $(fingerprint smtpd)"; return 1; }
}

# ---- 4. PostgreSQL restarted under load -------------------------------------------------
item_postgres() {
    before=$(fingerprint smtpd)
    out=$LOGDIR/load.txt
    : >"$out"
    prefix=load-$RUN
    "$PYTHON" "$LOGDIR/smtpc.py" load "$out" "$LOAD" "$WORKERS" "$PACE" "$MX_PORT/$SUB_PORT" "$INBOX_USER" "$SENDER" "$PASSWORD" \
        "$OUTSIDE" "$prefix" >"$LOGDIR/load.log" 2>&1 &
    load_pid=$!
    LOAD_PID=$load_pid
    step "   $LOAD messages of 64 KB, MX and submission, from $WORKERS clients at once (each ${PACE}s between two), through the balancer"
    quarter=$((LOAD / 4))
    deadline=$(($(date +%s) + 60))
    while [ "$(wc -l <"$out")" -lt "$quarter" ]; do
        kill -0 "$load_pid" 2>/dev/null || break
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.2
    done
    at=$(wc -l <"$out")
    t=$(date +%s)
    compose restart postgres >>"$LOGDIR/postgres.log" 2>&1 || bad "compose restart postgres failed"
    step "   compose restart postgres after message $at: took $(($(date +%s) - t))s"
    wait_healthy 90 postgres || { wait "$load_pid" || true; return 1; }
    wait "$load_pid" || { bad "the load client failed: $(tail -n 5 "$LOGDIR/load.log")"; return 1; }
    step "   postgres healthy again; the loop ended ($(wc -l <"$out") messages sent)"

    [ "$(wc -l <"$out")" = "$LOAD" ] || { bad "$(wc -l <"$out") of $LOAD messages tried"; return 1; }
    ok=$(awk '$5 == 250' "$out" | wc -l)
    temp=$(awk '$5 >= 400 && $5 < 500' "$out" | wc -l)
    other=$(awk '$5 != 250 && !($5 >= 400 && $5 < 500)' "$out")
    codes=$(awk '$5 != 250 { $1 = $2 = $3 = $4 = ""; $6 = ""; print }' "$out" | sed 's/^ *//' |
        sed 's/  */ /g' | sort | uniq -c | sed 's/^ */      /')
    step "   $ok acknowledged with 250, $temp temporary failures$([ -n "$codes" ] && printf '\n%s' "$codes")"
    rc=0
    [ -z "$other" ] || { bad "replies other than 250 and 4xx:"; echo "$other" >&2; rc=1; }
    # Replies in the order they came: how many of those after the restart began were 250.
    late=$(awk -v at="$at" 'NR > at' "$out" | wc -l)
    late_ok=$(awk -v at="$at" 'NR > at && $5 == 250' "$out" | wc -l)
    [ "$ok" -gt 0 ] || { bad "nothing was accepted"; return 1; }

    # Every acknowledged queue id: in a mailbox (its Received header) or in the queue, once.
    qids=$(awk '$5 == 250 { printf "%s\x27%s\x27", (n++ ? "," : ""), $6 }' "$out")
    missing=$(sql "SELECT q.id || ' ' || ((SELECT count(*) FROM messages m
                            WHERE position(convert_to(' id ' || q.id, 'UTF8') IN m.raw) > 0)
                        + (SELECT count(*) FROM outbound_queue o WHERE o.queue_id = q.id))
                   FROM unnest(ARRAY[$qids]) AS q(id)" | awk '$2 != 1')
    if [ -n "$missing" ]; then
        bad "acknowledged queue ids not stored exactly once (queue id, copies):"
        echo "$missing" >&2
        rc=1
    else
        inbox=$(awk '$5 == 250 && $2 == "mx"' "$out" | wc -l)
        step "   all $ok acknowledged messages stored once: $inbox in $INBOX_USER's INBOX, $((ok - inbox)) in the outbound queue"
    fi
    # For the record: a message answered 4xx should not be there (the client sends it again).
    dup=0
    for tok in $(awk '$5 != 250 { print $4 }' "$out"); do
        [ "$(stored "$INBOX_USER" "$tok")" = 0 ] || dup=$((dup + 1))
    done
    [ "$dup" = 0 ] || step "   note: $dup message(s) answered 4xx were stored anyway (a retry would duplicate them)"

    [ "$(fingerprint smtpd)" = "$before" ] || { bad "an smtpd replica restarted: $(fingerprint smtpd)"; rc=1; }
    # Both kinds of mail are taken again (a client retrying), within a deadline; which
    # replicas took the loop's messages, from their logs.
    spread=$(per_replica "message accepted")
    t=$(date +%s)
    deadline=$((t + 90))
    i=1
    while [ "$i" -le "$REPLICAS" ]; do
        r=$(send_until_accepted "$deadline" "$MX_PORT" mx "" "" someone@outside.example "$INBOX_USER" "after-$RUN-$i") || {
            bad "MX message $i after the restart: $(said "$r")"
            return 1
        }
        r=$(send_until_accepted "$deadline" "$SUB_PORT" sub "$SENDER" "$PASSWORD" "$SENDER" "$OUTSIDE" "after-sub-$RUN-$i") || {
            bad "submission $i after the restart: $(said "$r")"
            return 1
        }
        i=$((i + 1))
    done
    step "   MX and submitted mail accepted again ($late_ok of the $late replies in the loop after the restart began were 250; messages accepted so far per replica: $spread)"
    [ "$(fingerprint smtpd)" = "$before" ] || { bad "an smtpd replica restarted: $(fingerprint smtpd)"; rc=1; }
    # shellcheck disable=SC2086
    wait_healthy 60 postgres nats $SERVICES || rc=1
    step "   every service healthy again"
    return "$rc"
}

# ---- 5. the balancer: real client addresses, a replica stopped ---------------------------
# The balancer's replicas of smtpd's MX backend that its checks find UP (its stats page).
lb_up() {
    docker exec "$(ids lb)" wget -q -O- 'http://127.0.0.1:8404/stats;csv' 2>/dev/null |
        awk -F, '$1 == "smtpd-smtp" && $2 != "BACKEND" && $2 != "FRONTEND" && $18 == "UP"' | wc -l
}

# A client inside the project's network (a container of the postern image, bash's /dev/tcp):
# prints its own address and the greeting it got through the balancer's MX listener.
inside_client() {
    docker run --rm --network "$NET" --entrypoint bash "${POSTERN_IMAGE:-postern:latest}" -c '
        exec 3<>/dev/tcp/lb/2525 || exit 1
        IFS= read -r greeting <&3
        printf "QUIT\r\n" >&3
        IFS= read -r bye <&3
        printf "%s %s\n" "$(hostname -i | cut -d" " -f1)" "$greeting" | tr -d "\r"' 2>>"$LOGDIR/balancer.log"
}

item_balancer() {
    lb=$(ids lb)
    NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$lb" | cut -d' ' -f1)
    lb_ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$lb")
    gw=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").Gateway}}" "$lb")
    [ -n "$lb_ip" ] && [ -n "$gw" ] || { bad "no address for the balancer in network $NET"; return 1; }
    # A client in the network: smtpd knows it by its own address, from the PROXY v2 header.
    r=$(inside_client) || { bad "a client in $NET could not reach lb:2525: $r"; return 1; }
    cip=${r%% *}
    case $r in *" 220 "*) ;; *) bad "the client in $NET got: $r"; return 1 ;; esac
    found=""
    for id in $(replicas smtpd); do
        docker logs "$id" 2>&1 | grep -qE "client address from PROXY header.* proxy=$lb_ip client=$cip( |\$)" &&
            found=$id
    done
    [ -n "$found" ] || { bad "no smtpd replica logged client=$cip from the PROXY header of $lb_ip"; return 1; }
    step "   a client at $cip in $NET, through the balancer ($lb_ip): smtpd logged client=$cip (PROXY v2)"

    # Failed logins through the balancer block the address it saw (this host's, the gateway
    # $gw), not the balancer's: the client in the network is still greeted.
    mailctl harvest set --service smtp --max-failures 2 --interval 600 --block 120 ||
        { bad "mailctl harvest set"; return 1; }
    deadline=$(($(date +%s) + 60)) k=0
    while :; do
        # A different wrong password each time (one repeated unchanged may count once).
        r=$(smtpc send "$SUB_PORT" sub "$SENDER" "wrong-$k-$PASSWORD" "$SENDER" "$OUTSIDE" "harvest-$RUN-$k")
        echo "failed login $k: $r" >>"$LOGDIR/balancer.log"
        case $r in
            [45][0-9][0-9]" "*blocked*) blocked=$r; break ;;
            "535 "*) ;;
            *) bad "a wrong password through the balancer: $(said "$r") (want 535, then blocked)"; return 1 ;;
        esac
        [ "$(date +%s)" -lt "$deadline" ] || { bad "no block after $k failed logins"; return 1; }
        k=$((k + 1))
    done
    case $blocked in
        *"address $gw is blocked"*) ;;
        *) bad "the block is not on $gw: $(said "$blocked")"; return 1 ;;
    esac
    compose run --rm -T mailctl harvest blocks >"$LOGDIR/blocks.txt" 2>>"$LOGDIR/balancer.log"
    grep -qF "$gw" "$LOGDIR/blocks.txt" && ! grep -qwF "$lb_ip" "$LOGDIR/blocks.txt" || {
        bad "harvest blocks does not list $gw alone: $(cat "$LOGDIR/blocks.txt")"
        return 1
    }
    r=$(inside_client)
    case $r in *" 220 "*) ;; *) bad "the client at $cip, not blocked, got: $r"; return 1 ;; esac
    step "   after $k failed logins: $gw blocked ($(said "$blocked" | cut -d' ' -f1-2) at connect; mailctl harvest blocks), not $lb_ip: the client at $cip is still greeted"
    mailctl harvest unblock "$gw" || { bad "mailctl harvest unblock $gw"; return 1; }
    r=$(send_until_accepted "$(($(date +%s) + 30))" "$MX_PORT" mx "" "" someone@outside.example "$INBOX_USER" "unblocked-$RUN") || {
        bad "after the unblock: $(said "$r")"
        return 1
    }
    step "   unblocked: mail from $gw accepted again"

    # One replica stopped under a stream of messages: it drains and leaves the rotation.
    [ "$(lb_up)" = "$REPLICAS" ] || { bad "the balancer has $(lb_up) smtpd replicas UP, not $REPLICAS"; return 1; }
    victim=$(replicas smtpd | head -n 1)
    out=$LOGDIR/stop.txt
    : >"$out"
    "$PYTHON" "$LOGDIR/smtpc.py" load "$out" 24 1 0.2 "$MX_PORT/$SUB_PORT" "$INBOX_USER" "$SENDER" "$PASSWORD" \
        "$OUTSIDE" "stop-$RUN" >"$LOGDIR/stop.log" 2>&1 &
    LOAD_PID=$!
    deadline=$(($(date +%s) + 30))
    while [ "$(wc -l <"$out")" -lt 4 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    t=$(date +%s)
    docker stop "$victim" >>"$LOGDIR/balancer.log" 2>&1 || { bad "docker stop $victim"; return 1; }
    at=$(wc -l <"$out")
    stopped_in=$(($(date +%s) - t))
    while [ "$(lb_up)" != "$((REPLICAS - 1))" ]; do
        [ "$(($(date +%s) - t))" -lt 20 ] || { bad "the stopped replica is still in rotation 20 s on ($(lb_up) UP)"; return 1; }
        sleep 0.5
    done
    out_in=$(($(date +%s) - t))
    wait "$LOAD_PID" || { bad "the load client failed: $(tail -n 5 "$LOGDIR/stop.log")"; return 1; }
    LOAD_PID=""
    during=$(awk -v at="$at" 'NR <= at && $5 != 250' "$out" | wc -l)
    after=$(awk -v at="$at" 'NR > at' "$out" | wc -l)
    after_bad=$(awk -v at="$at" 'NR > at && $5 != 250' "$out")
    step "   docker stop of replica 1 took ${stopped_in}s, out of the rotation ${out_in}s after the stop began; messages before the stop returned: $((at - during)) of $at 250"
    [ -z "$(awk '$5 >= 500' "$out")" ] || { bad "permanent refusals: $(awk '$5 >= 500' "$out")"; return 1; }
    [ "$after" -gt 0 ] && [ -z "$after_bad" ] || {
        bad "after the stop, not every message got 250 ($after sent):"
        echo "$after_bad" >&2
        return 1
    }
    step "   after the stop: all $after messages 250, from the other replicas"
    docker start "$victim" >>"$LOGDIR/balancer.log" 2>&1 || { bad "docker start $victim"; return 1; }
    wait_healthy 60 smtpd || return 1
    t=$(date +%s) k=0
    until docker logs --since "$t" "$victim" 2>&1 | grep -q "message accepted"; do
        [ "$(($(date +%s) - t))" -lt 30 ] || { bad "the started replica took no message in 30 s ($(lb_up) UP)"; return 1; }
        r=$(smtpc send "$MX_PORT" mx "" "" someone@outside.example "$INBOX_USER" "back-$RUN-$k")
        [ "${r%% *}" = 250 ] || { bad "while replica 1 comes back: $(said "$r")"; return 1; }
        k=$((k + 1))
    done
    step "   started again: back in the rotation, it took message $k of those sent $(($(date +%s) - t))s after it was healthy"
}

for item in $ITEMS; do
    case $item in
        hamr) title="1. HAMR: $HAMR_USER limited to $HAMR_MAX per 300 s across $REPLICAS smtpd replicas" ;;
        failover) title="2. the answering limiter killed: the other takes over, $FAILOVER_MAX accepted in all, then 451" ;;
        limiter) title="3. every limiter killed: 451 4.7.1, nothing lost, smtpd up; started again: mail flows" ;;
        postgres) title="4. PostgreSQL restarted under load: every 250 is stored, failures only 4xx" ;;
        balancer) title="5. the balancer: clients known by their own address; a stopped replica leaves the rotation" ;;
    esac
    step "$title"
    if "item_$item"; then
        PASSED=$((PASSED + 1))
        step "PASS $title"
    else
        FAILED=$((FAILED + 1))
        bad "$title"
    fi
    DONE="$DONE $item"
done
[ "$FAILED" -eq 0 ]
