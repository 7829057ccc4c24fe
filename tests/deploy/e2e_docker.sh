#!/bin/sh
# `make e2e-docker`: Postern in containers, end to end, with real clients on the published
# ports. Builds the base images (deploy/docker/build-base.sh, offline) and the postern image,
# starts docker-compose.yml under a project of its own on free host ports (the mail ports are
# the load balancer's, `lb`, in front of smtpd, pop3d and imapd), waits until every service is
# healthy, adds a domain and a user with the mailctl service, sends mail through the
# published SMTP port (swaks) and finds it in PostgreSQL, submits authenticated mail over
# STARTTLS and finds it queued, reads the mailbox over POP3S (when pop3d is in the image)
# and over IMAPS (when imapd is), runs the end-to-end suite (tests/e2e) against the
# published ports, then the fault matrix (tests/faults: every container killed, restarted and
# paused under load), then removes the project with its volumes. The suite's own clients reach
# PostgreSQL and NATS on loopback ports that tests/deploy/compose.e2e.yml publishes, and use
# mailctl from $POSTERN_BIN (default build/bin: build it first, `make`).
#
# Environment:
#   COMPOSE            the compose command (default: `docker compose`, else `docker-compose`)
#   E2E_PROJECT        compose project name (default postern-e2e)
#   E2E_TIMEOUT        seconds to wait for the stack to be healthy (default 180)
#   E2E_KEEP=1         leave the stack running afterwards (remove it with the printed command)
#   E2E_SUITE=0       leave out the end-to-end suite (the checks above only)
#   E2E_FAULTS=0       leave out the fault matrix (tests/faults) that follows the suite
#   POSTERN_BASE_IMAGE, POSTGRES_IMAGE, NATS_IMAGE   registry images instead of the
#                      offline ones (then build-base.sh is not run)
set -eu

cd "$(dirname "$0")/../.."
PROJECT=${E2E_PROJECT:-postern-e2e}
TIMEOUT=${E2E_TIMEOUT:-180}
PYTHON=/usr/bin/python3
T0=$(date +%s)
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/postern-e2e-docker.XXXXXX")

. tests/deploy/common.sh
pick_compose
for tool in swaks "$PYTHON"; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (make deps)"
done

COMPOSE_FILES=docker-compose.yml:tests/deploy/compose.e2e.yml
compose() {
    # shellcheck disable=SC2086
    $COMPOSE -p "$PROJECT" -f docker-compose.yml -f tests/deploy/compose.e2e.yml "$@"
}

# Free host ports for the mail listeners, PostgreSQL and NATS, so the test runs beside
# anything else (picked as the suite picks its own: below the ephemeral range).
set -- $(cd tests/e2e && "$PYTHON" -c 'import support; print(*support.free_ports(10))')
[ "$#" -eq 10 ] || fail "could not pick free ports"
export POSTERN_HOST_IP=127.0.0.1 SMTP_HOST_PORT=$1 SUBMISSION_HOST_PORT=$2 SMTPS_HOST_PORT=$3 \
    POP3_HOST_PORT=$4 POP3S_HOST_PORT=$5 PG_HOST_PORT=$6 NATS_HOST_PORT=$7 \
    IMAP_HOST_PORT=$8 IMAPS_HOST_PORT=$9 WEB_HOST_PORT=${10}
# The greeting name the suite expects (tests/e2e/support.py).
export SMTP_HOSTNAME=mx.test.example
# Not the suite's domain: it adds its own.
DOMAIN=compose.test
USER=carol@$DOMAIN
PASSWORD=e2e-$(date +%s)-pw
TOKEN=postern-e2e-$$-$(date +%s)

finish() {
    status=$?
    trap - EXIT INT TERM
    [ "$status" -eq 0 ] || show_stack 25
    remove_stack
    if [ "$status" -eq 0 ]; then
        rm -rf "$LOGDIR"
        step "e2e-docker passed"
        echo "1 passed, 0 failed"
    else
        echo "== logs kept in $LOGDIR"
        echo "0 passed, 1 failed"
    fi
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted run under the same project name.
compose down -v --remove-orphans >/dev/null 2>&1 || true

# ---- images -----------------------------------------------------------------------------
build_images
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^postern(-[a-z]+)?:' | sed 's/^/   /' || true

# ---- up ---------------------------------------------------------------------------------
step "compose up (project $PROJECT, SMTP 127.0.0.1:$SMTP_HOST_PORT, submission :$SUBMISSION_HOST_PORT, POP3S :$POP3S_HOST_PORT, IMAPS :$IMAPS_HOST_PORT)"
# shellcheck disable=SC2086
timeout 300 $COMPOSE -p "$PROJECT" -f docker-compose.yml -f tests/deploy/compose.e2e.yml \
    up -d --no-build >"$LOGDIR/up.log" 2>&1 || {
    cat "$LOGDIR/up.log"
    fail "compose up"
}

# The long-running services in the file; each must report healthy (its /readyz says 200).
SERVICES=$(compose config --services | grep -vxE 'postgres|nats|certs|nats-secrets|migrate|mailctl|webmail' | tr '\n' ' ')
step "waiting for healthy: postgres nats $SERVICES(at most ${TIMEOUT}s)"
# shellcheck disable=SC2086
wait_healthy "$TIMEOUT" postgres nats $SERVICES || exit 1
step "healthy"

for job in certs migrate; do
    id=$(compose ps -a -q "$job" 2>/dev/null || compose ps -q "$job")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || fail "$job exited with $code"
done
compose logs --no-color migrate >"$LOGDIR/migrate.log" 2>&1
grep -q 'docker compose run --rm mailctl domain add' "$LOGDIR/migrate.log" ||
    fail "migrate printed no first-run message (log: $LOGDIR/migrate.log)"
step "migrate printed the first-run message"

# ---- administer -------------------------------------------------------------------------
step "mailctl (compose run): domain add $DOMAIN, user add $USER"
compose run --rm -T mailctl domain add "$DOMAIN" >"$LOGDIR/mailctl.log" 2>&1 || {
    cat "$LOGDIR/mailctl.log"
    fail "mailctl domain add"
}
printf '%s\n' "$PASSWORD" | compose run --rm -T mailctl user add "$USER" --password-stdin \
    >>"$LOGDIR/mailctl.log" 2>&1 || {
    cat "$LOGDIR/mailctl.log"
    fail "mailctl user add"
}
# Mail for example.org goes to a port where nothing listens: relayd tries it, defers it, and
# it stays queued (the stack has no way out to the Internet anyway).
# mailctl logged in to the bus (TLS, its own user) and announced each change.
if grep -q "could not be announced" "$LOGDIR/mailctl.log"; then
    cat "$LOGDIR/mailctl.log"
    fail "mailctl could not announce its changes on the bus"
fi

step "mailctl (compose run): transport set example.org 127.0.0.1:9"
compose run --rm -T mailctl transport set example.org 127.0.0.1:9 >>"$LOGDIR/mailctl.log" 2>&1 || {
    cat "$LOGDIR/mailctl.log"
    fail "mailctl transport set"
}

sql() {
    compose exec -T postgres psql -X -q -At -U postern -d postern -c "$1"
}

# The domain reaches smtpd over the bus (config.changed); it may take a moment.
swaks_mx() {
    swaks --server "127.0.0.1:$SMTP_HOST_PORT" --helo client.example.org \
        --from someone@example.org --to "$USER" \
        --header "Subject: docker $TOKEN" --body "through the published port: $TOKEN" \
        >"$LOGDIR/swaks-mx.log" 2>&1
}

# ---- mail -------------------------------------------------------------------------------
step "swaks -> 127.0.0.1:$SMTP_HOST_PORT (MX) to $USER"
i=0
until swaks_mx; do
    i=$((i + 1))
    [ "$i" -lt 10 ] || {
        cat "$LOGDIR/swaks-mx.log"
        fail "smtpd did not accept the message"
    }
    sleep 1
done
grep -q '<-  250 .*queued as' "$LOGDIR/swaks-mx.log" || {
    cat "$LOGDIR/swaks-mx.log"
    fail "no 250 after DATA"
}
n=$(sql "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
         JOIN users u ON u.id = b.user_id
         WHERE u.address = '$USER' AND b.name = 'INBOX'
           AND position('$TOKEN'::bytea IN m.raw) > 0")
[ "$n" = 1 ] || fail "the message is not in $USER's INBOX (found $n)"
step "stored in $USER's INBOX"

# Through the balancer: smtpd took the client's address from its PROXY v2 header, and that is
# the address the balancer saw (this host's, through the published port: the network's
# gateway), not the balancer's own.
LB=$(compose ps -q lb)
GW=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}' "$LB" | cut -d' ' -f1)
LB_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$LB" | cut -d' ' -f1)
compose logs --no-color smtpd 2>&1 | grep -E "client address from PROXY header.* proxy=$LB_IP client=$GW( |\$)" >/dev/null ||
    fail "smtpd logged no client=$GW from the PROXY header of the balancer ($LB_IP)"
step "smtpd knows the client as $GW (PROXY v2 from the balancer at $LB_IP)"

step "swaks -> 127.0.0.1:$SUBMISSION_HOST_PORT (submission, STARTTLS, AUTH PLAIN) to someone@example.org"
swaks --server "127.0.0.1:$SUBMISSION_HOST_PORT" -tls --auth PLAIN --auth-user "$USER" \
    --auth-password "$PASSWORD" --from "$USER" --to someone@example.org \
    --header "Subject: relay $TOKEN" --body "submitted: $TOKEN" >"$LOGDIR/swaks-sub.log" 2>&1 || {
    cat "$LOGDIR/swaks-sub.log"
    fail "submission was refused"
}
n=$(sql "SELECT count(*) FROM outbound_queue WHERE position('submitted: $TOKEN'::bytea IN raw) > 0")
[ "$n" = 1 ] || fail "the submitted message is not in the outbound queue (found $n)"
step "queued for relaying"
i=0
until compose logs --no-color relayd 2>&1 | grep 'msg="deferred"' | grep -q 'rcpt=someone@example.org'; do
    i=$((i + 1))
    [ "$i" -lt 60 ] || fail "relayd made no delivery attempt for the queued message"
    sleep 1
done
n=$(sql "SELECT count(*) FROM outbound_queue WHERE position('submitted: $TOKEN'::bytea IN raw) > 0 AND attempts >= 1")
[ "$n" = 1 ] || fail "the deferred message is not in the outbound queue (found $n)"
step "relayd tried it (connection refused at the transport) and keeps it queued"

if echo " $SERVICES " | grep -q ' pop3d '; then
    step "POP3S 127.0.0.1:$POP3S_HOST_PORT: $USER reads the message"
    "$PYTHON" - "$POP3S_HOST_PORT" "$USER" "$PASSWORD" "$TOKEN" <<'EOF' || fail "POP3S retrieval"
import poplib, ssl, sys
port, user, password, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE   # the stack's self-signed certificate
p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
p.user(user)
p.pass_(password)
count, _ = p.stat()
found = any(token.encode() in b"\n".join(p.retr(i)[1]) for i in range(1, count + 1))
p.quit()
if not found:
    sys.exit(f"token not among {count} messages")
print(f"   {count} message(s), the token is there")
EOF
fi

if echo " $SERVICES " | grep -q ' imapd '; then
    step "IMAPS 127.0.0.1:$IMAPS_HOST_PORT: $USER reads the message"
    "$PYTHON" - "$IMAPS_HOST_PORT" "$USER" "$PASSWORD" "$TOKEN" <<'EOF' || fail "IMAPS retrieval"
import imaplib, ssl, sys
port, user, password, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE   # the stack's self-signed certificate
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=30)
if b"Postern IMAP4rev1 server ready" not in m.welcome:
    sys.exit(f"unexpected greeting {m.welcome!r}")
m.login(user, password)
typ, data = m.select("INBOX", readonly=True)
if typ != "OK":
    sys.exit(f"SELECT INBOX: {typ} {data}")
count = int(data[0])
found = False
if count:
    typ, data = m.fetch(f"1:{count}", "(BODY.PEEK[])")
    if typ != "OK":
        sys.exit(f"FETCH: {typ} {data}")
    found = any(isinstance(part, tuple) and token.encode() in part[1] for part in data)
m.logout()
if not found:
    sys.exit(f"token not among {count} messages")
print(f"   {count} message(s), the token is there")
EOF
fi

# The README's first reads, with curl as written there (on this test's ports).
step "curl pop3s://localhost:$POP3S_HOST_PORT/1 and imaps://localhost:$IMAPS_HOST_PORT/INBOX;UID=1 (the README's)"
curl --insecure --user "$USER:$PASSWORD" "pop3s://localhost:$POP3S_HOST_PORT/1" >"$LOGDIR/curl-pop3.txt" 2>&1 &&
    grep -q "$TOKEN" "$LOGDIR/curl-pop3.txt" || { cat "$LOGDIR/curl-pop3.txt"; fail "curl pop3s"; }
curl --insecure --user "$USER:$PASSWORD" "imaps://localhost:$IMAPS_HOST_PORT/INBOX;UID=1" >"$LOGDIR/curl-imap.txt" 2>&1 &&
    grep -q "$TOKEN" "$LOGDIR/curl-imap.txt" || { cat "$LOGDIR/curl-imap.txt"; fail "curl imaps"; }

# webd: a console admin made with mailctl logs in over HTTPS on the published port and sees
# the domain made above.
step "webd https://127.0.0.1:$WEB_HOST_PORT: admin login, the domains"
printf 'compose-admin-pw\n' | compose run --rm -T mailctl admin add compose-admin --password-stdin \
    >>"$LOGDIR/mailctl.log" 2>&1 || { cat "$LOGDIR/mailctl.log"; fail "mailctl admin add"; }
"$PYTHON" - "$WEB_HOST_PORT" "$DOMAIN" <<'EOF' || fail "webd login over HTTPS"
import http.cookiejar, json, ssl, sys, time, urllib.error, urllib.request
port, domain = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE   # the stack's self-signed certificate
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                 urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
base = f"https://127.0.0.1:{port}"
login = urllib.request.Request(base + "/api/v1/login", method="POST",
                               data=json.dumps({"user": "compose-admin",
                                                "password": "compose-admin-pw"}).encode(),
                               headers={"Content-Type": "application/json"})
for attempt in range(60):   # webd may still be starting
    try:
        with op.open(login, timeout=10) as r:
            assert "csrf" in json.load(r)
        break
    except (OSError, urllib.error.URLError):
        time.sleep(1)
else:
    sys.exit("webd did not answer the login")
with op.open(base + "/api/v1/domains", timeout=10) as r:
    names = [d["name"] for d in json.load(r)["domains"]]
if domain not in names:
    sys.exit(f"{domain} not among {names}")
print(f"   logged in; domains: {', '.join(names)}")
EOF

# ---- the end-to-end suite ------------------------------------------------------------------
if [ "${E2E_SUITE:-1}" = 1 ]; then
    BIN=${POSTERN_BIN:-$(pwd)/build/bin}
    [ -x "$BIN/mailctl" ] || fail "$BIN/mailctl does not exist: build first (make)"
    # The suite looks at what smtpd and the notifier put in the outbound queue; relayd (its
    # own tests start relayd processes of their own) would take it away meanwhile.
    step "relayd stopped for the suite (it reads the outbound queue as smtpd leaves it)"
    compose stop relayd >>"$LOGDIR/compose.log" 2>&1 || fail "compose stop relayd"
    step "the end-to-end suite (tests/e2e) against the published ports"
    POSTERN_E2E_COMPOSE=$PROJECT POSTERN_E2E_COMPOSE_CMD=$COMPOSE \
        POSTERN_E2E_COMPOSE_FILES=$COMPOSE_FILES POSTERN_BIN=$BIN \
        "$PYTHON" -m pytest -q -p no:cacheprovider tests/e2e || fail "the end-to-end suite"
fi

# ---- the fault matrix ----------------------------------------------------------------------
if [ "${E2E_FAULTS:-1}" = 1 ]; then
    BIN=${POSTERN_BIN:-$(pwd)/build/bin}
    [ -x "$BIN/mailctl" ] || fail "$BIN/mailctl does not exist: build first (make)"
    # The suite stops the services it found when it ends; relayd too takes part here.
    step "every service started again for the fault matrix"
    # shellcheck disable=SC2086
    compose start $SERVICES >>"$LOGDIR/compose.log" 2>&1 || fail "compose start $SERVICES"
    # shellcheck disable=SC2086
    wait_healthy "$TIMEOUT" postgres nats $SERVICES || exit 1
    step "the fault matrix (tests/faults): docker kill, compose stop/start, docker pause of each container under load"
    POSTERN_E2E_COMPOSE=$PROJECT POSTERN_E2E_COMPOSE_CMD=$COMPOSE \
        POSTERN_E2E_COMPOSE_FILES=$COMPOSE_FILES POSTERN_BIN=$BIN \
        "$PYTHON" -m pytest -q -p no:cacheprovider tests/faults || fail "the fault matrix"
fi
