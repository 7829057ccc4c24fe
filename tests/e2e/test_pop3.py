"""pop3d: RFC 1939 with CAPA, STLS, SASL and response codes, driven by Python's poplib,
fetchmail, curl and (for what those will not do) a raw conversation. Mail arrives through
smtpd (smtplib) and must come back byte for byte as stored."""

import base64
import hashlib
import hmac
import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from support import ALICE, ALICE_PW, RawConversation, b64, plain_response, token, wait_until

SENDER = "sender@outside.example"
CRLF = b"\r\n"


# --- a raw POP3 conversation -------------------------------------------------------------

class Pop3(RawConversation):
    """A byte-exact POP3 conversation: `cmd` sends a line and returns the status line,
    `ok`/`err` check it, `multi` reads a multi-line body (unstuffed)."""

    def __init__(self, port, tls_context=None, implicit_tls=False, source=None, timeout=30):
        super().__init__(port, tls_context, implicit_tls, source, timeout)
        self.greeting = self.line()

    def raw_line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def line(self):
        return self.raw_line().rstrip(b"\r\n").decode("utf-8", "replace")

    def cmd(self, line):
        self.send((line.encode() if isinstance(line, str) else line) + CRLF)
        return self.line()

    def ok(self, line):
        r = self.cmd(line)
        assert r.startswith("+OK"), f"{line!r}: expected +OK, got {r!r}"
        return r

    def err(self, line, code=None):
        r = self.cmd(line)
        assert r.startswith("-ERR"), f"{line!r}: expected -ERR, got {r!r}"
        if code:
            assert r.startswith(f"-ERR [{code}]"), f"{line!r}: expected [{code}], got {r!r}"
        return r

    def multi(self):
        """The body of a multi-line response, unstuffed, as raw bytes with line ends."""
        out = b""
        while True:
            ln = self.raw_line()
            if ln == b".\r\n":
                return out
            out += ln[1:] if ln.startswith(b".") else ln

    def multi_lines(self):
        return self.multi().decode().splitlines()

    def stls(self):
        self.ok("STLS")
        self._wrap()

    def auth_plain(self, user, password):
        return self.cmd(f"AUTH PLAIN {plain_response(user, password)}")

    def login(self, user, password):
        r = self.auth_plain(user, password)
        assert r.startswith("+OK"), f"login as {user}: {r!r}"
        return r


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture
def pop3(postern):
    """pop3(tls="stls"|"implicit"|None, source=None): a connected Pop3 (greeting read; STLS
    done when asked), closed after the test."""
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    clients = []

    def connect(tls="stls", source=None, timeout=30):
        c = Pop3(postern.pop3s if tls == "implicit" else postern.pop3, postern.tls_context(),
                 implicit_tls=(tls == "implicit"), source=source, timeout=timeout)
        clients.append(c)
        assert c.greeting.startswith("+OK"), c.greeting
        if tls == "stls":
            c.stls()
        return c

    yield connect
    for c in clients:
        c.close()


@pytest.fixture
def mailbox(postern, new_user):
    """A fresh user with a known password (and an empty INBOX)."""
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    password = "Pop3-pw-" + token()[-8:]
    address = new_user(password)

    class Mailbox:
        pass

    m = Mailbox()
    m.address, m.password = address, password
    return m


def deliver(postern, rcpt, message):
    """Delivers message (bytes, CRLF) to rcpt through smtpd; returns the stored raw bytes."""
    with postern.smtplib_client("mx") as s:
        s.sendmail(SENDER, [rcpt], message)
    stored = [raw for _, _, raw in postern.inbox(rcpt) if raw.endswith(message)]
    assert len(stored) == 1, f"message not stored once for {rcpt}"
    return stored[0]


def tricky_message(tok):
    """Dots at line starts, a lone dot, 8-bit text, a long line, blank lines, tabs."""
    long_line = b"x" * 900
    return (f"From: <{SENDER}>\r\nTo: <someone@example.test>\r\nSubject: {tok}\r\n"
            f"Message-ID: <{tok}@client.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            "\r\n").encode() + (
        b".starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"\r\n"
        b"\t tab and trailing space \r\n"
        b"From the mbox point of view\r\n"
        + "Gr\u00fc\u00dfe, caf\u00e9, \u65e5\u672c\r\n".encode("utf-8")
        + long_line + b"\r\n"
        b"last line\r\n")


def uidl_map(p):
    p.send(b"UIDL\r\n")
    assert p.line().startswith("+OK")
    return dict(ln.split(" ", 1) for ln in p.multi_lines())


def inbox_uids(postern, address):
    return [uid for uid, _, _ in postern.inbox(address)]


# --- CAPA, STLS, refusing plaintext ---------------------------------------------------------

def capa(p):
    p.ok("CAPA")
    return p.multi_lines()


def test_greeting_names_the_server(pop3):
    p = pop3(tls=None)
    assert re.match(r"^\+OK pop3\.test\.example Postern", p.greeting), p.greeting
    assert "<" not in p.greeting  # no APOP timestamp


def test_capa_before_and_after_stls(pop3):
    p = pop3(tls=None)
    before = capa(p)
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS",
                "IMPLEMENTATION Postern"):
        assert cap in before, before
    assert "USER" not in before and not any(c.startswith("SASL") for c in before), before
    p.stls()
    after = capa(p)
    assert "STLS" not in after, after
    assert "USER" in after, after
    assert "SASL PLAIN LOGIN SCRAM-SHA-256" in after, after


def test_capa_on_implicit_tls(pop3):
    caps = capa(pop3(tls="implicit"))
    assert "USER" in caps and "STLS" not in caps, caps


def test_user_pass_before_tls_refused(pop3, mailbox):
    p = pop3(tls=None)
    p.err(f"USER {mailbox.address}", "AUTH")
    p.err(f"PASS {mailbox.password}")
    p.err(f"AUTH PLAIN {plain_response(mailbox.address, mailbox.password)}", "AUTH")
    p.err("STAT")  # still not logged in
    p.ok("CAPA")
    p.multi()
    p.stls()
    p.ok(f"USER {mailbox.address}")
    p.ok(f"PASS {mailbox.password}")
    p.ok("STAT")


def test_plaintext_allowed_by_setting(postern, mailctl, pop3, mailbox):
    mailctl("config", "set", "auth.allow_plaintext", "on")

    def allowed():
        with Pop3(postern.pop3) as p:
            return "USER" in capa(p)

    wait_until(allowed, timeout=30, what="pop3d to offer USER without TLS")
    p = pop3(tls=None)
    p.ok(f"USER {mailbox.address}")
    p.ok(f"PASS {mailbox.password}")
    p.ok("QUIT")


def test_stls_refusals(pop3):
    p = pop3(tls=None)
    p.err("STLS garbage")
    p.ok("CAPA")  # the session survives
    p.multi()
    p.stls()
    p.err("STLS")  # already active
    p2 = pop3(tls="implicit")
    p2.err("STLS")


def test_stls_discards_pipelined_plaintext(pop3, mailbox):
    p = pop3(tls=None)
    p.send(f"STLS\r\nUSER {mailbox.address}\r\n".encode())
    assert p.line().startswith("+OK")
    p._wrap()
    # The USER sent before the handshake was dropped: PASS has nothing to pair with.
    p.err(f"PASS {mailbox.password}")


# --- logins ---------------------------------------------------------------------------------

def test_user_pass_login(pop3, mailbox):
    p = pop3()
    p.ok(f"USER {mailbox.address}")
    r = p.ok(f"PASS {mailbox.password}")
    assert "0 messages" in r, r
    p.ok("QUIT")


def test_wrong_password_gets_auth_code(pop3, mailbox):
    p = pop3()
    p.ok(f"USER {mailbox.address}")
    p.err("PASS wrong-password", "AUTH")
    p.ok("USER nobody@example.test")
    p.err("PASS whatever", "AUTH")
    p.err(f"AUTH PLAIN {plain_response(mailbox.address, 'nope')}", "AUTH")
    p.login(mailbox.address, mailbox.password)


def test_auth_plain_with_and_without_initial_response(pop3, mailbox):
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.ok("QUIT")
    p = pop3(tls="implicit")
    assert p.cmd("AUTH PLAIN") == "+ "
    p.ok(plain_response(mailbox.address, mailbox.password))
    p.ok("QUIT")


def test_auth_login(pop3, mailbox):
    p = pop3()
    r = p.cmd("AUTH LOGIN")
    assert r.startswith("+ "), r
    r = p.cmd(b64(mailbox.address))
    assert r.startswith("+ "), r
    p.ok(b64(mailbox.password))


def scram_login(p, user, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    r = p.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + first_bare))
    assert r.startswith("+ "), r
    server_first = base64.b64decode(r[2:]).decode()
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    assert fields["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    r = p.cmd(b64(f"{without_proof},p={base64.b64encode(proof).decode()}"))
    if not r.startswith("+ "):
        return r
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest())
    assert base64.b64decode(r[2:]) == b"v=" + expected, r
    return p.cmd("")


def test_auth_scram_sha_256(pop3, mailbox):
    p = pop3()
    r = scram_login(p, mailbox.address, "wrong")
    assert r.startswith("-ERR [AUTH]"), r
    r = scram_login(p, mailbox.address, mailbox.password)
    assert r.startswith("+OK"), r
    p.ok("STAT")


def test_auth_cancel_and_garbage(pop3, mailbox):
    p = pop3()
    assert p.cmd("AUTH PLAIN") == "+ "
    p.err("*")
    assert p.cmd("AUTH PLAIN") == "+ "
    p.err("not base64!")
    p.err("AUTH NOSUCHMECH")
    p.err("AUTH PLAIN !!!")
    p.ok("AUTH")  # bare AUTH lists the mechanisms
    assert p.multi_lines() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    p.login(mailbox.address, mailbox.password)


def test_commands_in_the_wrong_state(pop3, mailbox):
    p = pop3()
    for line in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"):
        p.err(line)
    p = pop3()  # a fresh session: the first has used up most of its errors
    p.login(mailbox.address, mailbox.password)
    p.err(f"USER {mailbox.address}")
    p.err("PASS x")
    p.err("AUTH PLAIN")
    p.err("STLS")
    p.ok("NOOP")


def test_pipelined_login_and_commands(postern, pop3, mailbox):
    tok = token()
    deliver(postern, mailbox.address, tricky_message(tok))
    p = pop3()
    # Everything in one write, the commands right behind the login (RFC 2449 PIPELINING).
    p.send(f"AUTH PLAIN {plain_response(mailbox.address, mailbox.password)}\r\n"
           "STAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n".encode())
    assert p.line().startswith("+OK Maildrop has 1 messages")
    assert re.match(r"^\+OK 1 \d+$", p.line())
    assert p.line().startswith("+OK")
    assert len(p.multi_lines()) == 1
    assert re.match(r"^\+OK 1 \d+\.\d+$", p.line())
    assert p.line() == "+OK"
    assert p.line().startswith("+OK")
    assert p.closed_by_server()


# --- retrieving, byte for byte ------------------------------------------------------------

def test_poplib_retrieves_byte_for_byte_over_stls(postern, mailbox):
    tok = token()
    raw = deliver(postern, mailbox.address, tricky_message(tok))
    p = poplib.POP3("127.0.0.1", postern.pop3, timeout=30)
    try:
        p.stls(context=postern.tls_context())
        p.user(mailbox.address)
        p.pass_(mailbox.password)
        count, size = p.stat()
        assert (count, size) == (1, len(raw))
        assert p.list()[1] == [f"1 {len(raw)}".encode()]
        resp, lines, octets = p.retr(1)
        assert resp == f"+OK {len(raw)} octets".encode()
        assert CRLF.join(lines) + CRLF == raw
    finally:
        p.quit()


def test_poplib_retrieves_byte_for_byte_over_pop3s(postern, mailbox):
    raws = [deliver(postern, mailbox.address, tricky_message(token())) for _ in range(3)]
    p = poplib.POP3_SSL("127.0.0.1", postern.pop3s, timeout=30, context=postern.tls_context())
    try:
        p.user(mailbox.address)
        p.pass_(mailbox.password)
        assert p.stat() == (3, sum(map(len, raws)))
        for i, raw in enumerate(raws, 1):
            _, lines, _ = p.retr(i)
            assert CRLF.join(lines) + CRLF == raw
    finally:
        p.quit()


def test_top(postern, pop3, mailbox):
    raw = deliver(postern, mailbox.address, tricky_message(token()))
    header, body = raw.split(b"\r\n\r\n", 1)
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.ok("TOP 1 0")
    assert p.multi() == header + b"\r\n\r\n"
    p.ok("TOP 1 3")
    assert p.multi() == header + b"\r\n\r\n" + b"".join(body.split(b"\r\n")[i] + CRLF
                                                          for i in range(3))
    p.ok("TOP 1 1000")
    assert p.multi() == raw
    p.err("TOP 1")
    p.err("TOP 1 -1")
    p.err("TOP 2 1")


def test_large_message_byte_for_byte(postern, pop3, mailbox):
    # About 2 MB: many dot-lines, so the stuffing runs across chunk boundaries.
    line = b".%07d " + b"y" * 70 + b"\r\n"
    body = b"".join(line.replace(b"%07d", b"%07d" % i) for i in range(25000))
    msg = f"Subject: {token()}\r\n\r\n".encode() + body
    raw = deliver(postern, mailbox.address, msg)
    p = pop3(tls="implicit")
    p.login(mailbox.address, mailbox.password)
    r = p.ok("RETR 1")
    assert r == f"+OK {len(raw)} octets"
    assert p.multi() == raw


def test_curl_pop3s_and_stls(postern, mailbox, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed (deploy/deps.sh installs it)")
    raw = deliver(postern, mailbox.address, tricky_message(token()))
    deliver(postern, mailbox.address, tricky_message(token()))
    auth = f"{mailbox.address}:{mailbox.password}"
    out = tmp_path / "msg"
    base = ["curl", "-sS", "--max-time", "60", "-u", auth]
    # Implicit TLS, --insecure.
    subprocess.run(base + ["--insecure", "-o", str(out), f"pop3s://127.0.0.1:{postern.pop3s}/1"],
                   check=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.read_bytes() == raw
    # STLS with the harness CA; a listing first (LIST).
    r = subprocess.run(base + ["--ssl-reqd", "--cacert", str(postern.cert),
                               f"pop3://localhost:{postern.pop3}/"],
                       check=True, timeout=90, capture_output=True, stdin=subprocess.DEVNULL)
    assert r.stdout.decode().split("\r\n")[0] == f"1 {len(raw)}"
    out.unlink()
    subprocess.run(base + ["--ssl-reqd", "--cacert", str(postern.cert), "-o", str(out),
                           f"pop3://localhost:{postern.pop3}/1"],
                   check=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.read_bytes() == raw


def fetchmail_run(postern, mailbox, tmp_path, *, keep, ssl_mode):
    """Runs fetchmail once against pop3d; returns the messages its MDA received."""
    outdir = tmp_path / "delivered"
    outdir.mkdir(exist_ok=True)
    mda = tmp_path / "mda.sh"
    mda.write_text('#!/bin/sh\ncat > "$1/$(date +%s%N).eml"\n')
    mda.chmod(0o755)
    ssl_opts = ("ssl" if ssl_mode == "implicit" else "sslproto 'tls1.2+'")
    port = postern.pop3s if ssl_mode == "implicit" else postern.pop3
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll localhost via 127.0.0.1 protocol pop3 port {port} uidl\n"
        f"  user '{mailbox.address}' there with password '{mailbox.password}' is 'local' here\n"
        f"  {ssl_opts} sslcertck sslcertfile '{postern.cert}' sslcommonname localhost\n"
        f"  {'keep' if keep else 'nokeep'} fetchall no rewrite no stripcr\n"
        f"  mda \"{mda} {outdir}\"\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    r = subprocess.run(["fetchmail", "--nodetach", "--invisible", "-f", str(rc), "-v"],
                       env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    # 0: mail retrieved, 1: no mail.
    assert r.returncode in (0, 1), f"fetchmail exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    got = [f.read_bytes() for f in sorted(outdir.iterdir())]
    for f in outdir.iterdir():
        f.unlink()
    return got, r


@pytest.mark.parametrize("ssl_mode", ["stls", "implicit"])
def test_fetchmail_retrieves_and_deletes(postern, mailbox, tmp_path, ssl_mode):
    if not shutil.which("fetchmail"):
        pytest.skip("fetchmail is not installed (deploy/deps.sh installs it)")
    raws = [deliver(postern, mailbox.address, tricky_message(token())) for _ in range(2)]
    got, r = fetchmail_run(postern, mailbox, tmp_path, keep=True, ssl_mode=ssl_mode)
    # fetchmail hands the MDA the message as the server sent it, minus the stuffing.
    assert got == raws, r.stdout + r.stderr
    assert len(postern.inbox(mailbox.address)) == 2  # keep
    got, r = fetchmail_run(postern, mailbox, tmp_path, keep=False, ssl_mode=ssl_mode)
    assert got == raws, r.stdout + r.stderr
    assert postern.inbox(mailbox.address) == []  # fetchmail's DELE + QUIT removed them


# --- DELE, RSET, QUIT, UIDL -----------------------------------------------------------------

def test_dele_then_quit_removes(postern, pop3, mailbox):
    for _ in range(3):
        deliver(postern, mailbox.address, tricky_message(token()))
    uids = inbox_uids(postern, mailbox.address)
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.ok("DELE 2")
    p.err("DELE 2")       # already deleted
    p.err("RETR 2")
    p.err("LIST 2")
    assert p.ok("STAT").split()[1] == "2"
    p.ok("LIST")
    assert [ln.split()[0] for ln in p.multi_lines()] == ["1", "3"]
    assert inbox_uids(postern, mailbox.address) == uids  # nothing happens before QUIT
    r = p.ok("QUIT")
    assert "1 deleted" in r, r
    assert p.closed_by_server()
    assert inbox_uids(postern, mailbox.address) == [uids[0], uids[2]]


def test_dele_then_disconnect_keeps(postern, pop3, mailbox):
    for _ in range(2):
        deliver(postern, mailbox.address, tricky_message(token()))
    uids = inbox_uids(postern, mailbox.address)
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.ok("DELE 1")
    p.ok("DELE 2")
    p.close()  # dropped without QUIT
    # The lock is given back and nothing was deleted.
    p = wait_until(lambda: login_or_none(postern, mailbox), timeout=30, what="the lock to go")
    assert p.ok("STAT").split()[1] == "2"
    assert inbox_uids(postern, mailbox.address) == uids
    p.close()


def login_or_none(postern, mailbox):
    p = Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True)
    r = p.auth_plain(mailbox.address, mailbox.password)
    if r.startswith("+OK"):
        return p
    p.close()
    return None


def test_rset_unmarks(postern, pop3, mailbox):
    deliver(postern, mailbox.address, tricky_message(token()))
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.ok("DELE 1")
    assert p.ok("STAT").startswith("+OK 0 0")
    assert p.ok("RSET").startswith("+OK Maildrop has 1 messages")
    assert p.ok("STAT").startswith("+OK 1 ")
    p.ok("QUIT")
    assert len(postern.inbox(mailbox.address)) == 1


def test_uidl_stable_across_sessions(postern, pop3, mailbox, sql):
    for _ in range(3):
        deliver(postern, mailbox.address, tricky_message(token()))
    (validity,) = sql("SELECT b.uidvalidity FROM mailboxes b JOIN users u ON u.id = b.user_id"
                      " WHERE u.address = %s AND b.name = 'INBOX'", (mailbox.address,))[0]
    uids = inbox_uids(postern, mailbox.address)
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    first = uidl_map(p)
    assert first == {str(i): f"{validity}.{uid}" for i, uid in enumerate(uids, 1)}
    assert p.ok("UIDL 2") == f"+OK 2 {validity}.{uids[1]}"
    p.ok("DELE 1")
    p.ok("QUIT")
    deliver(postern, mailbox.address, tricky_message(token()))
    p = pop3(tls="implicit")
    p.login(mailbox.address, mailbox.password)
    second = uidl_map(p)
    # Message numbers move; the unique ids of the messages that stayed do not.
    assert set(first.values()) - {first["1"]} < set(second.values())
    assert first["1"] not in second.values()
    assert len(second) == 3 and all(re.match(r"^\d+\.\d+$", v) for v in second.values())


# --- one session per maildrop -----------------------------------------------------------------

def test_second_session_gets_in_use(postern, pop3, mailbox):
    deliver(postern, mailbox.address, tricky_message(token()))
    a = pop3()
    a.login(mailbox.address, mailbox.password)
    b = pop3(tls="implicit")
    b.err(f"AUTH PLAIN {plain_response(mailbox.address, mailbox.password)}", "IN-USE")
    b.ok(f"USER {mailbox.address}")
    b.err(f"PASS {mailbox.password}", "IN-USE")
    b.err("STAT")  # still in AUTHORIZATION
    a.ok("DELE 1")
    a.ok("QUIT")
    assert a.closed_by_server()
    # Once the first session has quit, the second may log in, and sees the deletion.
    r = b.login(mailbox.address, mailbox.password)
    assert "0 messages" in r, r


def test_stale_lock_is_taken_over_and_live_one_is_not(postern, pop3, mailbox, sql):
    (user_id,) = sql("SELECT id FROM users WHERE address = %s", (mailbox.address,))[0]
    sql("INSERT INTO pop3_locks (user_id, owner, since, expires)"
        " VALUES (%s, 'crashed-replica', now() - interval '1 hour', now() - interval '1 second')",
        (user_id,))
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    owner = sql("SELECT owner FROM pop3_locks WHERE user_id = %s", (user_id,))[0][0]
    assert owner != "crashed-replica"
    p.ok("QUIT")
    assert p.closed_by_server()
    assert sql("SELECT count(*) FROM pop3_locks WHERE user_id = %s", (user_id,))[0][0] == 0
    sql("INSERT INTO pop3_locks (user_id, owner, since, expires)"
        " VALUES (%s, 'other-replica', now(), now() + interval '1 hour')", (user_id,))
    try:
        p = pop3()
        p.err(f"AUTH PLAIN {plain_response(mailbox.address, mailbox.password)}", "IN-USE")
    finally:
        sql("DELETE FROM pop3_locks WHERE user_id = %s", (user_id,))


def test_sigterm_releases_the_lock_of_an_open_session(postern, pop3, mailbox, sql):
    """A rolling restart must not leave users locked out for a lease: the session still
    open at SIGTERM is closed at the drain deadline and its lock deleted before the exit."""
    (user_id,) = sql("SELECT id FROM users WHERE address = %s", (mailbox.address,))[0]
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    assert sql("SELECT count(*) FROM pop3_locks WHERE user_id = %s", (user_id,))[0][0] == 1
    try:
        postern.stop_service("pop3d")  # SIGTERM; a clean exit is checked
        assert sql("SELECT count(*) FROM pop3_locks WHERE user_id = %s", (user_id,))[0][0] == 0
    finally:
        p.close()
        postern.start_service("pop3d")
    q = pop3()
    q.login(mailbox.address, mailbox.password)
    q.ok("QUIT")


def test_locks_of_a_killed_pop3d_are_released_when_pop3d_starts_again(postern, pop3, mailbox,
                                                                       new_user, sql,
                                                                       service_control):
    """A pop3d that dies leaves its lock rows; the next pop3d started on that machine (a
    restarted container keeps its name) releases those whose process is gone, at once rather
    than after pop3.lock_lease (120 s), and leaves those of a live process alone."""
    svc = postern.services["pop3d"]
    found = re.findall(r'msg="started" instance=(\S+)', svc.since(svc.started_at))
    assert found, "pop3d logged no instance"
    node = found[-1].rsplit(":", 1)[0]
    (user_id,) = sql("SELECT id FROM users WHERE address = %s", (mailbox.address,))[0]
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    # Two more runs' locks on this machine: one of a process that is alive (this test's own,
    # locally; in a container every other pid is gone), one of a pid that does not exist.
    local = not postern.in_containers
    live_user, gone_user = (sql("SELECT id FROM users WHERE address = %s", (new_user(),))[0][0]
                            for _ in range(2))
    rows = [(gone_user, f"{node}:4194303/feedfeedfeedfeed/1/00")]
    if local:
        rows.append((live_user, f"{node}:{os.getpid()}/feedfeedfeedfeed/1/00"))
    try:
        for uid, owner in rows:
            sql("INSERT INTO pop3_locks (user_id, owner, since, expires)"
                " VALUES (%s, %s, now(), now() + interval '1 hour')", (uid, owner))
        service_control.stop("pop3d", kill=True)
        p.close()
        service_control.start("pop3d")
        # well within the lease: the new pop3d's first statements release the dead runs' rows
        wait_until(lambda: sql("SELECT count(*) FROM pop3_locks WHERE user_id IN (%s, %s)",
                               (user_id, gone_user))[0][0] == 0,
                   timeout=20, what="the dead runs' locks released")
        if local:
            assert sql("SELECT count(*) FROM pop3_locks WHERE user_id = %s",
                       (live_user,))[0][0] == 1, "a live process's lock was released"
        q = pop3()
        q.login(mailbox.address, mailbox.password)
        q.ok("QUIT")
    finally:
        sql("DELETE FROM pop3_locks WHERE user_id IN (%s, %s)", (live_user, gone_user))


@pytest.fixture
def raw_setting(postern, sql):
    """raw_setting(key, value): a system setting written straight into the table (for keys
    lib/base/settings.c may not know yet, which mailctl refuses), announced, removed afterwards."""
    keys = []

    def announce():
        from support import nats_request
        nats_request(postern.env["NATS_URL"], "postern.config.changed", b"", timeout=0.3)

    def put(key, value):
        keys.append(key)
        sql("INSERT INTO settings (scope, scope_id, key, value) VALUES ('system', 0, %s, %s)"
            " ON CONFLICT (scope, scope_id, key) DO UPDATE SET value = EXCLUDED.value",
            (key, str(value)))
        announce()

    yield put
    for key in keys:
        sql("DELETE FROM settings WHERE scope = 'system' AND key = %s", (key,))
    if keys:
        announce()


def test_lock_lease_renewed_and_expires_after_a_crash(postern, pop3, mailbox, raw_setting, sql):
    raw_setting("pop3.lock_lease", 2)
    deliver(postern, mailbox.address, tricky_message(token()))
    (user_id,) = sql("SELECT id FROM users WHERE address = %s", (mailbox.address,))[0]

    def short_lease_session():
        p = login_or_none(postern, mailbox)
        if p is None:
            return None
        (lease,) = sql("SELECT extract(epoch FROM expires - since) FROM pop3_locks"
                       " WHERE user_id = %s", (user_id,))[0]
        if lease < 10:
            return p
        p.ok("QUIT")  # pop3d has not reloaded its settings yet
        p.close()
        return None

    a = wait_until(short_lease_session, timeout=30, what="a session with a 2 s lease")
    # The lease is renewed while the session lives, well past its 2 seconds.
    time.sleep(5)
    b = pop3()
    b.err(f"AUTH PLAIN {plain_response(mailbox.address, mailbox.password)}", "IN-USE")
    a.ok("NOOP")
    a.ok("DELE 1")
    # The replica dies with the session open: its lock outlives it, for one lease.
    postern.stop_service("pop3d", kill=True)
    postern.start_service("pop3d")
    a.close()
    b.close()
    p = wait_until(lambda: login_or_none(postern, mailbox), timeout=30,
                   what="the dead session's lock to expire")
    assert p.ok("STAT").startswith("+OK 1 ")  # its DELE never happened
    p.ok("QUIT")


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_gets_err_and_the_session_survives(postern, pop3, mailbox):
    deliver(postern, mailbox.address, tricky_message(token()))
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    p.err("X" * 300)                     # RFC 2449: 255 octets at most
    p.err("LIST " + "1" * 260)
    p.err("XYZZY")
    p.err("RETR 99")
    p.err("RETR 0")
    p.err("RETR abc")
    p.err("RETR")
    p.err("DELE 1 2")
    p.send(b"NO\0OP\r\n")
    assert p.line().startswith("-ERR")
    p.ok("DELE 1")
    p.err("RETR 1")                      # deleted
    p.ok("RSET")
    assert p.ok("STAT").startswith("+OK 1 ")
    p.ok("QUIT")


def test_very_long_line_gets_one_reply(pop3):
    p = pop3()
    p.send(b"A" * 100000 + b"\r\nCAPA\r\n")
    assert p.line().startswith("-ERR")
    assert p.line().startswith("+OK")
    p.multi()


def test_too_many_errors_close_the_session(pop3):
    p = pop3()
    for _ in range(19):  # pop3.max_errors, 20 by default
        p.err("BOGUS")
    p.send(b"BOGUS\r\n")
    assert p.line().startswith("-ERR")
    assert p.closed_by_server()


def test_quit_before_login(pop3):
    p = pop3(tls=None)
    p.ok("QUIT")
    assert p.closed_by_server()


def test_idle_timeout(postern, pop3, raw_setting):
    raw_setting("pop3.idle_timeout", 2)

    def times_out():
        with Pop3(postern.pop3) as p:
            start = time.monotonic()
            p.closed_by_server(timeout=10)
            return time.monotonic() - start < 8

    wait_until(times_out, timeout=60, what="pop3d to close an idle session")


def test_a_client_reading_a_long_retr_slowly_is_not_idle(postern, pop3, mailbox, raw_setting):
    """The idle timeout counts from the client's last sign of life, and reading what it asked
    for is one: a client that takes several idle timeouts to read a large message gets all of
    it (a slow link, a large attachment)."""
    # Reading takes 20 s: more than the idle timeout (2 s) and the time a closing session
    # still gives the client to read what was already written.
    body = (b"x" * 1022 + b"\r\n") * (10 * 1024)  # 10 MiB
    deliver(postern, mailbox.address, b"Subject: large\r\n\r\n" + body)
    raw_setting("pop3.idle_timeout", 2)

    def idle_closed():
        with Pop3(postern.pop3) as p:
            return p.closed_by_server(timeout=10)

    wait_until(idle_closed, timeout=60, what="pop3d to close an idle session after 2 s")
    p = pop3()
    p.login(mailbox.address, mailbox.password)
    # a small receive window: pop3d writes only as fast as this client reads
    p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    p.send(b"RETR 1\r\n")
    got, start = b"", time.monotonic()
    while b"\r\n.\r\n" not in got:
        chunk = p.sock.recv(64 * 1024)
        if not chunk:
            break
        got += chunk
        time.sleep(len(chunk) / (512 * 1024))  # about 0.5 MiB/s
    took = time.monotonic() - start
    assert got.startswith(b"+OK"), got[:100]
    assert b"\r\n.\r\n" in got, \
        f"RETR cut off after {len(got)} bytes and {took:.1f} s: {got[-200:]!r}"
    assert body in got
    assert took > 3, f"read in {took:.1f} s, faster than the idle timeout: nothing was shown"
