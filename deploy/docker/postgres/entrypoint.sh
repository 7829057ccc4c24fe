#!/bin/sh
# Starts PostgreSQL like the postgres:15 image does: as root it hands the data folder to the
# postgres user and starts again as that user; on an empty data folder it runs initdb with
# POSTGRES_USER (default postgres) and POSTGRES_PASSWORD, allows password logins from any
# address (scram-sha-256) and creates POSTGRES_DB (default: POSTGRES_USER).
set -eu

die() {
    echo "postgres-entrypoint: $*" >&2
    exit 1
}

# `docker run IMAGE -c x=y` means the server with those options.
case ${1:-postgres} in
    -*) set -- postgres "$@" ;;
esac
[ "${1:-postgres}" = postgres ] || exec "$@"
[ $# -gt 0 ] && shift

: "${PGDATA:=/var/lib/postgresql/data}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    [ "$(stat -c %U "$PGDATA")" = postgres ] || chown -R postgres:postgres "$PGDATA"
    chown postgres:postgres /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        die "the database is not initialised and POSTGRES_PASSWORD is not set"
    fi
    echo "postgres-entrypoint: initialising $PGDATA for user $POSTGRES_USER, database $POSTGRES_DB"
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >/dev/null
    rm -f "$pwfile"
    printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
    # A first start on the socket only, so nobody connects before the database exists.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    pg_ctl -D "$PGDATA" -m fast -w -s stop
    echo "postgres-entrypoint: initialised"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
