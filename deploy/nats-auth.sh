#!/bin/sh
# The bus's users, passwords and permissions, from the one table of who may publish and
# subscribe what (helm/postern/files/nats-permissions.txt, beside the chart that reads it too).
#
#   nats-auth.sh users                 the users, one a line
#   nats-auth.sh passwords DIR         DIR/<user>.password for every user that has none yet:
#                                      a random password, mode 0600; existing ones are kept
#   nats-auth.sh config DIR [test]     the nats-server `authorization` block, with the
#                                      passwords of DIR; "test" adds the e2e harness's own user
#                                      `test`, allowed everything (tests/e2e only, never a
#                                      deployment)
#
# Environment: NATS_PERMISSIONS, the table (default: the chart's copy in this repository).
# Rotating a password: replace DIR/<user>.password (or delete it and run `passwords`), make
# the config again, reload nats-server (SIGHUP), restart the service that uses it.
set -eu

prog=nats-auth.sh
HERE=$(cd "$(dirname "$0")" && pwd)
TABLE=${NATS_PERMISSIONS:-$(cd "$HERE/.." && pwd)/helm/postern/files/nats-permissions.txt}

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $prog users | passwords DIR | config DIR [test]" >&2
    exit 2
}

[ -r "$TABLE" ] || die "cannot read the permission table $TABLE"

users() {
    awk '!/^[ \t]*(#|$)/ && !seen[$1]++ { print $1 }' "$TABLE"
}

# A password: 32 hex digits from /dev/urandom (no quoting needed anywhere).
new_password() {
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

cmd_passwords() {
    dir=$1
    mkdir -p "$dir"
    chmod 700 "$dir"
    for u in $(users); do
        f=$dir/$u.password
        [ -s "$f" ] && continue
        (umask 077 && new_password >"$f.tmp" && echo >>"$f.tmp" && mv "$f.tmp" "$f")
    done
}

cmd_config() {
    dir=$1
    test_user=${2:-}
    for u in $(users); do
        [ -s "$dir/$u.password" ] || die "no password for $u in $dir (run '$prog passwords $dir')"
    done
    awk -v dir="$dir" -v test_user="$test_user" -v table="$TABLE" '
        function add(list, subject) { return list == "" ? "\"" subject "\"" : list ", \"" subject "\"" }
        /^[ \t]*(#|$)/ { next }
        {
            u = $1; rule = $2
            if (!(u in known)) { known[u] = 1; order[++n] = u }
            if (rule == "publish") {
                for (i = 3; i <= NF; i++) publ[u] = add(publ[u], $i)
            } else if (rule == "subscribe") {
                for (i = 3; i <= NF; i++) subl[u] = add(subl[u], $i)
            } else if (rule == "responses") {
                resp[u] = 1
            } else if (rule == "like") {
                if (!($3 in known)) { print "nats-auth.sh: " u " is like " $3 ", who has no line before it" > "/dev/stderr"; exit 1 }
                publ[u] = publ[$3]; subl[u] = subl[$3]; resp[u] = resp[$3]
            } else {
                print "nats-auth.sh: " table ": unknown rule " rule > "/dev/stderr"; exit 1
            }
        }
        END {
            print "# Made by deploy/nats-auth.sh from " table ": edit the table, not this."
            print "authorization {"
            print "  users = ["
            for (k = 1; k <= n; k++) {
                u = order[k]
                f = dir "/" u ".password"
                getline pw < f
                close(f)
                print "    {"
                print "      user: \"" u "\""
                print "      password: \"" pw "\""
                print "      permissions: {"
                if (publ[u] != "") print "        publish: { allow: [" publ[u] "] }"
                else print "        publish: { deny: [\">\"] }"
                print "        subscribe: { allow: [" add(subl[u], "_INBOX." u ".>") "] }"
                if (resp[u]) print "        allow_responses: true"
                print "      }"
                print "    }"
            }
            if (test_user != "") {
                f = dir "/test.password"
                getline pw < f
                close(f)
                print "    # The e2e harness'"'"'s own client (tests/e2e/conftest.py): allowed everything."
                print "    # Only in the harness'"'"'s nats-server, never in a deployment."
                print "    { user: \"test\", password: \"" pw "\" }"
            }
            print "  ]"
            print "}"
        }' "$TABLE"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    users)
        [ $# -eq 0 ] || usage
        users
        ;;
    passwords)
        [ $# -eq 1 ] || usage
        cmd_passwords "$1"
        ;;
    config)
        [ $# -ge 1 ] && [ $# -le 2 ] || usage
        if [ "${2:-}" = test ]; then
            [ -s "$1/test.password" ] || (umask 077 && new_password >"$1/test.password" && echo >>"$1/test.password")
        elif [ -n "${2:-}" ]; then
            usage
        fi
        cmd_config "$@"
        ;;
    *) usage ;;
esac
