#!/bin/sh
# `make bench`: the limiter's checks over NATS, beside a bare NATS request/reply echo
# served in the same run by the same nats-server, so the ratio shows what the limiter
# itself costs. Results are printed and written to bench/results/limiter.txt. Then the
# comparisons: POP3 and IMAP with Dovecot, relaying with Postfix (bench/*_bench.sh).
#   REQUESTS=20000 CONCURRENCY=4 make bench
#   sh bench/run.sh [limiter] [pop3] [imap] [relay]     only those (default: all)
set -eu
cd "$(dirname "$0")/.."
PARTS=${*:-limiter pop3 imap relay}
for p in $PARTS; do
    case $p in
    limiter | pop3 | imap | relay) ;;
    *) echo "usage: sh bench/run.sh [limiter] [pop3] [imap] [relay]" >&2; exit 2 ;;
    esac
done
wanted() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

if wanted limiter; then
    ROOT=$(pwd)
    BIN=${POSTERN_BIN:-$ROOT/build/bin}
    B=$ROOT/build/bench
    REQUESTS=${REQUESTS:-20000}
    CONCURRENCY=${CONCURRENCY:-4}
    DIR=$(mktemp -d /tmp/postern-bench.XXXXXX)
    chmod 755 "$DIR"
    PG_PORT=$((30000 + $$ % 5000))
    NATS_PORT=$((PG_PORT + 5000))
    limiter_pid=""

    cleanup() {
        [ -n "$limiter_pid" ] && kill "$limiter_pid" 2>/dev/null && wait "$limiter_pid" 2>/dev/null
        sh deploy/localstack.sh stop "$DIR" >/dev/null 2>&1 || true
        rm -rf "$DIR"
    }
    trap cleanup EXIT INT TERM

    sh deploy/localstack.sh start "$DIR" "$PG_PORT" "$NATS_PORT" >/dev/null
    set -a
    . "$DIR/postern.env"
    set +a
    "$BIN/mailctl" migrate >/dev/null
    "$BIN/mailctl" domain add bench.test >/dev/null
    # Limits far above the load, so every check does the full work and is allowed.
    "$BIN/mailctl" hamr set --system --max 1000000 --interval 60 >/dev/null
    "$BIN/limiter" 2>"$DIR/limiter.log" &
    limiter_pid=$!

    # Wait until the limiter answers.
    i=0
    until "$B/lim_bench" --url "$NATS_URL" --subject postern.limiter.auth --requests 1 \
            --concurrency 1 >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "limiter did not start"; cat "$DIR/limiter.log"; exit 1; }
        sleep 0.1
    done

    run() {
        "$B/lim_bench" --url "$NATS_URL" --requests "$REQUESTS" --concurrency "$CONCURRENCY" "$@"
    }
    echo_line=$(run --subject bench.echo --echo)
    auth_line=$(run --subject postern.limiter.auth --kind auth)
    send_line=$(run --subject postern.limiter.send --kind send)

    field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

    mkdir -p bench/results
    {
        echo "# Limiter checks over NATS vs a bare NATS request/reply echo (same run)"
        echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores; $REQUESTS requests, $CONCURRENCY client threads"
        echo "# command: sh bench/run.sh  (build/bench/lim_bench, source bench/lim_bench.c)"
        echo "echo    $echo_line"
        echo "auth    $auth_line"
        echo "send    $send_line"
        echo "ratio auth/echo: throughput $(ratio "$(field "$auth_line" rps)" "$(field "$echo_line" rps)")," \
             "p50 latency $(ratio "$(field "$auth_line" p50_us)" "$(field "$echo_line" p50_us)")," \
             "p99 latency $(ratio "$(field "$auth_line" p99_us)" "$(field "$echo_line" p99_us)")"
        echo "ratio send/echo: throughput $(ratio "$(field "$send_line" rps)" "$(field "$echo_line" rps)")," \
             "p50 latency $(ratio "$(field "$send_line" p50_us)" "$(field "$echo_line" p50_us)")," \
             "p99 latency $(ratio "$(field "$send_line" p99_us)" "$(field "$echo_line" p99_us)")"
    } | tee bench/results/limiter.txt

    cleanup
    trap - EXIT INT TERM
fi

# POP3 against Dovecot (installs dovecot-pop3d through deploy/deps.sh bench if missing).
if wanted pop3; then sh bench/pop3_bench.sh; fi
# IMAP against Dovecot (dovecot-imapd, likewise); about three minutes.
if wanted imap; then sh bench/imap_bench.sh; fi
# Relaying against Postfix (postfix, likewise; its smtp-sink is the remote host); about two
# minutes.
if wanted relay; then sh bench/relay_bench.sh; fi
