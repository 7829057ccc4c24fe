"""Fills the same mailboxes for both servers of bench/pop3_bench.sh: every user's INBOX in
Postern's PostgreSQL (through postern_deliver, as smtpd stores mail) and a Maildir per user
for Dovecot, with byte-identical messages (CRLF line ends, some lines starting with a dot).

  pop3_seed.py DATABASE_URL MAILDIR_ROOT USERS MESSAGES UID GID

USERS are bench0@bench.test .. bench<USERS-1>@bench.test; MAILDIR_ROOT/<user>/Maildir gets
the files, owned by UID:GID (the user Dovecot's mail processes run as)."""

import os
import sys

import psycopg2

SIZES = (2_000, 8_000, 32_000, 128_000)  # cycled: about 42 kB on average


def message(user, n):
    size = SIZES[n % len(SIZES)]
    head = (f"Return-Path: <load@bench.test>\r\nFrom: Load <load@bench.test>\r\nTo: <{user}>\r\n"
            f"Subject: bench message {n}\r\nMessage-ID: <{n}.{user}>\r\n"
            "Date: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\n").encode()
    body = bytearray()
    i = 0
    while len(head) + len(body) < size:
        # One line in eight starts with a dot, so both servers stuff.
        lead = b"." if i % 8 == 0 else b""
        body += lead + b"line %06d " % i + b"abcdefghijklmnopqrstuvwxyz0123456789" * 1 + b"\r\n"
        i += 1
    return head + bytes(body)


def main():
    url, root, users, count, uid, gid = sys.argv[1:7]
    users, count, uid, gid = int(users), int(count), int(uid), int(gid)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for u in range(users):
            user = f"bench{u}@bench.test"
            mdir = os.path.join(root, user, "Maildir")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(mdir, sub), exist_ok=True)
            for n in range(count):
                raw = message(user, n)
                cur.execute("SELECT postern_deliver(%s, %s, ARRAY[%s], %s, '{}', NULL)",
                            (f"B{u}N{n}", "load@bench.test", user, psycopg2.Binary(raw)))
                # S= and W= (sizes as stored and as sent, the same with CRLF) spare Dovecot
                # reading the file for LIST; ":2,S" (seen) spares renaming it at QUIT.
                name = f"{1795000000 + n}.M{n}P{u}.bench,S={len(raw)},W={len(raw)}:2,S"
                with open(os.path.join(mdir, "cur", name), "wb") as f:
                    f.write(raw)
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, user)):
                for name in dirnames + filenames:
                    os.chown(os.path.join(dirpath, name), uid, gid)
            os.chown(os.path.join(root, user), uid, gid)
    conn.close()


if __name__ == "__main__":
    main()
