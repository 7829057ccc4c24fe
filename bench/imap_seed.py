"""Fills the same mailboxes for both servers of bench/imap_bench.sh: a user's INBOX in
Postern's PostgreSQL (one INSERT of all rows, then mailboxes.uidnext) and the same user's
Maildir for Dovecot, with byte-identical messages (CRLF line ends) and the same flags.

  imap_seed.py DATABASE_URL MAILDIR_ROOT USER COUNT SIZE UID GID
  imap_seed.py check PORT_A PORT_B USER PASSWORD COUNT SIZE

The second form logs in to both servers on 127.0.0.1 and checks that they answer the
benchmark's commands alike (EXISTS, SEARCH FLAGGED, SEARCH BODY, FETCH FLAGS, bodies byte
for byte); it exits 1 with the differences, so a benchmark never compares unequal work.

Every message is exactly SIZE bytes. Message n (1-based, its UID in both) is \\Seen, also
\\Flagged when n % 10 == 0; its body holds the word "zebrafish" when n % 100 == 0 (the
SEARCH BODY point finds COUNT/100 messages); every fourth is multipart/mixed with a text
part and a base64 attachment, the others text/plain (so BODYSTRUCTURE has both shapes).
MAILDIR_ROOT/USER/Maildir gets the files, owned by UID:GID (Dovecot's mail processes)."""

import base64
import imaplib
import os
import re
import sys

import psycopg2

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo")


def text_lines(n, size):
    """Body text of about size bytes: CRLF lines of words, deterministic in n."""
    out = bytearray()
    i = 0
    while len(out) < size:
        words = [WORDS[(n * 7 + i * 3 + k) % len(WORDS)] for k in range(9)]
        out += (" ".join(words) + " %d\r\n" % i).encode()
        i += 1
    return bytes(out)


def fill(n, word, size):
    """Exactly size bytes (size >= 2) of text ending in CRLF, starting with word."""
    body = (word + text_lines(n, size))[: size - 2].rstrip(b"\r\n")
    return body + b"x" * (size - 2 - len(body)) + b"\r\n"


def message(user, n, size):
    head = (f"Return-Path: <load@bench.test>\r\n"
            f"From: Load Sender <load@bench.test>\r\n"
            f"To: Bench User <{user}>\r\n"
            f"Cc: other@bench.test\r\n"
            f"Subject: bench message {n} about {WORDS[n % len(WORDS)]}\r\n"
            f"Message-ID: <{n}.{user}>\r\n"
            f"Date: Fri, 27 Nov 2026 12:{n // 60 % 60:02d}:{n % 60:02d} +0000\r\n"
            f"MIME-Version: 1.0\r\n").encode()
    word = b"zebrafish here\r\n" if n % 100 == 0 else b""
    if n % 4 != 0:
        head += b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        return head + fill(n, word, size - len(head))
    boundary = b"=_bench_%d" % n
    head += b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    part1 = b"--" + boundary + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    attach = base64.encodebytes(bytes((n + i) % 256 for i in range(228))).replace(b"\n", b"\r\n")
    part2 = (b"\r\n--" + boundary + b"\r\nContent-Type: application/octet-stream; "
             b"name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + attach)
    tail = b"\r\n--" + boundary + b"--\r\n"
    text = fill(n, word, size - len(head) - len(part1) - len(part2) - len(tail))
    return head + part1 + text + part2 + tail


def answers(port, user, password, count, size):
    imap = imaplib.IMAP4("127.0.0.1", int(port))
    imap.login(user, password)
    typ, data = imap.select("INBOX")
    out = {"exists": int(data[0])}
    for key in ("FLAGGED", "BODY zebrafish"):
        typ, data = imap.search(None, *key.split())
        out["search " + key] = data[0].split()
    typ, data = imap.fetch("1:*", "(FLAGS)")
    # Flags in any order; \Recent is left out: it tells which session saw a message first.
    out["flags"] = []
    for d in data:
        m = re.match(rb"^(\d+) .*?FLAGS \(([^)]*)\)", d)
        names = sorted(f for f in m.group(2).split() if f != b"\\Recent") if m else [d]
        out["flags"].append((int(m.group(1)) if m else 0, names))
    out["flags"].sort()
    for n in (1, 4, 100, count):
        typ, data = imap.fetch(str(n), "(BODY.PEEK[])")
        out["body %d" % n] = data[0][1]
    imap.logout()
    return out


def check(port_a, port_b, user, password, count, size):
    a = answers(port_a, user, password, count, size)
    b = answers(port_b, user, password, count, size)
    bad = []
    for k in a:
        if a[k] != b[k]:
            first = next((i for i, (x, y) in enumerate(zip(a[k], b[k])) if x != y), None) \
                if isinstance(a[k], list) else None
            bad.append(k if first is None else "%s (first: %r vs %r)" % (k, a[k][first], b[k][first]))
    expect = {"exists": count, "search FLAGGED": count // 10,
              "search BODY zebrafish": count // 100, "flags": count}
    for k, v in expect.items():
        got = a[k] if isinstance(a[k], int) else len(a[k])
        if got != v:
            bad.append("%s: %d, expected %d" % (k, got, v))
    if len(a["body 1"]) != size:
        bad.append("body 1 has %d bytes, expected %d" % (len(a["body 1"]), size))
    if bad:
        print("imap_seed check %s: the servers differ: %s" % (user, ", ".join(bad)), file=sys.stderr)
        sys.exit(1)


def main():
    if sys.argv[1] == "check":
        port_a, port_b, user, password, count, size = sys.argv[2:8]
        check(port_a, port_b, user, password, int(count), int(size))
        return
    url, root, user, count, size, uid, gid = sys.argv[1:8]
    count, size, uid, gid = int(count), int(size), int(uid), int(gid)
    msgs = [message(user, n, size) for n in range(1, count + 1)]
    # Postern: every row in one statement, UIDs 1..count.
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT postern_inbox(id) FROM users WHERE address = %s", (user,))
        (mb,) = cur.fetchone()
        cur.execute(
            "INSERT INTO messages (mailbox_id, uid, internal_date, size, flags, raw) "
            "SELECT %s, r.n, '2026-11-27 12:00:00+00', length(r.raw), "
            "       CASE WHEN r.n %% 10 = 0 THEN ARRAY['\\Flagged', '\\Seen'] "
            "            ELSE ARRAY['\\Seen'] END, r.raw "
            "FROM unnest(%s::bytea[]) WITH ORDINALITY r(raw, n)",
            (mb, [psycopg2.Binary(m) for m in msgs]))
        cur.execute("UPDATE mailboxes SET uidnext = %s WHERE id = %s", (count + 1, mb))
    conn.close()
    # Dovecot: a Maildir; the names sort in UID order, S= and W= spare it reading the
    # files for their sizes, ":2,S" / ":2,FS" are the flags.
    mdir = os.path.join(root, user, "Maildir")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(mdir, sub), exist_ok=True)
    for n, raw in enumerate(msgs, 1):
        flags = "FS" if n % 10 == 0 else "S"
        name = f"{1795000000 + n}.M{n}P1.bench,S={len(raw)},W={len(raw)}:2,{flags}"
        with open(os.path.join(mdir, "cur", name), "wb") as f:
            f.write(raw)
        os.utime(os.path.join(mdir, "cur", name), (1795000000 + n, 1795000000 + n))
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, user)):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    os.chown(os.path.join(root, user), uid, gid)


if __name__ == "__main__":
    main()
