# What the comparisons with Dovecot and Postfix share (bench/pop3_bench.sh,
# bench/imap_bench.sh, bench/relay_bench.sh, bench/smtp_bench.sh): sourced, not run. Before
# sourcing, set BENCH (pop3, imap, relay or smtp: the name in messages and folders, the
# protocol for Dovecot), BIN (Postern's programs) and NEEDS (the programs the script needs).
#
#   bench_ports                  PG_PORT NATS_PORT POSTERN_PORT DOVECOT_PORT, all free
#   free_port                    prints a free port on 127.0.0.1
#   wait_port PORT NAME LOG      until something listens on PORT (or fail with LOG's end)
#   at_exit COMMAND              the cleanup runs COMMAND too (before the local stack stops)
#   postern_stack                PostgreSQL and NATS under $DIR, its environment exported
#                                (DATABASE_URL, NATS_URL), the schema, the domain bench.test
#   postern_start USER...        postern_stack, then USER... in bench.test (password
#                                $PASSWORD), plaintext logins, no failure delay, the limiter
#   postfix_main_cf PF           a private Postfix's folders under PF and the head of its
#                                main.cf (the Postfix benches append the rest)
#   publish_section NAME         $DIR/section.md as bench/results/NAME.txt and NAME's
#                                section of bench/results.md
#   bus_login NAME               NAME's bus login in the local stack, as words for env(1)
#                                (NATS_USER=NAME NATS_PASSWORD_FILE=...): a service started
#                                with it has its own permissions (deploy/nats-auth.sh), where
#                                postern.env's login is mailctl's
#   dovecot_config USER...       $D/dovecot.conf for $BENCH on $DOVECOT_PORT (maildir under
#                                $DIR/mail, passwd-file with SCRAM-SHA-256 secrets), as
#                                root with Dovecot's own users and the mail as nobody
#   peer_summary MATCH FIELD     over $RAW (a measurement per line: words and key=value
#                                pairs), the lines with the word MATCH: FIELD's median, min
#                                and max for Postern (lines with the word postern) and for
#                                the peer (the others), and Postern/peer of the medians, as
#                                "pm pmin pmax qm qmin qmax ratio" ("-" for a side without)
#   report_facts                 for the report: POSTERN_REV (the commit, +uncommitted when
#                                services/ or lib/ differ from it), PG_VERSION (of the local
#                                stack's PostgreSQL), CPU (model name), MEM ("24 GiB")
#   peer_row SHOWN MATCH FIELD LABEL
#                                peer_summary as a Markdown table row: | SHOWN | LABEL |
#                                Postern median (min–max) | peer's | ratio |
# and a cleanup at exit that stops whatever was started ($pids, the at_exit commands, Dovecot,
# the local stack) and removes $DIR unless ${BENCH}_BENCH_KEEP is set (POP3_BENCH_KEEP,
# IMAP_BENCH_KEEP, RELAY_BENCH_KEEP, SMTP_BENCH_KEEP).
# DOVECOT_LOGIN=performance gives Dovecot long-lived login processes (its "high-performance
# mode"); the default is a login process per connection.

PYTHON=/usr/bin/python3
DOVECOT_LOGIN=${DOVECOT_LOGIN:-security}

sh deploy/deps.sh bench # Dovecot and Postfix, when missing
for f in $NEEDS; do
    [ -x "$f" ] || { echo "${BENCH}_bench: $f is missing: build first (make)" >&2; exit 1; }
done
DOVECOT=$(command -v dovecot || echo /usr/sbin/dovecot)
DOVEADM=$(command -v doveadm || echo /usr/bin/doveadm)

DIR=$(mktemp -d "/tmp/postern-$BENCH-bench.XXXXXX")
chmod 755 "$DIR"
D=$DIR/dovecot
pids=""
atexit=""
bench_cleanup() {
    for p in $pids; do # (a process killed by the signal makes wait fail: go on)
        { kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; } || true
    done
    eval "$atexit" || true
    [ -f "$D/dovecot.conf" ] && "$DOVECOT" -c "$D/dovecot.conf" stop 2>/dev/null
    sh deploy/localstack.sh stop "$DIR" >/dev/null 2>&1 || true
    keep=$(eval "echo \${$(echo "$BENCH" | tr a-z A-Z)_BENCH_KEEP:-}")
    if [ -n "$keep" ]; then echo "${BENCH}_bench: kept $DIR"; else rm -rf "$DIR"; fi
}
trap bench_cleanup EXIT INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

at_exit() { # at_exit COMMAND
    atexit="$atexit
$1"
}

bench_ports() {
    PG_PORT=$(free_port)
    NATS_PORT=$(free_port)
    POSTERN_PORT=$(free_port)
    DOVECOT_PORT=$(free_port)
}

wait_port() { # wait_port PORT NAME LOG
    i=0
    until "$PYTHON" -c "import socket, sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "${BENCH}_bench: $2 did not start:" >&2; tail -20 "$3" >&2; exit 1; }
        sleep 0.1
    done
}

postern_stack() {
    sh deploy/localstack.sh start "$DIR" "$PG_PORT" "$NATS_PORT" >/dev/null
    set -a
    . "$DIR/postern.env"
    set +a
    "$BIN/mailctl" migrate >/dev/null
    "$BIN/mailctl" domain add bench.test >/dev/null
}

postfix_main_cf() { # postfix_main_cf PF
    # A private Postfix under PF (etc, spool, data) on loopback, delivering nothing locally:
    # its folders and the head of its main.cf, to which the caller appends what it needs.
    mkdir -p "$1/etc" "$1/spool" "$1/data"
    chown postfix "$1/data"
    PF=$1
    cat >"$1/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/spool
data_directory = $PF/data
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
EOF
}

publish_section() { # publish_section NAME
    # $DIR/section.md, printed, as bench/results/NAME.txt and as NAME's section of
    # bench/results.md (between <!-- NAME-bench begin/end -->), the other sections kept.
    mkdir -p bench/results
    tee "bench/results/$1.txt" <"$DIR/section.md"
    md=bench/results.md
    [ -f "$md" ] || printf '# Postern benchmarks\n\nWritten by `make bench` (bench/run.sh); one section per benchmark.\n' >"$md"
    awk -v b="<!-- $1-bench begin -->" -v e="<!-- $1-bench end -->" \
        '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$md" >"$DIR/results.md"
    {
        echo "<!-- $1-bench begin -->"
        cat "$DIR/section.md"
        echo "<!-- $1-bench end -->"
    } >>"$DIR/results.md"
    cp "$DIR/results.md" "$md"
}

cpu_ms() { # cpu_ms PID...: CPU ms so far of the PIDs and their children, live ones from
    # /proc/PID/stat (utime+stime), exited ones through their parent's cutime+cstime
    for f in /proc/[0-9]*/stat; do cat "$f" 2>/dev/null && echo; done | awk -v want=" $* " \
        -v hz="$(getconf CLK_TCK)" '
        NF { pid = $1; rest = substr($0, index($0, ") ") + 2); split(rest, f, " ")
             ppid[pid] = f[2]; own[pid] = f[12] + f[13]; kids[pid] = f[14] + f[15] }
        END { for (p in own) if (index(want, " " p " ")) t += own[p] + kids[p]
              for (p in own) if (!index(want, " " p " ") && index(want, " " ppid[p] " ")) t += own[p]
              printf "%.0f\n", t * 1000 / hz }'
}

postern_server_pids() { # the PIDs of PostgreSQL's postmaster, nats-server and the arguments
    echo "$(head -n 1 "$DIR/pg/postmaster.pid") $(cat "$DIR/nats.pid") $*"
}

dovecot_pids() { # Dovecot's master process (its children are counted with it)
    cat "$D/run/master.pid"
}

bus_login() { # bus_login NAME
    sh deploy/localstack.sh nats-env "$DIR" "$1" | tr '\n' ' '
}

postern_start() { # postern_start USER...
    postern_stack
    for u in "$@"; do
        printf '%s\n' "$PASSWORD" | "$BIN/mailctl" user add "$u" --password-stdin >/dev/null
    done
    "$BIN/mailctl" config set auth.allow_plaintext on >/dev/null
    "$BIN/mailctl" config set auth.failure_delay_ms 0 >/dev/null
    env $(bus_login limiter) "$BIN/limiter" 2>"$DIR/limiter.log" &
    pids="$pids $!"
}

dovecot_config() { # dovecot_config USER...
    # As root, Dovecot's own users run the login and internal processes (as its
    # documentation has it) and the mail processes run as nobody; otherwise everything runs
    # as the caller.
    if [ "$(id -u)" -eq 0 ]; then
        MAIL_UID=$(id -u nobody)
        MAIL_GID=$(id -g nobody)
        LOGIN_USER=dovenull
        INTERNAL_USER=dovecot
        CHROOT=login
    else
        MAIL_UID=$(id -u)
        MAIL_GID=$(id -g)
        LOGIN_USER=$(id -un)
        INTERNAL_USER=$(id -un)
        CHROOT=
    fi
    mkdir -p "$D" "$DIR/mail"
    chmod 755 "$DIR/mail"
    cat >"$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/state
instance_name = postern-$BENCH-bench
log_path = $D/dovecot.log
protocols = $BENCH
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = $LOGIN_USER
default_internal_user = $INTERNAL_USER
first_valid_uid = $MAIL_UID
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
passdb {
  driver = passwd-file
  args = $D/passwd
}
userdb {
  driver = passwd-file
  args = $D/passwd
}
service $BENCH-login {
  chroot = $CHROOT
$(if [ "$DOVECOT_LOGIN" = performance ]; then
    printf '  service_count = 0\n  process_min_avail = %s\n' "$(nproc)"
fi)
  inet_listener $BENCH {
    port = $DOVECOT_PORT
  }
  inet_listener ${BENCH}s {
    port = 0
  }
}
service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
EOF
    : >"$D/passwd"
    for u in "$@"; do
        hash=$("$DOVEADM" -c "$D/dovecot.conf" pw -s SCRAM-SHA-256 -p "$PASSWORD")
        printf '%s:%s:%s:%s::%s::\n' "$u" "$hash" "$MAIL_UID" "$MAIL_GID" "$DIR/mail/$u" >>"$D/passwd"
        mkdir -p "$DIR/mail/$u"
        chown "$MAIL_UID:$MAIL_GID" "$DIR/mail/$u"
    done
    chmod 640 "$D/passwd"
    chgrp "$(id -gn "$INTERNAL_USER")" "$D/passwd" # the auth process reads it
}

report_facts() {
    POSTERN_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain -- services lib 2>/dev/null)" ] && POSTERN_REV="$POSTERN_REV+uncommitted"
    PG_VERSION=$(psql -tA "$DATABASE_URL" -c "SHOW server_version" | cut -d' ' -f1)
    CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    MEM=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
}

peer_summary() { # peer_summary MATCH FIELD
    awk -v match_word="$1" -v field="$2" '
        function med(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            hit = 0; ours = 0; v = ""
            for (i = 1; i <= NF; i++) {
                if ($i == match_word) hit = 1
                if ($i == "postern") ours = 1
                if (split($i, kv, "=") == 2 && kv[1] == field) v = kv[2]
            }
            if (!hit || v == "") next
            if (ours) p[++np] = v; else q[++nq] = v
        }
        END {
            pm = np ? med(p, np) : 0; qm = nq ? med(q, nq) : 0
            printf "%s %s %s %s %s %s %s\n", np ? pm : "-", np ? p[1] : "-", np ? p[np] : "-",
                   nq ? qm : "-", nq ? q[1] : "-", nq ? q[nq] : "-",
                   (np && nq && qm > 0) ? sprintf(pm / qm < 0.1 ? "%.3f" : "%.2f", pm / qm) : "n/a"
        }' "$RAW"
}
fmt() { # fmt FIGURE: as a table shows it ("-": a dash)
    awk -v x="$1" 'BEGIN { if (x == "-") print "–"; else if (x >= 100 || x == int(x)) printf "%.0f", x; else if (x >= 1) printf "%.2f", x; else printf "%.3f", x }'
}
cell() { # cell MEDIAN MIN MAX
    [ "$1" = - ] && { echo "–"; return; }
    echo "$(fmt "$1") ($(fmt "$2")–$(fmt "$3"))"
}
peer_row() { # peer_row SHOWN MATCH FIELD LABEL
    set -- "$1" "$4" $(peer_summary "$2" "$3")
    echo "| $1 | $2 | $(cell "$3" "$4" "$5") | $(cell "$6" "$7" "$8") | $9 |"
}
