#!/bin/sh
# `make run`: a private PostgreSQL and nats-server under ./var, the schema, a self-signed
# certificate, a first domain and login, then every Postern service in the foreground.
# Ctrl-C stops everything. Ports and settings come from the environment:
#   SMTP_PORT=2525 SUBMISSION_PORT=2587 SMTPS_PORT=2465 POP3_PORT=2110 POP3S_PORT=2995
#   IMAP_PORT=2143 IMAPS_PORT=2993 WEB_PORT=2443
#   PG_PORT=25432 NATS_PORT=24222
#   POSTERN_DOMAIN=example.test LISTEN_ADDRESS=127.0.0.1 POSTERN_BIN=build/bin
#   POSTERN_VAR=./var (where PostgreSQL, nats-server, the certificate and the first login live)
#   WORKERS=auto (processes per front end: one per CPU; lib/svc/workers.h)
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR=${POSTERN_VAR:-$ROOT/var}
BIN=${POSTERN_BIN:-$ROOT/build/bin}
export SMTP_PORT=${SMTP_PORT:-2525}
export SUBMISSION_PORT=${SUBMISSION_PORT:-2587}
export SMTPS_PORT=${SMTPS_PORT:-2465}
export POP3_PORT=${POP3_PORT:-2110}
export POP3S_PORT=${POP3S_PORT:-2995}
export IMAP_PORT=${IMAP_PORT:-2143}
# One machine: each front end serves from one process per CPU (the back ends ignore it).
export WORKERS=${WORKERS:-auto}
export IMAPS_PORT=${IMAPS_PORT:-2993}
export WEB_PORT=${WEB_PORT:-2443}
export LISTEN_ADDRESS=${LISTEN_ADDRESS:-127.0.0.1}
PG_PORT=${PG_PORT:-25432}
NATS_PORT=${NATS_PORT:-24222}
DOMAIN=${POSTERN_DOMAIN:-example.test}

mkdir -p "$VAR"
# PostgreSQL runs as the postgres user when we are root; if that user cannot reach ./var
# (a checkout under a private home folder), its files live in a folder it can reach.
STACK=$VAR
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$VAR" 2>/dev/null; then
    STACK=/var/lib/postern-dev/$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
    mkdir -p "$STACK"
    chmod 755 /var/lib/postern-dev "$STACK"
fi
sh deploy/localstack.sh start "$STACK" "$PG_PORT" "$NATS_PORT" >/dev/null
[ "$STACK" = "$VAR" ] || cp "$STACK/postern.env" "$VAR/postern.env"
set -a
. "$VAR/postern.env"
set +a

# Stops the services, then PostgreSQL and nats-server, whatever has already ended (a Ctrl-C
# reaches the services too, and one may have exited on its own): nothing here may abort the
# stop, so errexit is off from its first line. Exits with the status given.
pids=""
ports=""
stop() {
    set +e
    trap - INT TERM EXIT
    echo
    echo "Stopping Postern..."
    for pid in $pids; do
        kill "$pid" 2>/dev/null
    done
    for pid in $pids; do
        wait "$pid" 2>/dev/null
    done
    sh deploy/localstack.sh stop "$STACK" >/dev/null
    echo "Stopped."
    exit "$1"
}
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

"$BIN/mailctl" migrate >/dev/null

if [ ! -f "$VAR/tls/cert.pem" ]; then
    mkdir -p "$VAR/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$VAR/tls/key.pem" -out "$VAR/tls/cert.pem" 2>/dev/null
    chmod 600 "$VAR/tls/key.pem"
fi
export TLS_CERT="$VAR/tls/cert.pem" TLS_KEY="$VAR/tls/key.pem"

if [ ! -f "$VAR/first-login" ]; then
    password=$(openssl rand -base64 12 | tr -d '/+=')
    "$BIN/mailctl" domain add "$DOMAIN" >/dev/null 2>&1 || true
    printf '%s\n' "$password" | "$BIN/mailctl" user add "postmaster@$DOMAIN" --password-stdin >/dev/null
    printf 'postmaster@%s %s\n' "$DOMAIN" "$password" > "$VAR/first-login"
    chmod 600 "$VAR/first-login"
fi
read -r login password < "$VAR/first-login"
# The first admin of the web console (webd), separate from mail users.
if [ ! -f "$VAR/first-admin" ]; then
    admin_password=$(openssl rand -base64 12 | tr -d '/+=')
    printf '%s\n' "$admin_password" | "$BIN/mailctl" admin add admin --role system --password-stdin >/dev/null
    printf 'admin %s\n' "$admin_password" > "$VAR/first-admin"
    chmod 600 "$VAR/first-admin"
fi
read -r admin admin_password < "$VAR/first-admin"

# Each service logs in to NATS as itself (deploy/nats-auth.sh: its own password and
# permissions), not as mailctl, whose credentials postern.env holds.
for svc in limiter notifier smtpd pop3d imapd relayd webd; do
    [ -x "$BIN/$svc" ] || continue
    creds=$(sh deploy/localstack.sh nats-env "$STACK" "$svc")
    env -u NATS_PASSWORD $creds "$BIN/$svc" &
    pids="$pids $!"
    case $svc in
        smtpd) ports="$ports $SMTP_PORT $SUBMISSION_PORT $SMTPS_PORT" ;;
        pop3d) ports="$ports $POP3_PORT $POP3S_PORT" ;;
        imapd) ports="$ports $IMAP_PORT $IMAPS_PORT" ;;
        webd) ports="$ports $WEB_PORT" ;;
    esac
done

# "Running" is said once every port listens: a client that follows the message at once is
# answered, not refused. A service that exits first, or 60 s of waiting, ends the run.
deadline=$(($(date +%s) + 60))
for port in $ports; do
    until ss -Hltn "sport = :$port" | grep -q .; do
        for pid in $pids; do
            kill -0 "$pid" 2>/dev/null || { echo "a service exited before listening" >&2; exit 1; }
        done
        [ "$(date +%s)" -lt "$deadline" ] || { echo "nothing listens on port $port after 60 s" >&2; exit 1; }
        sleep 0.1
    done
done

cat <<MSG

Postern is running (logs below; Ctrl-C stops everything).

  SMTP (MX)        $LISTEN_ADDRESS:$SMTP_PORT   STARTTLS
  Submission       $LISTEN_ADDRESS:$SUBMISSION_PORT   STARTTLS, AUTH required
  SMTPS            $LISTEN_ADDRESS:$SMTPS_PORT   implicit TLS, AUTH required
  POP3             $LISTEN_ADDRESS:$POP3_PORT   STLS (USER/PASS and AUTH inside TLS)
  POP3S            $LISTEN_ADDRESS:$POP3S_PORT   implicit TLS
  IMAP             $LISTEN_ADDRESS:$IMAP_PORT   STARTTLS (LOGIN and AUTHENTICATE inside TLS)
  IMAPS            $LISTEN_ADDRESS:$IMAPS_PORT   implicit TLS
  Web console      https://localhost:$WEB_PORT/   (self-service: https://localhost:$WEB_PORT/self/)
  PostgreSQL       $DATABASE_URL
  NATS             $NATS_URL   (users and passwords: $STACK/nats-auth)

  First login:     $login   password: $password
  Console login:   $admin   password: $admin_password
  Administer:      build/bin/mailctl --help      (from this folder, no flags needed)
  Try it:          swaks --server localhost:$SMTP_PORT --to $login
  Read it:         curl -k -u $login pop3s://localhost:$POP3S_PORT/1

  First IMAP session (the certificate is self-signed, hence -k):
    curl "imaps://127.0.0.1:$IMAPS_PORT/INBOX" -k -u $login:$password
    openssl s_client -connect 127.0.0.1:$IMAPS_PORT -quiet
      a LOGIN $login $password
      b SELECT INBOX
      c LOGOUT

MSG
wait
