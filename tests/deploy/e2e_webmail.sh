#!/bin/sh
# The webmail (Roundcube, docker-compose.yml's profile `webmail`) end to end: builds the
# images as e2e_docker.sh does (deploy/docker/build-base.sh also builds postern-webmail),
# starts the compose stack with `--profile webmail` under a project of its own (every port
# on 127.0.0.1, picked by the engine), waits until it is healthy, adds a domain and two users
# with the mailctl service, delivers a message to the first through smtpd (swaks, the MX
# port), checks that Roundcube's TLS settings accept imapd's and smtpd's certificate for the
# stack's name and refuse it for another, then drives Roundcube in a headless Chromium
# (tests/deploy/webmail_browser.py: HTTPS and TLS versions, log in, open the message, write
# to the second user and send, and find that message over IMAPS), and removes the stack.
# Screenshots of every step and the containers' logs go to build/test-artifacts/webmail/.
#
# Environment:
#   COMPOSE            the compose command (default: `docker compose`, else `docker-compose`)
#   E2E_PROJECT        compose project name (default postern-webmail)
#   E2E_TIMEOUT        seconds to wait for the stack to be healthy (default 180)
#   E2E_NO_BUILD=1     use the images as they are
#   E2E_KEEP=1         leave the stack running afterwards (remove it with the printed command)
#   WEBMAIL_ARTIFACTS  where screenshots and logs go (default build/test-artifacts/webmail)
#   POSTERN_BASE_IMAGE, POSTGRES_IMAGE, NATS_IMAGE   registry images instead of the
#                      offline ones (then build-base.sh is not run)
set -eu

cd "$(dirname "$0")/../.."
PROJECT=${E2E_PROJECT:-postern-webmail}
TIMEOUT=${E2E_TIMEOUT:-180}
PYTHON=/usr/bin/python3
T0=$(date +%s)
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/postern-e2e-webmail.XXXXXX")
ARTIFACTS=${WEBMAIL_ARTIFACTS:-$(pwd)/build/test-artifacts/webmail}

. tests/deploy/common.sh
pick_compose
for tool in swaks "$PYTHON" /usr/bin/chromium /usr/bin/chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (make deps)"
done
"$PYTHON" -c 'import selenium' 2>/dev/null || fail "python3-selenium is not installed (make deps)"

compose() {
    # shellcheck disable=SC2086
    $COMPOSE --profile webmail -p "$PROJECT" -f docker-compose.yml "$@"
}

# Host port 0: the engine picks free ports; `compose port` says which.
export POSTERN_HOST_IP=127.0.0.1 SMTP_HOST_PORT=0 SUBMISSION_HOST_PORT=0 SMTPS_HOST_PORT=0 \
    POP3_HOST_PORT=0 POP3S_HOST_PORT=0 IMAP_HOST_PORT=0 IMAPS_HOST_PORT=0 WEBMAIL_HOST_PORT=0 \
    WEB_HOST_PORT=0
# Not "localhost": Roundcube reaches imapd and smtpd through the balancer (`lb`) and must
# check their certificate for this name (WEBMAIL_TLS_NAME).
export SMTP_HOSTNAME=mail.webmail.test
DOMAIN=webmail.test
ALICE=alice@$DOMAIN
BOB=bob@$DOMAIN
ALICE_PW=alice-$(date +%s)-pw
BOB_PW=bob-$(date +%s)-pw
TOKEN=webmail-$$-$(date +%s)

finish() {
    status=$?
    trap - EXIT INT TERM
    [ "$status" -eq 0 ] || show_stack 25
    if [ -n "$(compose ps -q 2>/dev/null)" ]; then
        compose logs --no-color >"$ARTIFACTS/compose.log" 2>&1 || true
    fi
    remove_stack
    if [ "$status" -eq 0 ]; then
        rm -rf "$LOGDIR"
        step "e2e-webmail passed (screenshots in $ARTIFACTS)"
        echo "1 passed, 0 failed"
    else
        echo "== logs kept in $LOGDIR; screenshots and the stack's logs in $ARTIFACTS"
        echo "0 passed, 1 failed"
    fi
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
# Leftovers of an interrupted run under the same project name.
compose down -v --remove-orphans >/dev/null 2>&1 || true

# ---- images -----------------------------------------------------------------------------
if [ "${E2E_NO_BUILD:-0}" != 1 ]; then
    build_images
    if [ -n "${POSTERN_BASE_IMAGE:-}" ]; then
        build_one "${WEBMAIL_IMAGE:-postern-webmail:latest}" deploy/docker/webmail webmail
    fi
fi

# No key in the image: every des_key assignment left in it is Roundcube's well-known sample
# (defaults.inc.php, config.inc.php.sample), which config.inc.php overrides.
IMAGE=${WEBMAIL_IMAGE:-postern-webmail:latest}
keys=$(docker run --rm --user 0 --entrypoint grep "$IMAGE" -rhE "des_key'\]\s*=\s*'" \
    /etc /var/lib /usr/share/roundcube /usr/local 2>/dev/null |
    grep -vF "'rcmail-!24ByteDESkey*Str'" || true)
[ -z "$keys" ] || fail "$IMAGE holds a Roundcube key: $keys"
step "$IMAGE holds no Roundcube key"

# ---- up ---------------------------------------------------------------------------------
step "compose --profile webmail up (project $PROJECT, $COMPOSE)"
# shellcheck disable=SC2086
timeout 300 $COMPOSE --profile webmail -p "$PROJECT" -f docker-compose.yml up -d --no-build \
    >"$LOGDIR/up.log" 2>&1 || {
    cat "$LOGDIR/up.log"
    fail "compose up"
}
step "waiting for healthy: postgres nats smtpd imapd limiter lb webmail (at most ${TIMEOUT}s)"
wait_healthy "$TIMEOUT" postgres nats smtpd imapd limiter lb webmail || exit 1

hostport() { # hostport SERVICE PORT: the published port on 127.0.0.1
    p=$(compose port "$1" "$2" | tail -n 1)
    [ -n "$p" ] || fail "$1 publishes no port for $2"
    echo "${p##*:}"
}
# The mail ports are the balancer's.
SMTP=$(hostport lb 2525)
IMAPS=$(hostport lb 2993)
WEB=$(hostport webmail 8443)
step "healthy: SMTP 127.0.0.1:$SMTP, IMAPS :$IMAPS, webmail https://127.0.0.1:$WEB/"

# ---- administer -------------------------------------------------------------------------
step "mailctl (compose run): domain add $DOMAIN, user add $ALICE and $BOB"
{
    compose run --rm -T mailctl domain add "$DOMAIN" &&
        printf '%s\n' "$ALICE_PW" | compose run --rm -T mailctl user add "$ALICE" --password-stdin &&
        printf '%s\n' "$BOB_PW" | compose run --rm -T mailctl user add "$BOB" --password-stdin
} >"$LOGDIR/mailctl.log" 2>&1 || {
    cat "$LOGDIR/mailctl.log"
    fail "mailctl"
}

# ---- a message for alice, through smtpd ---------------------------------------------------
SUBJECT="Webmail test $TOKEN"
BODY="Delivered through smtpd: $TOKEN"
step "swaks -> 127.0.0.1:$SMTP (MX) to $ALICE: '$SUBJECT'"
i=0
# The domain reaches smtpd over the bus (config.changed); it may take a moment.
until swaks --server "127.0.0.1:$SMTP" --helo client.example.org --from someone@example.org \
    --to "$ALICE" --header "Subject: $SUBJECT" --body "$BODY" >"$LOGDIR/swaks.log" 2>&1; do
    i=$((i + 1))
    [ "$i" -lt 15 ] || {
        cat "$LOGDIR/swaks.log"
        fail "smtpd did not accept the message"
    }
    sleep 1
done

# ---- Roundcube's TLS settings: imapd's and smtpd's certificate checked --------------------
# PHP in the webmail container, with the very options Roundcube's configuration builds:
# IMAPS to imapd and STARTTLS on smtpd's submission port succeed for the stack's name and
# fail for another (the certificate really is checked).
tls_probe() { # tls_probe NAME: prints "imap=ok|fail smtp=ok|fail"
    compose exec -T -e WEBMAIL_TLS_NAME="$1" webmail php -r '
        $config = [];
        include "/etc/roundcube/config.inc.php";
        $imap = parse_url($config["imap_host"]);
        $smtp = parse_url($config["smtp_host"]);
        $ctx = stream_context_create($config["imap_conn_options"]);
        $s = @stream_socket_client("ssl://" . $imap["host"] . ":" . $imap["port"], $en, $es, 10,
                                   STREAM_CLIENT_CONNECT, $ctx);
        $imap_ok = $s && str_contains((string) fgets($s), "* OK");
        $ctx = stream_context_create($config["smtp_conn_options"]);
        $s = @stream_socket_client("tcp://" . $smtp["host"] . ":" . $smtp["port"], $en, $es, 10,
                                   STREAM_CLIENT_CONNECT, $ctx);
        $smtp_ok = false;
        if ($s) {
            fgets($s);
            fwrite($s, "EHLO webmail\r\n");
            while (($l = fgets($s)) !== false && $l[3] === "-");
            fwrite($s, "STARTTLS\r\n");
            $smtp_ok = str_starts_with((string) fgets($s), "220")
                && @stream_socket_enable_crypto($s, true, STREAM_CRYPTO_METHOD_TLSv1_2_CLIENT | STREAM_CRYPTO_METHOD_TLSv1_3_CLIENT) === true;
        }
        echo "imap=", $imap_ok ? "ok" : "fail", " smtp=", $smtp_ok ? "ok" : "fail", "\n";
    ' 2>&1
}
good=$(tls_probe "$SMTP_HOSTNAME")
wrong=$(tls_probe wrong.example)
step "Roundcube's TLS options: for $SMTP_HOSTNAME: $good; for wrong.example: $wrong"
[ "$good" = "imap=ok smtp=ok" ] || fail "Roundcube cannot reach imapd and smtpd over TLS ($good)"
[ "$wrong" = "imap=fail smtp=fail" ] || fail "a certificate for another name was accepted ($wrong)"

# ---- the browser --------------------------------------------------------------------------
compose exec -T webmail cat /etc/postern/tls/cert.pem >"$LOGDIR/ca.pem" ||
    fail "reading the stack's certificate"
step "headless Chromium: https://127.0.0.1:$WEB/ as $ALICE, the message, a reply to $BOB"
timeout 300 "$PYTHON" tests/deploy/webmail_browser.py --url "https://127.0.0.1:$WEB/" \
    --tls-name "$SMTP_HOSTNAME" --ca "$LOGDIR/ca.pem" --user "$ALICE" --password "$ALICE_PW" \
    --subject "$SUBJECT" --body "$BODY" --to "$BOB" --to-password "$BOB_PW" \
    --imaps-port "$IMAPS" --artifacts "$ARTIFACTS" || fail "the webmail in the browser"

# Roundcube logged the login and the message it sent (its log driver: the container's output).
compose logs --no-color webmail >"$LOGDIR/webmail.log" 2>&1
grep -q "Successful login for $ALICE" "$LOGDIR/webmail.log" ||
    fail "Roundcube logged no successful login for $ALICE"
grep -q "User $ALICE \[.*\]; Message .* for $BOB; 250" "$LOGDIR/webmail.log" ||
    fail "Roundcube logged no message sent to $BOB"
step "Roundcube logged the login and the message sent to $BOB"
