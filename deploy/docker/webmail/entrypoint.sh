#!/bin/sh
# The entrypoint of the webmail image (deploy/docker/webmail/Dockerfile):
#
#   postern-webmail serve    the key and the database (below), then Apache in the foreground
#   postern-webmail health   GET https://127.0.0.1:$WEBMAIL_PORT/healthz; exit 0 on "ok"
#   postern-webmail COMMAND  any other command (a shell, say)
#
# Before Apache starts: Roundcube's key comes from ROUNDCUBE_DES_KEY or the file
# ROUNDCUBE_DES_KEY_FILE (a Secret); without either, WEBMAIL_DATA/des_key, made here the
# first time (random, kept in the volume so sessions outlive a restart). Roundcube's SQLite
# database WEBMAIL_DATA/roundcube.db is made from Debian's schema when missing, and brought
# up to date by Roundcube's updatedb.sh otherwise.
set -eu

: "${WEBMAIL_DATA:=/var/lib/postern-webmail}"
: "${WEBMAIL_PORT:=8443}"
: "${WEBMAIL_TLS_CERT:=/etc/postern/tls/cert.pem}"
: "${WEBMAIL_TLS_KEY:=/etc/postern/tls/key.pem}"
: "${WEBMAIL_SERVER_NAME:=${WEBMAIL_TLS_NAME:-localhost}}"
export WEBMAIL_DATA WEBMAIL_PORT WEBMAIL_TLS_CERT WEBMAIL_TLS_KEY WEBMAIL_SERVER_NAME

say() {
    echo "webmail: $*" >&2
}

die() {
    say "$*"
    exit 1
}

key() {
    if [ -n "${ROUNDCUBE_DES_KEY:-}" ]; then
        [ "${#ROUNDCUBE_DES_KEY}" -ge 24 ] || die "ROUNDCUBE_DES_KEY: 24 characters or more"
        return
    fi
    if [ -n "${ROUNDCUBE_DES_KEY_FILE:-}" ]; then
        [ -r "$ROUNDCUBE_DES_KEY_FILE" ] || die "ROUNDCUBE_DES_KEY_FILE: cannot read $ROUNDCUBE_DES_KEY_FILE"
        return
    fi
    ROUNDCUBE_DES_KEY_FILE=$WEBMAIL_DATA/des_key
    export ROUNDCUBE_DES_KEY_FILE
    if [ ! -s "$ROUNDCUBE_DES_KEY_FILE" ]; then
        (umask 077 && head -c 24 /dev/urandom | base64 >"$ROUNDCUBE_DES_KEY_FILE.tmp") &&
            mv "$ROUNDCUBE_DES_KEY_FILE.tmp" "$ROUNDCUBE_DES_KEY_FILE" ||
            die "cannot write $ROUNDCUBE_DES_KEY_FILE (is $WEBMAIL_DATA writable by uid $(id -u)?)"
        say "made a new key in $ROUNDCUBE_DES_KEY_FILE"
    fi
}

database() {
    db=$WEBMAIL_DATA/roundcube.db
    if [ ! -s "$db" ]; then
        (umask 077 && sqlite3 "$db.tmp" </usr/share/roundcube/SQL/sqlite.initial.sql) &&
            mv "$db.tmp" "$db" || die "cannot make the database $db"
        say "made the database $db"
    else
        /usr/share/roundcube/bin/updatedb.sh --package=roundcube --dir=/usr/share/roundcube/SQL >&2 ||
            die "updating the database $db failed"
    fi
}

serve() {
    for f in "$WEBMAIL_TLS_CERT" "$WEBMAIL_TLS_KEY"; do
        [ -r "$f" ] || die "cannot read $f (the certificate and key Apache serves HTTPS with)"
    done
    [ -d "$WEBMAIL_DATA" ] && [ -w "$WEBMAIL_DATA" ] ||
        die "$WEBMAIL_DATA is not a folder writable by uid $(id -u)"
    key
    database
    mkdir -p /tmp/apache2 /tmp/roundcube
    rm -f /tmp/apache2/apache2.pid
    say "HTTPS on port $WEBMAIL_PORT; IMAP ${WEBMAIL_IMAP_HOST:-ssl://imapd:2993}, SMTP ${WEBMAIL_SMTP_HOST:-tls://smtpd:2587}, certificate name ${WEBMAIL_TLS_NAME:-localhost}"
    exec apache2 -f /etc/postern-webmail/apache.conf -DFOREGROUND
}

# PHP's own HTTPS client: no curl in the image. The certificate is not checked here (it is
# made for the mail host's name, and this asks 127.0.0.1).
health() {
    timeout "${HEALTH_TIMEOUT:-5}" php -d display_errors=stderr -r '
        $ctx = stream_context_create([
            "ssl" => ["verify_peer" => false, "verify_peer_name" => false],
            "http" => ["timeout" => 4, "ignore_errors" => true],
        ]);
        $body = @file_get_contents("https://127.0.0.1:" . $argv[1] . "/healthz", false, $ctx);
        if ($body === false) { fwrite(STDERR, "webmail health: no answer\n"); exit(1); }
        if (trim($body) !== "ok") { fwrite(STDERR, "webmail health: " . trim($body) . "\n"); exit(1); }
    ' "$WEBMAIL_PORT"
}

cmd=${1:-serve}
case $cmd in
    serve) serve ;;
    health) health ;;
    *) exec "$@" ;;
esac
