"""imapd: IMAP4rev1 with IDLE, UIDPLUS, LITERAL+, NAMESPACE, SPECIAL-USE, MOVE, UNSELECT, ID,
ENABLE and CONDSTORE, driven by Python's imaplib, curl and fetchmail, and by a raw conversation
for what those will not send (literals, bad input). Mail arrives through smtpd."""

import base64
import imaplib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from support import RawConversation, b64, plain_response, token, wait_until

SENDER = "sender@outside.example"
CRLF = b"\r\n"


# --- a raw IMAP conversation ---------------------------------------------------------------

class Imap(RawConversation):
    """A byte-exact IMAP conversation: `cmd` sends a tagged command and returns (untagged
    lines, tagged status line); literals in answers are kept inside the line they belong to."""

    def __init__(self, port, tls_context=None, implicit_tls=False, source=None, timeout=30):
        super().__init__(port, tls_context, implicit_tls, source, timeout)
        self.n = 0
        self.greeting = self.line()

    def line(self):
        """One response line, with any literal it announces read into it."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            ln, self.buf = self.buf.split(b"\r\n", 1)
            out += ln
            m = re.search(rb"\{(\d+)\}$", ln)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def starttls(self):
        """STARTTLS, then the handshake (RFC 3501 section 6.2.1)."""
        self.ok("STARTTLS")
        self._wrap()

    def tag(self):
        self.n += 1
        return f"t{self.n}"

    def cmd(self, text):
        tag = self.tag()
        self.send(tag.encode() + b" " + (text.encode() if isinstance(text, str) else text) + CRLF)
        return self.until(tag)

    def until(self, tag):
        untagged = []
        while True:
            ln = self.line()
            if ln.startswith(tag.encode() + b" "):
                return untagged, ln[len(tag) + 1:].decode("utf-8", "replace")
            untagged.append(ln)

    def ok(self, text):
        untagged, status = self.cmd(text)
        assert status.startswith("OK"), f"{text!r}: {status}"
        return untagged


@pytest.fixture
def imap(postern):
    """imap(tls="starttls"|"implicit"|None): a connected Imap, greeting read, closed after."""
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    clients = []

    def connect(tls="starttls", source=None, timeout=30):
        c = Imap(postern.port("imaps") if tls == "implicit" else postern.port("imap"),
                 postern.tls_context(), implicit_tls=(tls == "implicit"), source=source,
                 timeout=timeout)
        clients.append(c)
        assert c.greeting.startswith(b"* OK"), c.greeting
        if tls == "starttls":
            c.starttls()
        return c

    yield connect
    for c in clients:
        c.close()


@pytest.fixture
def mailbox(postern, new_user):
    """A fresh user with a known password."""
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    password = "Imap-pw-" + token()[-8:]

    class Mailbox:
        pass

    m = Mailbox()
    m.address, m.password = new_user(password), password
    return m


def imaplib_client(postern, mailbox, implicit=True):
    ctx = postern.tls_context()
    if implicit:
        c = imaplib.IMAP4_SSL("127.0.0.1", postern.port("imaps"), ssl_context=ctx)
    else:
        c = imaplib.IMAP4("127.0.0.1", postern.port("imap"))
        c.starttls(ssl_context=ctx)
    c.login(mailbox.address, mailbox.password)
    return c


def deliver(postern, rcpt, message):
    with postern.smtplib_client("mx") as s:
        s.sendmail(SENDER, [rcpt], message)
    stored = [raw for _, _, raw in postern.inbox(rcpt) if raw.endswith(message)]
    assert len(stored) == 1, f"message not stored once for {rcpt}"
    return stored[0]


def simple_message(tok, body=b"Hello there.\r\n", subject=None):
    return (f"From: Sender <{SENDER}>\r\nTo: <someone@example.test>\r\n"
            f"Subject: {subject or tok}\r\nMessage-ID: <{tok}@client.test>\r\n"
            "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n").encode() + body


def nested_message(tok):
    """multipart/mixed: alternative (plain, html), an attachment, an attached message."""
    inner = (b"From: Inner <inner@example.org>\r\nSubject: inner\r\n"
             b"Content-Type: text/plain; charset=us-ascii\r\n\r\ninner body\r\n")
    return (f"From: <{SENDER}>\r\nTo: <a@example.test>\r\nSubject: {tok}\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
            "--outer\r\n"
            "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n"
            "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n"
            "--alt--\r\n"
            "--outer\r\n"
            "Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\n"
            "AAECAwQFBgcICQ==\r\n"
            "--outer\r\n"
            "Content-Type: message/rfc822\r\n\r\n").encode() + inner + b"\r\n--outer--\r\n"


def fetch_one(c, spec, items):
    typ, data = c.fetch(spec, items)
    assert typ == "OK", data
    return data


# --- greeting, capabilities, login --------------------------------------------------------

def test_greeting_and_capabilities_before_and_after_tls(imap):
    c = imap(tls=None)
    assert b"Postern IMAP4rev1 server ready" in c.greeting
    caps = c.ok("CAPABILITY")[0].split()
    for cap in (b"IMAP4rev1", b"STARTTLS", b"LOGINDISABLED", b"IDLE", b"UIDPLUS", b"LITERAL+",
                b"NAMESPACE", b"SPECIAL-USE", b"MOVE", b"UNSELECT", b"ID", b"ENABLE",
                b"CONDSTORE", b"SASL-IR"):
        assert cap in caps, caps
    assert not any(x.startswith(b"AUTH=") for x in caps)
    c.starttls()
    caps = c.ok("CAPABILITY")[0].split()
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    assert b"AUTH=PLAIN" in caps and b"AUTH=SCRAM-SHA-256" in caps


def test_login_refused_before_tls(imap, mailbox):
    c = imap(tls=None)
    _, status = c.cmd(f"LOGIN {mailbox.address} {mailbox.password}")
    assert status.startswith("NO [PRIVACYREQUIRED]"), status


def test_login_each_way(postern, imap, mailbox):
    c = imap()
    _, status = c.cmd(f'LOGIN "{mailbox.address}" "{mailbox.password}"')
    assert status.startswith("OK [CAPABILITY IMAP4rev1"), status
    c = imap(tls="implicit")
    c.ok(f"AUTHENTICATE PLAIN {plain_response(mailbox.address, mailbox.password)}")
    c = imap()
    c.send("a AUTHENTICATE PLAIN\r\n")
    assert c.line() == b"+ "
    c.send(plain_response(mailbox.address, mailbox.password) + "\r\n")
    assert c.until("a")[1].startswith("OK")
    c = imap()
    c.send("b AUTHENTICATE LOGIN\r\n")
    assert c.line().startswith(b"+ ")
    c.send(b64(mailbox.address.encode()) + "\r\n")
    assert c.line().startswith(b"+ ")
    c.send(b64(mailbox.password.encode()) + "\r\n")
    assert c.until("b")[1].startswith("OK")
    # A literal for the password (what clients send for odd characters).
    c = imap()
    pw = mailbox.password.encode()
    c.send(f"c LOGIN {mailbox.address} {{{len(pw)}}}\r\n")
    assert c.line().startswith(b"+ ")
    c.send(pw + b"\r\n")
    assert c.until("c")[1].startswith("OK")


def test_scram_sha_256_through_imaplib(postern, mailbox):
    """imaplib's authenticate() with our own SCRAM client steps (RFC 7677)."""
    import hashlib
    import hmac
    import os
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={mailbox.address},r={cnonce}"
    state = {}

    def step(challenge):
        if "server_first" not in state:
            if challenge:
                pass
            state["server_first"] = None
            return ("n,," + first_bare).encode()
        if state["server_first"] is None:
            sf = challenge.decode()
            state["server_first"] = sf
            attrs = dict(kv.split("=", 1) for kv in sf.split(","))
            salt = base64.b64decode(attrs["s"])
            salted = hashlib.pbkdf2_hmac("sha256", mailbox.password.encode(), salt, int(attrs["i"]))
            ckey = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            skey = hashlib.sha256(ckey).digest()
            final_wo = f"c=biws,r={attrs['r']}"
            auth = f"{first_bare},{sf},{final_wo}".encode()
            sig = hmac.new(skey, auth, hashlib.sha256).digest()
            proof = bytes(a ^ b for a, b in zip(ckey, sig))
            state["server_key"] = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            state["auth"] = auth
            return f"{final_wo},p={base64.b64encode(proof).decode()}".encode()
        want = hmac.new(state["server_key"], state["auth"], hashlib.sha256).digest()
        assert challenge.decode() == "v=" + base64.b64encode(want).decode()
        return b""

    c = imaplib.IMAP4_SSL("127.0.0.1", postern.port("imaps"), ssl_context=postern.tls_context())
    typ, _ = c.authenticate("SCRAM-SHA-256", step)
    assert typ == "OK"
    c.logout()


def test_wrong_password_is_authenticationfailed(imap, mailbox):
    c = imap()
    _, status = c.cmd(f"LOGIN {mailbox.address} wrong-{token()}")
    assert status.startswith("NO [AUTHENTICATIONFAILED]"), status
    _, status = c.cmd(f"LOGIN nobody-{token()}@example.test wrong")
    assert status.startswith("NO [AUTHENTICATIONFAILED]"), status


def test_commands_in_the_wrong_state(imap, mailbox):
    c = imap()
    for cmd in ("SELECT INBOX", "LIST \"\" *", "FETCH 1 FLAGS", "EXPUNGE"):
        _, status = c.cmd(cmd)
        assert status.startswith("BAD"), (cmd, status)
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    for cmd in ("FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "CLOSE", "EXPUNGE"):
        _, status = c.cmd(cmd)
        assert status.startswith("BAD"), (cmd, status)
    _, status = c.cmd(f"LOGIN {mailbox.address} {mailbox.password}")
    assert status.startswith("BAD")


def test_id_namespace_enable(imap, mailbox):
    c = imap()
    untagged = c.ok('ID ("name" "pytest" "version" "1")')
    assert untagged[0].startswith(b'* ID ("name" "Postern"'), untagged
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    assert c.ok("NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL']
    assert c.ok("ENABLE CONDSTORE") == [b"* ENABLED CONDSTORE"]


# --- mailboxes ----------------------------------------------------------------------------

def test_special_use_folders_for_a_new_user(postern, mailbox):
    c = imaplib_client(postern, mailbox)
    typ, data = c.list()
    assert typ == "OK"
    got = {}
    for ln in data:
        m = re.match(rb'\(([^)]*)\) "/" (.+)', ln)
        got[m.group(2).strip(b'"').decode()] = m.group(1).decode().split()
    for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                      ("Junk", "\\Junk")):
        assert use in got[name], got
    assert "INBOX" in got
    c.logout()


def test_create_rename_delete_subscribe(postern, mailbox):
    c = imaplib_client(postern, mailbox)
    assert c.create("Projects/2026")[0] == "OK"
    assert c.create("Projects/2026")[0] == "NO"
    names = [ln.split(b'"/" ')[1].strip(b'"') for ln in c.list('""', "Projects*")[1]]
    assert sorted(names) == [b"Projects", b"Projects/2026"]
    assert [ln for ln in c.list('""', "Projects/%")[1]][0].endswith(b"Projects/2026")
    assert c.rename("Projects", "Archive2")[0] == "OK"
    names = [ln.split(b'"/" ')[1].strip(b'"') for ln in c.list('""', "Archive2*")[1]]
    assert sorted(names) == [b"Archive2", b"Archive2/2026"]
    assert c.unsubscribe("Archive2/2026")[0] == "OK"
    lsub = [ln.split(b'"/" ')[1].strip(b'"') for ln in c.lsub('""', "Archive2*")[1]]
    assert lsub == [b"Archive2"]
    assert c.delete("Archive2/2026")[0] == "OK"
    assert c.delete("INBOX")[0] == "NO"
    assert c.select("No/Such")[0] == "NO"
    c.logout()


def test_status(postern, mailbox):
    tok = token()
    deliver(postern, mailbox.address, simple_message(tok))
    c = imaplib_client(postern, mailbox)
    typ, data = c.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
    assert typ == "OK"
    m = re.search(rb"MESSAGES (\d+).*UIDNEXT (\d+).*UIDVALIDITY (\d+).*UNSEEN (\d+).*"
                  rb"HIGHESTMODSEQ (\d+)", data[0])
    assert m and int(m.group(1)) == 1 and int(m.group(4)) == 1, data
    c.logout()


# --- SELECT, FETCH --------------------------------------------------------------------------

def test_select_and_fetch_whole_message(postern, mailbox):
    tok = token()
    stored = deliver(postern, mailbox.address, simple_message(tok))
    c = imaplib_client(postern, mailbox, implicit=False)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    assert int(c.untagged_responses["UIDVALIDITY"][0]) > 0
    data = fetch_one(c, "1", "(UID RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == stored
    assert int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1)) == len(stored)
    # PEEK did not set \Seen; BODY[] does, and says so with FLAGS.
    assert b"\\Seen" not in fetch_one(c, "1", "FLAGS")[0]
    data = fetch_one(c, "1", "BODY[TEXT]")
    flat = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data)
    assert b"\\Seen" in flat and b"Hello there." in flat
    c.logout()


def test_fetch_envelope_and_bodystructure_of_nested_multipart(postern, mailbox):
    tok = token()
    deliver(postern, mailbox.address, nested_message(tok))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    data = fetch_one(c, "1", "(ENVELOPE BODYSTRUCTURE)")
    text = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data).decode()
    assert f'"{tok}"' in text
    assert '("text" "plain"' in text and '("text" "html"' in text
    assert '"alternative"' in text and '"mixed"' in text
    assert '"message" "rfc822"' in text and '"inner"' in text
    assert '("attachment" ("filename" "a.bin"))' in text
    # Sections: the html part, the attachment, the attached message's header and text.
    data = fetch_one(c, "1", "(BODY.PEEK[1.2] BODY.PEEK[2] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT]"
                             " BODY.PEEK[1.1.MIME])")
    parts = {re.search(rb"(BODY\[[^\]]*\])", x[0]).group(1): x[1] for x in data if isinstance(x, tuple)}
    assert parts[b"BODY[1.2]"] == b"<p>html part</p>"
    assert parts[b"BODY[2]"] == b"AAECAwQFBgcICQ=="
    assert parts[b"BODY[3.HEADER]"].startswith(b"From: Inner <inner@example.org>")
    assert parts[b"BODY[3.TEXT]"].startswith(b"inner body")
    assert parts[b"BODY[1.1.MIME]"].startswith(b"Content-Type: text/plain")
    # Computed once and kept: the store has the cached form now.
    rows = postern.sql("SELECT bodystructure IS NOT NULL, envelope IS NOT NULL FROM messages m "
                       "JOIN mailboxes b ON b.id = m.mailbox_id JOIN users u ON u.id = b.user_id "
                       "WHERE u.address = %s", (mailbox.address,))
    assert rows == [(True, True)]
    c.logout()


def test_partial_fetch_and_header_fields(postern, mailbox):
    tok = token()
    deliver(postern, mailbox.address, simple_message(tok, body=b"0123456789abcdefghij\r\n"))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    data = fetch_one(c, "1", "(BODY.PEEK[TEXT]<5.10>)")
    assert b"BODY[TEXT]<5>" in data[0][0] and data[0][1] == b"56789abcde"
    data = fetch_one(c, "1", "(BODY.PEEK[HEADER.FIELDS (Subject Message-ID)])")
    assert data[0][1] == f"Subject: {tok}\r\nMessage-ID: <{tok}@client.test>\r\n\r\n".encode()
    data = fetch_one(c, "1", "(BODY.PEEK[HEADER.FIELDS.NOT (Subject Message-ID Date To)])")
    assert b"From: Sender" in data[0][1] and b"Subject" not in data[0][1]
    assert data[0][1].endswith(b"\r\n\r\n")
    c.logout()


def test_large_message_streamed_byte_for_byte(postern, mailbox):
    tok = token()
    line = b"x" * 998 + b"\r\n"
    body = line * 3000  # about 3 MB: larger than what imapd reads whole
    stored = deliver(postern, mailbox.address, simple_message(tok, body=body))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    data = fetch_one(c, "1", "(BODY.PEEK[])")
    assert data[0][1] == stored
    data = fetch_one(c, "1", "(BODY.PEEK[]<1000.5000>)")
    assert data[0][1] == stored[1000:6000]
    c.logout()


# --- SEARCH, STORE, COPY/MOVE, APPEND, EXPUNGE ------------------------------------------------

def test_search_keys(postern, mailbox):
    tok = token()
    deliver(postern, mailbox.address, simple_message(tok + "a", subject="alpha report"))
    deliver(postern, mailbox.address, simple_message(tok + "b", body=b"needle in body\r\n",
                                                     subject="beta"))
    deliver(postern, mailbox.address, simple_message(tok + "c", subject="gamma"))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    c.store("3", "+FLAGS", "(\\Flagged)")
    def search(*crit):
        typ, data = c.search(None, *crit)
        assert typ == "OK", data
        return data[0].split()
    assert search("ALL") == [b"1", b"2", b"3"]
    assert search("SUBJECT", '"ALPHA"') == [b"1"]
    assert search("BODY", "needle") == [b"2"]
    assert search("TEXT", "needle") == [b"2"]
    assert search("FLAGGED") == [b"3"]
    assert search("UNFLAGGED") == [b"1", b"2"]
    assert search("OR", "SUBJECT", "beta", "SUBJECT", "gamma") == [b"2", b"3"]
    assert search("NOT", "SUBJECT", "beta") == [b"1", b"3"]
    assert search("2:*") == [b"2", b"3"]
    assert search("FROM", "sender@outside") == [b"1", b"2", b"3"]
    assert search("HEADER", "Message-ID", tok + "c") == [b"3"]
    assert search("LARGER", "10", "SMALLER", "100000") == [b"1", b"2", b"3"]
    assert search("SINCE", "1-Jan-2020") == [b"1", b"2", b"3"]
    assert search("BEFORE", "1-Jan-2020") == []
    assert search("SENTON", "1-Dec-2026") == [b"1", b"2", b"3"]
    assert search("UNSEEN") == [b"1", b"2", b"3"]
    assert search("CHARSET", "UTF-8", "SUBJECT", "gamma") == [b"3"]
    typ, data = c.search("KOI8-R", "SUBJECT", "x")
    assert typ == "NO"
    typ, data = c.uid("SEARCH", None, "ALL")
    assert len(data[0].split()) == 3
    c.logout()


def test_search_charset_utf8_decodes_mime(postern, imap, mailbox):
    """RFC 3501 section 6.4.4: with CHARSET UTF-8 and a string that is not US-ASCII, RFC 2047
    words in headers and quoted-printable/base64 bodies are decoded before comparing; a
    US-ASCII search still compares the raw text."""
    tok = token()
    head = (f"From: <{SENDER}>\r\nTo: <x@example.test>\r\nMessage-ID: <{tok}@t>\r\n"
            "MIME-Version: 1.0\r\n")
    deliver(postern, mailbox.address, (
        head + "Subject: =?utf-8?q?caf=C3=A9_menu?=\r\n\r\nnothing special\r\n").encode())
    deliver(postern, mailbox.address, (
        head + "Subject: dessert\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "cr=C3=A8me br=C3=BB=\r\nl=C3=A9e\r\n").encode())
    deliver(postern, mailbox.address, (
        head + "Subject: greetings\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZSBhdXMgS8O2bG4=\r\n--b--\r\n"
        ).encode())
    c = imap("implicit")
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")

    def search(criteria):
        data = criteria.encode() if isinstance(criteria, str) else criteria
        untagged, status = c.cmd(b"SEARCH " + data)
        assert status.startswith("OK"), (criteria, status)
        found = [ln for ln in untagged if ln.startswith(b"* SEARCH")]
        assert len(found) == 1, untagged
        return [int(v) for v in found[0].split()[2:]]

    def utf8(key, text):
        b = text.encode()
        return b"CHARSET UTF-8 " + key.encode() + b" {%d+}\r\n" % len(b) + b

    assert search(utf8("SUBJECT", "café")) == [1]
    assert search(utf8("TEXT", "café")) == [1]
    assert search(utf8("BODY", "café")) == []
    assert search(utf8("BODY", "crème brûlée")) == [2]
    assert search(utf8("TEXT", "crème")) == [2]
    assert search(utf8("BODY", "Grüße aus Köln")) == [3]
    assert search(b"CHARSET UTF-8 NOT BODY {6+}\r\ncr\xc3\xa8me") == [1, 3]
    assert search(b"CHARSET UTF-8 OR SUBJECT {5+}\r\ncaf\xc3\xa9 BODY {5+}\r\nK\xc3\xb6ln") == [1, 3]
    # US-ASCII: the raw text, encoded as it is stored.
    assert search("SUBJECT caf=C3=A9") == [1]
    assert search("BODY cr=C3=A8me") == [2]
    assert search("BODY R3LDvMOfZSBhdXMgS8O2bG4") == [3]
    assert search("CHARSET UTF-8 SUBJECT menu") == [1]  # a US-ASCII string: raw text
    assert search("CHARSET UTF-8 HEADER Subject {5+}\r\ncaf\xc3\xa9".encode("latin-1")) == [1]
    rows = postern.sql(
        "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id "
        "JOIN users u ON u.id = b.user_id WHERE u.address = %s AND m.search_body IS NULL",
        (mailbox.address,))
    assert rows == [(0,)]
    # A message that arrives later is decoded by the next such search.
    deliver(postern, mailbox.address, (
        head + "Subject: =?iso-8859-1?q?caf=E9?= again\r\n\r\nx\r\n").encode())
    c.ok("NOOP")
    assert search(utf8("SUBJECT", "café")) == [1, 4]
    # A message too large to decode (over 8 MiB) gets an empty decoded form: the search
    # goes on, and US-ASCII searches still see its raw text.
    box = ("(SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id "
           "WHERE u.address = %s AND m.name = 'INBOX')")
    postern.sql(
        "WITH b AS (UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = " + box +
        " RETURNING id, uidnext - 1 AS uid) "
        "INSERT INTO messages (mailbox_id, uid, size, raw, flags) "
        "SELECT b.id, b.uid, length(r), r, '{}' FROM b, LATERAL (SELECT convert_to("
        "'Subject: big =?utf-8?q?caf=C3=A9?=' || E'\\r\\n\\r\\n' || repeat('x', 9 << 20), "
        "'UTF8') AS r) x", (mailbox.address,))
    c.ok("NOOP")
    assert search(utf8("SUBJECT", "café")) == [1, 4]
    assert search("SUBJECT big") == [5]
    rows = postern.sql(
        "SELECT m.search_headers, m.search_body FROM messages m JOIN mailboxes b "
        "ON b.id = m.mailbox_id JOIN users u ON u.id = b.user_id "
        "WHERE u.address = %s AND m.uid = 5", (mailbox.address,))
    assert rows == [("", "")]


def test_store_flags_and_keywords(postern, mailbox):
    deliver(postern, mailbox.address, simple_message(token()))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    typ, data = c.store("1", "+FLAGS", "(\\Answered $Label1)")
    assert typ == "OK" and b"\\Answered" in data[0] and b"$Label1" in data[0]
    typ, data = c.store("1", "-FLAGS", "($Label1)")
    assert b"$Label1" not in data[0]
    typ, data = c.store("1", "FLAGS.SILENT", "(\\Draft)")
    assert typ == "OK"
    flags = fetch_one(c, "1", "FLAGS")[0]
    assert b"\\Draft" in flags and b"\\Seen" not in flags and b"\\Answered" not in flags
    with pytest.raises(imaplib.IMAP4.error, match="Recent"):
        c.store("1", "+FLAGS", "(\\Recent)")
    c.logout()


def test_copy_move_with_copyuid(postern, mailbox):
    for i in range(3):
        deliver(postern, mailbox.address, simple_message(token()))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    typ, data = c.copy("1:2", "Trash")
    assert typ == "OK" and re.search(rb"COPYUID \d+ 1:2 1:2", data[0]), data
    typ, data = c.copy("1", "Nowhere")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    typ, data = c._simple_command("MOVE", "2:3", "Junk")
    assert typ == "OK", data
    assert c.untagged_responses.get("EXPUNGE"), c.untagged_responses
    c.select("INBOX")
    typ, data = c.search(None, "ALL")
    assert data == [b"1"]
    c.select("Junk")
    typ, data = c.uid("SEARCH", None, "ALL")
    assert data == [b"1 2"]
    typ, data = c.uid("MOVE", "1", "INBOX")
    assert typ == "OK"
    c.logout()


def test_append_with_appenduid_and_literal_plus(postern, imap, mailbox):
    c = imaplib_client(postern, mailbox)
    msg = simple_message(token())
    typ, data = c.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(time.time()), msg)
    assert typ == "OK" and re.search(rb"APPENDUID \d+ 1", data[0]), data
    c.select("Drafts")
    assert fetch_one(c, "1", "(BODY.PEEK[])")[0][1] == msg
    assert b"\\Draft" in fetch_one(c, "1", "FLAGS")[0]
    c.logout()
    # LITERAL+: no continuation is awaited.
    r = imap()
    r.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    msg2 = simple_message(token())
    r.send(f"p1 APPEND INBOX {{{len(msg2)}+}}\r\n".encode() + msg2 + b"\r\n")
    untagged, status = r.until("p1")
    assert status.startswith("OK [APPENDUID"), status
    _, status = r.cmd("APPEND NoSuchBox {3+}\r\nabc")
    assert "TRYCREATE" in status


def test_expunge_and_uid_expunge(postern, mailbox):
    for i in range(4):
        deliver(postern, mailbox.address, simple_message(token()))
    c = imaplib_client(postern, mailbox)
    c.select("INBOX")
    c.store("1,3", "+FLAGS", "(\\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1", b"2"]  # seq 1, then old 3 is now 2
    c.store("1:2", "+FLAGS", "(\\Deleted)")
    typ, data = c.uid("EXPUNGE", "4")
    assert typ == "OK"
    typ, data = c.uid("SEARCH", None, "ALL")
    assert data == [b"2"]
    c.close()
    c.logout()


def test_condstore(postern, imap, mailbox):
    deliver(postern, mailbox.address, simple_message(token()))
    deliver(postern, mailbox.address, simple_message(token()))
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    untagged = c.ok("SELECT INBOX (CONDSTORE)")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(untagged)).group(1))
    untagged = c.ok("FETCH 1:* (FLAGS MODSEQ)")
    assert all(b"MODSEQ (" in u for u in untagged), untagged
    untagged = c.ok("STORE 1 +FLAGS (\\Seen)")
    m = int(re.search(rb"MODSEQ \((\d+)\)", untagged[0]).group(1))
    assert m > hms
    untagged = c.ok(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    assert len(untagged) == 1 and untagged[0].startswith(b"* 1 FETCH"), untagged
    _, status = c.cmd(f"STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)")
    assert status.startswith("OK [MODIFIED 1]"), status
    untagged = c.ok(f"SEARCH MODSEQ {m}")
    assert untagged[0].startswith(b"* SEARCH 1 (MODSEQ"), untagged


def test_recent_goes_to_the_first_session_only(postern, imap, mailbox):
    """RFC 3501 section 2.3.2: \\Recent for the first session told of a message; EXAMINE
    looks without taking it."""
    deliver(postern, mailbox.address, simple_message(token()))
    deliver(postern, mailbox.address, simple_message(token()))
    a, b, e = imap(), imap(), imap()
    for c in (a, b, e):
        c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    assert b"* 2 RECENT" in e.ok("EXAMINE INBOX")
    assert b"* 2 RECENT" in a.ok("SELECT INBOX")
    assert b"* 0 RECENT" in b.ok("SELECT INBOX")
    assert a.ok("SEARCH RECENT") == [b"* SEARCH 1 2"]
    assert a.ok("SEARCH NEW") == [b"* SEARCH 1 2"]
    assert b.ok("SEARCH RECENT") == [b"* SEARCH"]
    assert b"\\Recent" in a.ok("FETCH 1 FLAGS")[0]
    deliver(postern, mailbox.address, simple_message(token()))
    untagged = b.ok("NOOP")
    assert b"* 3 EXISTS" in untagged and b"* 1 RECENT" in untagged, untagged
    untagged = a.ok("NOOP")
    assert b"* 3 EXISTS" in untagged and b"* 2 RECENT" in untagged, untagged


# --- other sessions' changes, IDLE --------------------------------------------------------------

def test_idle_sees_new_mail_from_smtpd(postern, imap, mailbox):
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")
    c.send("i1 IDLE\r\n")
    assert c.line().startswith(b"+ ")
    deliver(postern, mailbox.address, simple_message(token()))
    c.sock.settimeout(10)
    assert c.line() == b"* 1 EXISTS"
    c.send("DONE\r\n")
    assert c.until("i1")[1].startswith("OK")


def test_two_clients_see_each_others_flags_and_expunges(postern, imap, mailbox):
    deliver(postern, mailbox.address, simple_message(token()))
    deliver(postern, mailbox.address, simple_message(token()))
    a, b = imap(), imap(tls="implicit")
    for c in (a, b):
        c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
        c.ok("SELECT INBOX")
    a.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    untagged = b.ok("NOOP")
    assert any(u.startswith(b"* 2 FETCH (FLAGS (\\Flagged") for u in untagged), untagged
    # No EXPUNGE during FETCH, STORE or SEARCH (RFC 3501 section 7.4.1); NOOP tells it.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    untagged = b.ok("FETCH 1:* (UID)")
    assert not any(b"EXPUNGE" in u for u in untagged), untagged
    untagged = b.ok("NOOP")
    assert b"* 1 EXPUNGE" in untagged, untagged


def test_fetch_flags_shows_another_sessions_keywords(postern, imap, mailbox):
    """FETCH of UID, FLAGS and MODSEQ alone is answered from the mailbox's snapshot, brought
    up to date first: what another session stored shows at once, keywords too, and a message
    expunged meanwhile gets no answer (RFC 2180 section 4.1.2) and no EXPUNGE during the
    FETCH (RFC 3501 section 7.4.1); NOOP tells it."""
    for _ in range(3):
        deliver(postern, mailbox.address, simple_message(token()))
    a, b = imap(), imap()
    for c in (a, b):
        c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
        c.ok("SELECT INBOX")
    # a selected first and took \Recent (section 2.3.2); b did not.
    assert b.ok("FETCH 1:* (FLAGS)") == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())",
                                         b"* 3 FETCH (FLAGS ())"]
    a.ok("STORE 2 +FLAGS.SILENT ($Work \\Answered)")
    a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    a.ok("EXPUNGE")
    untagged = b.ok("FETCH 1:* (UID FLAGS MODSEQ)")
    assert not any(b"EXPUNGE" in u for u in untagged), untagged
    assert [u.split(b" (")[0] for u in untagged] == [b"* 1 FETCH", b"* 2 FETCH"], untagged
    flags = re.search(rb"FLAGS \(([^)]*)\)", untagged[1]).group(1).split()
    assert sorted(flags) == [b"$Work", b"\\Answered"], untagged
    assert b"UID 2 " in untagged[1] and b"MODSEQ (" in untagged[1], untagged
    untagged = b.ok("NOOP")
    assert b"* 3 EXPUNGE" in untagged, untagged


def test_bytes_again_are_the_same_bytes(postern, imap, mailbox):
    """A message read whole is kept in imapd's message cache, and a FETCH of only its bytes
    (BODY.PEEK sections, UID) is answered from there: for each kind of item, a message not
    read before (its row asked from PostgreSQL) and then again (from the cache) gives the
    same answer, and none sets \\Seen."""
    items = ["BODY.PEEK[]", "UID BODY.PEEK[HEADER]", "BODY.PEEK[1]", "BODY.PEEK[TEXT]<5.20>",
             "BODY.PEEK[HEADER.FIELDS (SUBJECT)] UID", "RFC822.HEADER"]
    raws = [deliver(postern, mailbox.address, nested_message(token())) for _ in items]
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")
    for n, item in enumerate(items, 1):
        first = c.ok(f"FETCH {n} ({item})")
        assert first and first[0].startswith(f"* {n} FETCH".encode()), first
        assert c.ok(f"FETCH {n} ({item})") == first, item
    assert raws[0] in b"".join(c.ok("FETCH 1 (BODY.PEEK[])"))
    assert all(b"\\Seen" not in u for u in c.ok(f"FETCH 1:{len(items)} (FLAGS)"))


def test_drain_ends_idle_with_bye(postern, imap, mailbox, service_control):
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")
    c.send("i1 IDLE\r\n")
    assert c.line().startswith(b"+ ")
    service_control.stop("imapd")
    c.sock.settimeout(10)
    assert c.line().startswith(b"* BYE")


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("line,reply", [
    (b"t1 FOO", b"t1 BAD"),
    (b"t1 FETCH", b"t1 BAD"),
    (b"t1 SELECT (INBOX", b"t1 BAD"),
    (b"t1 FETCH 1:0x FLAGS", b"t1 BAD"),
    (b"t1 FETCH 0 FLAGS", b"t1 BAD"),
    (b"t1 FETCH 99 FLAGS", b"t1 BAD"),
    (b"t1 FETCH 1 (FLAGS", b"t1 BAD"),
    (b"t1 FETCH 1 BODY[1.0]", b"t1 BAD"),
    (b"t1 SEARCH FOOBAR", b"t1 BAD"),
    (b"t1 STORE 1 +FLAGS (\\Bogus)", b"t1 BAD"),
    (b"t1 LOGIN \"unterminated", b"t1 BAD"),
    (b"* NOOP", b"* BAD"),
    (b"t1 UID FOO 1", b"t1 BAD"),
])
def test_bad_input_gets_bad_and_session_goes_on(postern, imap, mailbox, line, reply):
    deliver(postern, mailbox.address, simple_message(token()))
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")
    c.send(line + CRLF)
    got = c.line()
    assert got.startswith(reply), got
    assert c.ok("NOOP") is not None


def test_huge_literal_refused_and_session_goes_on(postern, imap, mailbox):
    c = imap()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    _, status = c.cmd("APPEND INBOX {99999999999}")
    assert status.startswith("NO [TOOBIG]") or status.startswith("BAD"), status
    _, status = c.cmd("SELECT {100000}")
    assert status.startswith("NO [TOOBIG]") or status.startswith("BAD"), status
    c.ok("NOOP")
    # A refused non-synchronising literal is read and dropped.
    c.send(b"x1 SELECT {70000+}\r\n" + b"a" * 70000 + b" (CONDSTORE)\r\n")
    assert c.until("x1")[1].startswith("NO [TOOBIG]")
    assert c.ok("NOOP") == []  # nothing of x1 was taken for a command


def test_too_many_errors_says_bye(imap):
    c = imap(tls=None)
    # Exactly imap.max_errors (20) mistakes: the last reply is the goodbye.
    c.send("".join(f"e{i} BOGUS\r\n" for i in range(20)))
    seen = b""
    try:
        while True:
            seen += c.line() + b"\n"
    except (EOFError, ConnectionResetError):
        pass
    assert b"* BYE Too many errors" in seen


# --- other clients ------------------------------------------------------------------------------

def test_curl_over_imaps_and_starttls(postern, mailbox, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    tok = token()
    stored = deliver(postern, mailbox.address, simple_message(tok))
    out = subprocess.run(["curl", "-s", "--cacert", str(postern.cert), "--resolve",
                          f"localhost:{postern.port('imaps')}:127.0.0.1",
                          f"imaps://localhost:{postern.port('imaps')}/INBOX;UID=1",
                          "-u", f"{mailbox.address}:{mailbox.password}"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == stored
    out = subprocess.run(["curl", "-s", "--ssl-reqd", "--cacert", str(postern.cert), "--resolve",
                          f"localhost:{postern.port('imap')}:127.0.0.1",
                          f"imap://localhost:{postern.port('imap')}/INBOX?ALL",
                          "-u", f"{mailbox.address}:{mailbox.password}"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"SEARCH 1" in out.stdout


@pytest.mark.parametrize("ssl_mode", ["implicit", "starttls"])
def test_fetchmail_over_imap(postern, mailbox, tmp_path, ssl_mode):
    if not shutil.which("fetchmail"):
        pytest.skip("fetchmail is not installed")
    tok = token()
    stored = deliver(postern, mailbox.address, simple_message(tok))
    out_file = tmp_path / "mda.out"
    rc = tmp_path / "fetchmailrc"
    port = postern.port("imaps" if ssl_mode == "implicit" else "imap")
    tls = ("ssl sslcertfile {0} sslcertck".format(postern.cert) if ssl_mode == "implicit"
           else "sslproto tls1.2+ sslcertfile {0} sslcertck".format(postern.cert))
    rc.write_text(f'poll localhost protocol IMAP port {port}\n'
                  f'  user "{mailbox.address}" password "{mailbox.password}" is "x" here\n'
                  f'  {tls} keep mda "cat >> {out_file}"\n')
    rc.chmod(0o600)
    r = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "-N", "--pidfile",
                        str(tmp_path / "pid")], capture_output=True, timeout=120,
                       env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert tok.encode() in out_file.read_bytes()
    assert stored.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n") in out_file.read_bytes().replace(b"\r\n", b"\n")


def test_large_mailbox_select_and_search(postern, mailbox):
    """100,000 messages: SELECT lists them, SEARCH runs in the store, FETCH of the last works."""
    box = ("(SELECT m.id FROM mailboxes m JOIN users u ON u.id = m.user_id "
           "WHERE u.address = %s AND m.name = 'INBOX')")
    postern.sql(
        "INSERT INTO messages (mailbox_id, uid, size, raw, flags) "
        f"SELECT {box}, g, length(r), r, CASE WHEN g %% 1000 = 0 THEN '{{\\\\Flagged}}'::text[] "
        "                                ELSE '{}'::text[] END "
        "FROM generate_series(1, 100000) g, "
        "     LATERAL (SELECT convert_to('Subject: m' || g || E'\\r\\n\\r\\nbody ' || g "
        "                                || E'\\r\\n', 'UTF8') AS r) x", (mailbox.address,))
    postern.sql(f"UPDATE mailboxes SET uidnext = 100001 WHERE id = {box}", (mailbox.address,))
    c = imaplib_client(postern, mailbox)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"100000"]
    typ, data = c.search(None, "FLAGGED")
    assert len(data[0].split()) == 100
    typ, data = c.search(None, "SUBJECT", "m99999")
    assert data[0].split() == [b"99999"]
    typ, data = c.search(None, "99990:*", "BODY", "99995")
    assert data[0].split() == [b"99995"]
    data = fetch_one(c, "*", "(UID BODY.PEEK[TEXT])")
    assert data[0][1] == b"body 100000\r\n"
    c.logout()


def _uid_flags(c):
    """{uid: set of flags} of the selected mailbox, by FETCH 1:* (UID FLAGS)."""
    typ, data = c.fetch("1:*", "(UID FLAGS)")
    assert typ == "OK", data
    out = {}
    for item in data:
        uid, flags = re.search(rb"UID (\d+)", item or b""), re.search(rb"FLAGS \(([^)]*)\)", item or b"")
        if not uid:
            continue  # a FETCH the server sent earlier on its own (after a STORE), kept by imaplib
        assert flags, item
        out[int(uid.group(1))] = set(flags.group(1).decode().split()) - {"\\Recent"}
    return out


def test_select_again_sees_every_change_made_since(postern, mailbox):
    """imapd keeps what it answered to the last SELECT of a mailbox and asks PostgreSQL only
    for what changed since: flags, a new keyword, an expunge and a new message made by
    another session in between all show in the next SELECT, as the other session sees them."""
    a = imaplib_client(postern, mailbox)
    for i in range(6):
        assert a.append("INBOX", None, None, f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode())[0] \
            == "OK"
    a.select("INBOX")
    before = _uid_flags(a)
    a.logout()
    b = imaplib_client(postern, mailbox)
    b.select("INBOX")
    b.store("2", "+FLAGS", "(\\Seen $Work)")
    b.store("3", "+FLAGS", "(\\Deleted)")
    b.expunge()
    b.append("INBOX", "(\\Flagged)", None, b"Subject: new\r\n\r\nnew\r\n")
    b.noop()
    want = _uid_flags(b)
    assert want != before and len(want) == 6
    typ, status = b.status("INBOX", "(UIDNEXT HIGHESTMODSEQ UNSEEN)")
    c = imaplib_client(postern, mailbox)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == 6, data
    assert _uid_flags(c) == want
    flags = c.response("FLAGS")[1][0].decode()
    assert "$Work" in flags, flags
    nums = dict(re.findall(r"(UIDNEXT|HIGHESTMODSEQ) (\d+)", status[0].decode()))
    for code in ("UIDNEXT", "HIGHESTMODSEQ"):  # response codes of SELECT's untagged OKs
        assert c.response(code)[1] == [nums[code].encode()], (code, status)
    for x in (b, c):
        x.logout()


def test_select_again_in_the_same_session(postern, mailbox):
    """A session that selects the same mailbox again keeps its list when nothing changed, and
    never when it did: its own STORE, EXPUNGE, a message it learnt of by NOOP, \\Recent given
    to it, and a change made elsewhere all show as a fresh session sees them."""
    a = imaplib_client(postern, mailbox)
    for i in range(4):
        assert a.append("INBOX", None, None, f"Subject: s{i}\r\n\r\nbody {i}\r\n".encode())[0] \
            == "OK"

    def same_as_fresh(exists):
        typ, data = a.select("INBOX")
        assert typ == "OK" and int(data[0]) == exists, data
        mine = _uid_flags(a)
        b = imaplib_client(postern, mailbox)
        b.select("INBOX", readonly=True)
        assert mine == _uid_flags(b)
        b.logout()
        return mine

    first = same_as_fresh(4)
    assert same_as_fresh(4) == first  # nothing changed: the same list
    a.store("1", "+FLAGS", "(\\Flagged)")
    assert "\\Flagged" in same_as_fresh(4)[min(first)]
    a.store("2", "+FLAGS", "(\\Deleted)")
    a.expunge()
    assert len(same_as_fresh(3)) == 3
    deliver(postern, mailbox.address, simple_message(token()))
    a.noop()  # the new message joins the session's list
    assert len(same_as_fresh(4)) == 4
    deliver(postern, mailbox.address, simple_message(token()))
    typ, data = a.select("INBOX")  # \Recent for this session
    assert a.response("RECENT")[1] == [b"1"]
    assert b"\\Recent" in b"".join(a.fetch("5", "FLAGS")[1])
    same_as_fresh(5)  # taken already: recent no more, in the count and in the flags
    assert a.response("RECENT")[1] == [b"0"]
    assert b"\\Recent" not in b"".join(a.fetch("1:*", "FLAGS")[1])
    other = imaplib_client(postern, mailbox)
    other.select("INBOX")
    other.store("1", "-FLAGS", "(\\Flagged)")
    other.logout()
    assert "\\Flagged" not in same_as_fresh(5)[min(first)]
    a.logout()


def test_select_of_a_mailbox_made_again_under_its_name(postern, mailbox):
    """A mailbox deleted and made again under the same name is another mailbox (a new
    UIDVALIDITY): SELECT shows the new one's messages, never the old one's."""
    a = imaplib_client(postern, mailbox)
    assert a.create("Work")[0] == "OK"
    for i in range(3):
        a.append("Work", None, None, f"Subject: old{i}\r\n\r\nold\r\n".encode())
    typ, data = a.select("Work")
    assert int(data[0]) == 3
    old_validity = a.response("UIDVALIDITY")[1][0]
    a.close()
    assert a.delete("Work")[0] == "OK"
    assert a.create("Work")[0] == "OK"
    a.append("Work", None, None, b"Subject: new\r\n\r\nnew\r\n")
    typ, data = a.select("Work")
    assert typ == "OK" and int(data[0]) == 1, data
    assert a.response("UIDVALIDITY")[1][0] != old_validity
    assert list(_uid_flags(a)) == [1]
    a.logout()
