#!/bin/bash
# The entrypoint of the postern image: the first argument picks what runs.
#
#   postern smtpd|pop3d|imapd|limiter|notifier|relayd|webd   a service (settings from the environment)
#   postern mailctl ARGS...                             the administrator's tool
#   postern migrate                                     apply the schema (waits for PostgreSQL),
#                                                       then say how to add a domain and a user
#   postern health [healthz|readyz]                     ask the service in this container over
#                                                       HTTP on HEALTH_PORT; exit 0 on 200
#   postern idle                                        wait for SIGTERM (a pod to run mailctl in)
#   postern help
#
# TLS_CERT and TLS_KEY default to /etc/postern/tls/cert.pem and key.pem when those exist.
set -eu

LIB=/usr/lib/postern
TLS_DIR=/etc/postern/tls

usage() {
    cat <<USAGE
usage: postern SERVICE | mailctl ARGS... | migrate | health [healthz|readyz] | idle | help
services in this image: $(cd "$LIB" && ls | grep -vx mailctl | tr '\n' ' ')
USAGE
}

default_tls() {
    if [ -z "${TLS_CERT:-}" ] && [ -z "${TLS_KEY:-}" ] &&
        [ -f "$TLS_DIR/cert.pem" ] && [ -f "$TLS_DIR/key.pem" ]; then
        export TLS_CERT=$TLS_DIR/cert.pem TLS_KEY=$TLS_DIR/key.pem
    fi
}

# One HTTP/1.0 GET over bash's /dev/tcp: no curl or wget in the image.
health() {
    local path=${1:-readyz} port=${HEALTH_PORT:-8080} status
    status=$(timeout "${HEALTH_TIMEOUT:-5}" bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /%s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$2" >&3
        IFS= read -r line <&3 && printf "%s" "$line"' health "$port" "$path" 2>/dev/null) || true
    case $status in
        "HTTP/1."?" 200"*) return 0 ;;
        "") echo "postern health: no answer on 127.0.0.1:$port" >&2 ;;
        *) echo "postern health: /$path: ${status%$'\r'}" >&2 ;;
    esac
    return 1
}

# The schema, once PostgreSQL answers (mailctl migrate is idempotent and locked, so any
# number of these may run at once); then the first-run message.
migrate() {
    local tries=${MIGRATE_TRIES:-60} i=1
    until "$LIB/mailctl" migrate; do
        if [ "$i" -ge "$tries" ]; then
            echo "postern migrate: gave up after $tries tries" >&2
            return 1
        fi
        echo "postern migrate: database not ready, trying again in 2 s ($i/$tries)" >&2
        i=$((i + 1))
        sleep 2
    done
    cat <<MSG

Postern's schema is up to date. To add a first domain and user (docker compose):

    docker compose run --rm mailctl domain add example.org
    docker compose run --rm mailctl user add alice@example.org    # asks for a password

Every mailctl command works that way: docker compose run --rm mailctl --help
(on Kubernetes: kubectl exec deploy/<release>-mailctl -- postern mailctl ...)

MSG
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case $cmd in
    smtpd | pop3d | imapd | limiter | notifier | relayd | webd)
        if [ ! -x "$LIB/$cmd" ]; then
            echo "postern: $cmd is not in this image" >&2
            usage >&2
            exit 2
        fi
        default_tls
        exec "$LIB/$cmd" "$@"
        ;;
    mailctl) exec "$LIB/mailctl" "$@" ;;
    migrate) migrate ;;
    health) health "$@" ;;
    idle)
        trap 'exit 0' TERM INT
        sleep infinity &
        wait
        ;;
    help | -h | --help) usage ;;
    *)
        echo "postern: unknown command '$cmd'" >&2
        usage >&2
        exit 2
        ;;
esac
