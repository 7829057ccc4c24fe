#!/bin/bash
# The chart's `helm test`: mail through smtpd, read back over POP3 and IMAP.
#
# Runs in the postern image (templates/tests/mail-test.yaml) and talks to the release's
# Services as mail clients do. It hosts TEST_DOMAIN with a user of its own (mailctl), sends
# one message to the SMTP port as another mail server would (no TLS, no login) and one
# through submission (STARTTLS, AUTH PLAIN as the user), finds both over POP3 (STLS,
# USER/PASS) and over IMAP (STARTTLS, LOGIN), and deletes the domain with its user and mail
# when it ends, passed or failed. A domain left behind by a killed run is deleted first.
# Every TLS session must present the certificate in TLS_CA: openssl s_client does the
# STARTTLS and checks it (the image has openssl, a dependency of ca-certificates).
#
# Environment:
#   SMTP_HOST SMTP_PORT SUBMISSION_PORT   smtpd's Service and ports
#   POP3_HOST POP3_PORT                   pop3d's (POP3_HOST empty: POP3 is not tested)
#   IMAP_HOST IMAP_PORT                   imapd's (IMAP_HOST empty: IMAP is not tested)
#   TEST_DOMAIN                           the domain to create and delete
#   TLS_CA                                the certificate the servers must present
#   REPLY_TIMEOUT                         seconds to wait for each reply (default 30)
#   PROXY_TRUSTED_NETWORKS                the front ends' (only to explain a silent server:
#                                         from those networks they wait for a PROXY header,
#                                         which this test cannot send)
set -euo pipefail

domain=${TEST_DOMAIN:?TEST_DOMAIN is not set}
user=helm-test@$domain
password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
reply_timeout=${REPLY_TIMEOUT:-30}
run=$(date +%s).$$
token_mx=postern-helm-test-mx-$run
token_sub=postern-helm-test-submission-$run

say() {
    printf 'mail-test: %s\n' "$*"
}

fail() {
    printf 'mail-test: FAILED: %s\n' "$*" >&2
    if [ -s /tmp/s_client.log ]; then
        sed 's/^/mail-test: openssl: /' /tmp/s_client.log >&2
    fi
    exit 1
}

mailctl() {
    postern mailctl "$@"
}

# ---- the test domain and user ----------------------------------------------------------
cleanup() {
    local rc=$?
    if [ -n "${created:-}" ]; then
        if mailctl domain del "$domain" >/dev/null; then
            say "deleted $domain, its user and its mail"
        else
            say "could not delete $domain: delete it with mailctl domain del $domain" >&2
            rc=1
        fi
    fi
    exit "$rc"
}

# ---- one connection at a time: the server's lines come from fd $rd, commands go to $wr ---
rd='' wr='' tls_pid='' label='' line=''

connect_plain() { # HOST PORT
    label="$1:$2"
    exec {rd}<>"/dev/tcp/$1/$2" || fail "$label: no connection"
    wr=$rd
    tls_pid=''
}

# STARTTLS by openssl s_client (PROTOCOL smtp, pop3 or imap), which then passes the session
# through as text: the greeting and the STARTTLS exchange are behind it already. It talks
# to this shell over two named pipes (a bash coproc's descriptors are closed by bash itself
# whenever it reaps the process, which can be in the middle of the next connection).
connect_tls() { # HOST PORT PROTOCOL
    label="$1:$2 ($3 STARTTLS)"
    rm -f /tmp/tls.in /tmp/tls.out
    mkfifo -m 600 /tmp/tls.in /tmp/tls.out
    openssl s_client -quiet -connect "$1:$2" -starttls "$3" \
        -CAfile "$TLS_CA" -partial_chain -verify_return_error \
        </tmp/tls.in >/tmp/tls.out 2>/tmp/s_client.log &
    tls_pid=$!
    exec {wr}>/tmp/tls.in {rd}</tmp/tls.out
}

disconnect() {
    if [ -n "$tls_pid" ]; then
        exec {wr}>&- {rd}<&-
        kill "$tls_pid" 2>/dev/null || true
        wait "$tls_pid" 2>/dev/null || true
        rm -f /tmp/tls.in /tmp/tls.out
    else
        exec {rd}<&-
    fi
    : >/tmp/s_client.log
}

send() { # LINE
    printf '%s\r\n' "$1" >&"$wr" || fail "$label: the connection is gone"
}

get_line() {
    local hint=''
    if [ -n "${PROXY_TRUSTED_NETWORKS:-}" ]; then
        hint="; if this pod's address is in PROXY_TRUSTED_NETWORKS ($PROXY_TRUSTED_NETWORKS),"
        hint+=" the server waits for a PROXY header: trust the load balancer's addresses only"
    fi
    IFS= read -r -t "$reply_timeout" -u "$rd" line ||
        fail "$label: no answer (connection refused or closed, TLS failed, or time out$hint)"
    line=${line%$'\r'}
}

# ---- SMTP --------------------------------------------------------------------------------
smtp_read() { # reads one reply, all its lines; $line is the last
    get_line
    while [[ $line == [0-9][0-9][0-9]-* ]]; do
        get_line
    done
}

smtp_reply() { # CODE: reads one reply and wants that code
    smtp_read
    [[ $line == "$1"[\ ]* || $line == "$1" ]] || fail "$label: wanted $1, got: $line"
}

smtp() { # COMMAND CODE
    send "$1"
    smtp_reply "$2"
}

smtp_message() { # FROM TOKEN
    smtp "DATA" 354
    send "From: <$1>"
    send "To: <$user>"
    send "Subject: $2"
    send "Date: $(date -R)"
    send "Message-ID: <$2@helm-test.invalid>"
    send ""
    send "Sent by the Postern chart's helm test: $2"
    smtp "." 250
}

# The MX port: mail from another server for a hosted domain, no TLS, no login. smtpd learns
# of the new domain over the bus at once (or at its next configuration refresh): until
# then the recipient is refused, so ask again a few times.
send_mx() {
    local sender=probe@sender.invalid tries=0
    connect_plain "$SMTP_HOST" "$SMTP_PORT"
    smtp_reply 220
    smtp "EHLO helm-test.invalid" 250
    while :; do
        smtp "MAIL FROM:<$sender>" 250
        send "RCPT TO:<$user>"
        smtp_read
        [[ $line == 250* ]] && break
        tries=$((tries + 1))
        [ "$tries" -lt 8 ] || fail "$label: RCPT TO:<$user>: $line"
        smtp "RSET" 250
        sleep 5
    done
    smtp_message "$sender" "$token_mx"
    smtp "QUIT" 221
    disconnect
    say "sent a message to $user through $SMTP_HOST:$SMTP_PORT"
}

# Submission: STARTTLS, AUTH PLAIN as the user, mail from the user to itself.
send_submission() {
    connect_tls "$SMTP_HOST" "$SUBMISSION_PORT" smtp
    smtp "EHLO helm-test.invalid" 250
    smtp "AUTH PLAIN $(printf '\0%s\0%s' "$user" "$password" | base64 -w0)" 235
    smtp "MAIL FROM:<$user>" 250
    smtp "RCPT TO:<$user>" 250
    smtp_message "$user" "$token_sub"
    smtp "QUIT" 221
    disconnect
    say "sent a message as $user through $SMTP_HOST:$SUBMISSION_PORT"
}

# ---- reading ---------------------------------------------------------------------------
found() { # TEXT: fails unless both messages are in it
    local t
    for t in "$token_mx" "$token_sub"; do
        [[ $1 == *"$t"* ]] || fail "$label: the message $t is not in the mailbox"
    done
}

pop3_ok() {
    get_line
    [[ $line == "+OK"* ]] || fail "$label: wanted +OK, got: $line"
}

read_pop3() {
    local count text='' i
    connect_tls "$POP3_HOST" "$POP3_PORT" pop3
    send "USER $user"
    pop3_ok
    send "PASS $password"
    pop3_ok
    send "STAT"
    pop3_ok
    read -r _ count _ <<<"$line"
    for ((i = 1; i <= count; i++)); do
        send "RETR $i"
        pop3_ok
        while get_line && [ "$line" != "." ]; do
            text+=$line$'\n'
        done
    done
    send "QUIT"
    pop3_ok
    disconnect
    found "$text"
    say "read both messages over POP3 from $POP3_HOST:$POP3_PORT"
}

imap() { # TAG COMMAND: sends it, gathers the untagged lines in $text, wants TAG OK
    send "$1 $2"
    while get_line && [[ $line != "$1 "* ]]; do
        text+=$line$'\n'
    done
    [[ $line == "$1 OK"* ]] || fail "$label: $1 ${2%% *}: $line"
}

read_imap() {
    local text=''
    connect_tls "$IMAP_HOST" "$IMAP_PORT" imap
    imap a1 "LOGIN \"$user\" \"$password\""
    imap a2 "SELECT INBOX"
    text=''
    imap a3 "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
    found "$text"
    imap a4 "LOGOUT"
    disconnect
    say "read both messages over IMAP from $IMAP_HOST:$IMAP_PORT"
}

# ---- the test ------------------------------------------------------------------------------
: "${SMTP_HOST:?}" "${SMTP_PORT:?}" "${SUBMISSION_PORT:?}" "${TLS_CA:?}"
: >/tmp/s_client.log
trap cleanup EXIT
trap '' PIPE # a write to a closed connection fails, and says so
mailctl domain del "$domain" >/dev/null 2>&1 || true
mailctl domain add "$domain" >/dev/null
created=1
printf '%s\n' "$password" | mailctl user add "$user" --password-stdin >/dev/null
say "created $user"
sleep 1
send_mx
send_submission
if [ -n "${POP3_HOST:-}" ]; then
    read_pop3
fi
if [ -n "${IMAP_HOST:-}" ]; then
    read_imap
fi
say "passed"
