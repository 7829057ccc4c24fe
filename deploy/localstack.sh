#!/bin/sh
# A private PostgreSQL and nats-server for `make run` and the tests.
#
#   localstack.sh start DIR PGPORT NATSPORT   init (first time) and start both, write DIR/postern.env
#   localstack.sh stop DIR                    stop both
#   localstack.sh pg-stop DIR                 stop PostgreSQL only
#   localstack.sh pg-start DIR                start PostgreSQL again (same port as the last start)
#   localstack.sh nats-stop DIR               stop nats-server only
#   localstack.sh nats-start DIR              start nats-server again (same port as the last start)
#   localstack.sh status DIR                  say what is running
#   localstack.sh nats-env DIR USER           print NATS_USER and NATS_PASSWORD_FILE of a bus user
#
# Layout of DIR: pg/ (PostgreSQL data), run/ (its unix socket), pg.log, nats.pid, nats.port,
# nats.log, nats.conf, nats-auth/ (one password per bus user, made once, mode 0600), nats-js/
# (JetStream), postern.env. Both servers listen on 127.0.0.1 only; PostgreSQL trusts local
# connections; every NATS connection logs in as one of the users of deploy/nats-auth.sh, with
# that user's permissions. postern.env names mailctl's (NATS_USER, NATS_PASSWORD_FILE); a
# service is given its own with `localstack.sh nats-env DIR USER`.
# When run as root, PostgreSQL runs as the `postgres` user and owns pg/, run/ and pg.log.
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin), NATS_SERVER,
# POSTERN_NATS_TEST_USER=1 (at start: one more user, `test`, allowed everything; for the e2e
# harness only).
set -eu

prog=localstack.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

say() {
    echo "$prog: $*"
}

usage() {
    cat >&2 <<EOF
usage: $prog start DIR PGPORT NATSPORT
       $prog stop DIR
       $prog pg-stop DIR
       $prog pg-start DIR
       $prog nats-stop DIR
       $prog nats-start DIR
       $prog status DIR
       $prog nats-env DIR USER
EOF
    exit 2
}

find_pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        [ -x "$PG_BIN/pg_ctl" ] || die "PG_BIN=$PG_BIN has no pg_ctl"
        return
    fi
    PG_BIN=""
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$d/pg_ctl" ]; then
            PG_BIN=$d
            break
        fi
    done
    [ -n "$PG_BIN" ] || die "PostgreSQL server not found under /usr/lib/postgresql (apt-get install postgresql, or set PG_BIN)"
}

find_nats() {
    NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || true)}
    [ -n "$NATS_SERVER" ] || die "nats-server not found (apt-get install nats-server)"
}

check_port() {
    case $1 in
        '' | *[!0-9]*) die "$2 must be a port number, got '$1'" ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || die "$2 out of range: $1"
}

# Runs a PostgreSQL server program as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

set_dirs() {
    [ -n "$1" ] || usage
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    PGDATA=$DIR/pg
    PGRUN=$DIR/run
    PGLOG=$DIR/pg.log
    NATS_PID=$DIR/nats.pid
    NATS_LOG=$DIR/nats.log
    NATS_CONF=$DIR/nats.conf
    NATS_AUTH=$DIR/nats-auth
    ENVFILE=$DIR/postern.env
}

# As root, the postgres user must own its files and be able to reach them.
prepare_ownership() {
    mkdir -p "$PGDATA" "$PGRUN"
    touch "$PGLOG"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user (apt-get install postgresql)"
        chown -R postgres: "$PGDATA" "$PGRUN" "$PGLOG"
        chmod 700 "$PGDATA"
        runuser -u postgres -- test -w "$PGRUN" ||
            die "user postgres cannot reach $DIR (a parent directory is not searchable; chmod o+x it)"
    else
        chmod 700 "$PGDATA"
    fi
}

pg_port() {
    sed -n "s/^port *= *\([0-9]*\).*/\1/p" "$PGDATA/postern.conf" 2>/dev/null | tail -n 1
}

pg_running() {
    [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

pg_init() {
    if [ -f "$PGDATA/PG_VERSION" ]; then
        return
    fi
    say "initialising PostgreSQL in $PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$DIR/initdb.log" 2>&1 || {
        cat "$DIR/initdb.log" >&2
        die "initdb failed"
    }
    # Postern's own settings live in postern.conf, rewritten at every start.
    echo "include_if_exists = 'postern.conf'" >>"$PGDATA/postgresql.conf"
    # Trust local connections only: the socket and the loopback addresses, nothing else.
    cat >"$PGDATA/pg_hba.conf" <<EOF
# Written by deploy/localstack.sh: a private server for development and tests.
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
host    all  all  ::1/128        trust
EOF
    [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA/pg_hba.conf"
}

pg_configure() {
    cat >"$PGDATA/postern.conf" <<EOF
# Written by deploy/localstack.sh at every start.
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$PGRUN'
max_connections = 200
EOF
    [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA/postern.conf"
}

pg_start() {
    port=$(pg_port)
    [ -n "$port" ] || die "no port recorded in $PGDATA/postern.conf; use '$prog start' first"
    if pg_running; then
        say "PostgreSQL already running on 127.0.0.1:$port"
    else
        prepare_ownership
        as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$PGLOG" -w -t 60 -s \
            >/dev/null 2>&1 </dev/null || {
            tail -n 20 "$PGLOG" >&2
            die "PostgreSQL did not start (log: $PGLOG)"
        }
    fi
    # pg_ctl -w waited for the socket; make sure TCP answers too.
    i=0
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        i=$((i + 1))
        [ "$i" -lt 100 ] || die "PostgreSQL does not answer on 127.0.0.1:$port (log: $PGLOG)"
        sleep 0.1
    done
    say "PostgreSQL ready on 127.0.0.1:$port (data $PGDATA, log $PGLOG)"
}

pg_stop() {
    if ! [ -f "$PGDATA/PG_VERSION" ]; then
        say "no PostgreSQL in $PGDATA"
        return
    fi
    if pg_running; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 -s ||
            die "PostgreSQL did not stop (log: $PGLOG)"
        say "PostgreSQL stopped"
    else
        say "PostgreSQL was not running"
    fi
}

pg_create_db() {
    port=$(pg_port)
    psql="$PG_BIN/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U postgres"
    exists=$($psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'postern'")
    if [ "$exists" != 1 ]; then
        $psql -d postgres -c "CREATE DATABASE postern" || die "could not create database postern"
        say "created database postern"
    fi
}

# The users, their passwords (made once, kept across runs) and their permissions, from the
# one table (deploy/nats-auth.sh), rewritten at every start so a change of the table applies.
nats_configure() {
    auth=$(dirname "$0")/nats-auth.sh
    sh "$auth" passwords "$NATS_AUTH"
    test_user=""
    [ "${POSTERN_NATS_TEST_USER:-}" != 1 ] || test_user=test
    (
        umask 077
        {
            echo "# Written by deploy/localstack.sh at every start."
            sh "$auth" config "$NATS_AUTH" $test_user
        } >"$NATS_CONF.tmp"
    ) || die "could not write $NATS_CONF"
    mv "$NATS_CONF.tmp" "$NATS_CONF"
}

nats_pid() {
    [ -f "$NATS_PID" ] || return 1
    pid=$(cat "$NATS_PID" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

nats_start() {
    port=$1
    if pid=$(nats_pid); then
        running=$(cat "$DIR/nats.port" 2>/dev/null || true)
        [ "$running" = "$port" ] ||
            die "nats-server in $DIR already runs on port ${running:-?}; '$prog stop $DIR' first"
        # the users and permissions nats_configure wrote take effect now
        kill -HUP "$pid" 2>/dev/null || true
        say "nats-server already running on 127.0.0.1:$port (pid $pid)"
        return
    fi
    echo "$port" >"$DIR/nats.port"
    rm -f "$NATS_PID"
    # the readiness check below reads a fresh log; the previous run's is kept beside it
    [ -s "$NATS_LOG" ] && mv "$NATS_LOG" "$NATS_LOG.previous"
    : >"$NATS_LOG"
    # In a session of its own, so a Ctrl-C meant for `make run` reaches us, not it.
    # JetStream on, file storage under DIR: the limiter's counters and lease live there
    # (services/limiter/replica.h) and outlive a restart of either.
    [ -f "$NATS_CONF" ] || die "no $NATS_CONF; use '$prog start' first"
    setsid "$NATS_SERVER" -c "$NATS_CONF" -a 127.0.0.1 -p "$port" -P "$NATS_PID" -l "$NATS_LOG" \
        -js -sd "$DIR/nats-js" </dev/null >>"$NATS_LOG" 2>&1 &
    i=0
    until grep -q "Server is ready" "$NATS_LOG" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge 100 ] || grep -q "\[FTL\]" "$NATS_LOG" 2>/dev/null; then
            tail -n 20 "$NATS_LOG" >&2
            die "nats-server did not start on 127.0.0.1:$port (log: $NATS_LOG)"
        fi
        sleep 0.1
    done
    i=0
    until nats_pid >/dev/null; do
        i=$((i + 1))
        [ "$i" -lt 50 ] || die "nats-server wrote no pid file ($NATS_PID)"
        sleep 0.1
    done
    say "nats-server ready on 127.0.0.1:$port (pid $(nats_pid), log $NATS_LOG)"
}

nats_stop() {
    if ! pid=$(nats_pid); then
        rm -f "$NATS_PID"
        say "nats-server was not running"
        return
    fi
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge 100 ]; then
            kill -KILL "$pid" 2>/dev/null || true
            say "nats-server did not stop in time; killed"
            break
        fi
        sleep 0.1
    done
    rm -f "$NATS_PID"
    say "nats-server stopped"
}

cmd_start() {
    [ $# -eq 3 ] || usage
    check_port "$2" PGPORT
    check_port "$3" NATSPORT
    set_dirs "$1"
    find_pg_bin
    find_nats
    prepare_ownership
    pg_init
    if pg_running && [ "$(pg_port)" != "$2" ]; then
        die "PostgreSQL in $PGDATA already runs on port $(pg_port); '$prog stop $DIR' first"
    fi
    pg_configure "$2"
    pg_start
    pg_create_db
    nats_configure
    nats_start "$3"
    cat >"$ENVFILE" <<EOF
DATABASE_URL=postgresql://postgres@127.0.0.1:$2/postern
NATS_URL=nats://127.0.0.1:$3
$(nats_env mailctl)
EOF
    cat "$ENVFILE"
}

# A bus user's credentials as environment lines.
nats_env() {
    [ -s "$NATS_AUTH/$1.password" ] || die "no bus user $1 in $NATS_AUTH"
    echo "NATS_USER=$1"
    echo "NATS_PASSWORD_FILE=$NATS_AUTH/$1.password"
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    set_dirs "$1"
    find_pg_bin
    nats_stop
    pg_stop
}

cmd_status() {
    [ $# -eq 1 ] || usage
    set_dirs "$1"
    find_pg_bin
    if pg_running; then
        say "PostgreSQL running on 127.0.0.1:$(pg_port)"
    else
        say "PostgreSQL not running"
    fi
    if pid=$(nats_pid); then
        say "nats-server running (pid $pid)"
    else
        say "nats-server not running"
    fi
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    pg-stop)
        [ $# -eq 1 ] || usage
        set_dirs "$1"
        find_pg_bin
        pg_stop
        ;;
    pg-start)
        [ $# -eq 1 ] || usage
        set_dirs "$1"
        find_pg_bin
        pg_start
        ;;
    nats-stop)
        [ $# -eq 1 ] || usage
        set_dirs "$1"
        nats_stop
        ;;
    nats-start)
        [ $# -eq 1 ] || usage
        set_dirs "$1"
        find_nats
        port=$(cat "$DIR/nats.port" 2>/dev/null || true)
        [ -n "$port" ] || die "no port recorded in $DIR/nats.port; use '$prog start' first"
        nats_start "$port"
        ;;
    status) cmd_status "$@" ;;
    nats-env)
        [ $# -eq 2 ] || usage
        set_dirs "$1"
        nats_env "$2"
        ;;
    *) usage ;;
esac
