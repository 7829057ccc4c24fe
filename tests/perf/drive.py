"""The fixed client of tests/perf/callgrind.sh: the same conversations, with the same bytes,
every run, so that the server's instruction count for them is reproducible.

  drive.py seed DATABASE_URL ADDRESS          put the one POP3 message into ADDRESS's INBOX
  drive.py smtp PORT RCPT WARMUP N            WARMUP transactions, mark, mark, N, mark
  drive.py pop3 PORT USER PASSWORD WARMUP N   the same with POP3 sessions

A transaction is one connection: SMTP greeting, EHLO, MAIL, RCPT (a local user), DATA, the
message, the 250 after the commit, QUIT; POP3 greeting, USER, PASS, STAT, RETR 1, QUIT. A
mark is a connection that sends one NOOP (SMTP) or CAPA (POP3), then QUIT: the server runs
under callgrind with --dump-before on that command's handler, so each mark ends a profile.
The profile ended by the third mark holds the N transactions and the part of two marks that
falls between their handlers; the one ended by the second, that part alone, which is
subtracted. Every reply is checked: an unexpected one fails the run rather than measure
another path."""

import poplib
import smtplib
import sys

SENDER = "sender@example.org"
# 4 KiB-ish of text: a header, 64 lines of body, one line in eight starting with a dot
# (dot-stuffed by the client for SMTP, by pop3d for RETR).
HEADER = ("From: Perf <sender@example.org>\r\nTo: <{rcpt}>\r\nSubject: callgrind check\r\n"
          "Message-ID: <perf@example.org>\r\nDate: Sat, 01 Jan 2028 00:00:00 +0000\r\n\r\n")
BODY = "".join(("." if i % 8 == 0 else "") + "line %04d " % i + "abcdefghijklmnopqrstuvwxyz" * 2
               + "\r\n" for i in range(64))


def message(rcpt):
    return (HEADER.format(rcpt=rcpt) + BODY).encode()


def expect(what, code, want):
    if code != want:
        raise SystemExit(f"drive.py: {what}: expected {want}, got {code}")


def smtp_transaction(port, rcpt):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="perf.client", timeout=120)
    expect("EHLO", s.ehlo()[0], 250)
    expect("MAIL", s.mail(SENDER)[0], 250)
    expect("RCPT", s.rcpt(rcpt)[0], 250)
    code, text = s.data(message(rcpt))
    expect("end of data", code, 250)
    if b"queued as" not in text:
        raise SystemExit(f"drive.py: end of data: {text!r}")
    expect("QUIT", s.quit()[0], 221)


def smtp_mark(port):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="perf.client", timeout=120)
    expect("NOOP", s.noop()[0], 250)
    expect("QUIT", s.quit()[0], 221)


def pop3_session(port, user, password, size):
    p = poplib.POP3("127.0.0.1", port, timeout=120)
    p.user(user)
    p.pass_(password)
    count, octets = p.stat()
    if count != 1 or octets != size:
        raise SystemExit(f"drive.py: STAT: expected 1 message of {size} octets, got {count} {octets}")
    resp, lines, _ = p.retr(1)
    if not resp.startswith(b"+OK") or sum(len(l) + 2 for l in lines) != size:
        raise SystemExit(f"drive.py: RETR: {resp!r}, {len(lines)} lines")
    p.quit()


def pop3_mark(port):
    p = poplib.POP3("127.0.0.1", port, timeout=120)
    p.capa()
    p.quit()


def seed(url, address):
    import psycopg2  # Debian's python3-psycopg2 (only the seeding needs it)

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT postern_deliver(%s, %s, ARRAY[%s], %s, '{}', NULL)",
                    ("PERFSEED", SENDER, address, psycopg2.Binary(message(address))))
    conn.close()


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "seed":
        seed(*args)
        return
    if mode == "smtp":
        port, rcpt, warmup, n = int(args[0]), args[1], int(args[2]), int(args[3])
        run = lambda: smtp_transaction(port, rcpt)  # noqa: E731
        mark = lambda: smtp_mark(port)  # noqa: E731
    elif mode == "pop3":
        port, user, password, warmup, n = int(args[0]), args[1], args[2], int(args[3]), int(args[4])
        size = len(message(user))
        run = lambda: pop3_session(port, user, password, size)  # noqa: E731
        mark = lambda: pop3_mark(port)  # noqa: E731
    else:
        raise SystemExit(f"drive.py: unknown mode {mode}")
    for _ in range(warmup):
        run()
    mark()  # ends profile 1: startup and warm-up
    mark()  # ends profile 2: the marks alone (the end of one, the start of the next)
    for _ in range(n):
        run()
    mark()  # ends profile 3: the same and the N transactions


if __name__ == "__main__":
    main()
