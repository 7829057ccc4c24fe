"""relayd's SMTP client (services/relayd/smtpc) against a remote server under the test's
control (sink.py, aiosmtpd), through tests/tools/relay_send:

    relay_send [--tls may|encrypt|verify] [--ca FILE] [--peer-name NAME] HOST PORT FROM RCPT...

prints "RCPT CODE STATUS TEXT local=yes|no" per recipient and "tls=... verified=...".
relay_send is $POSTERN_BIN/../tests/tools/relay_send. Needs no Postern stack.

    POSTERN_BIN=build/bin /usr/bin/python3 -m pytest -q tests/e2e/test_relayd_client.py
"""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from sink import Sink  # noqa: E402
from support import free_ports  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()
RELAY_SEND = BIN.parent / "tests" / "tools" / "relay_send"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
MX_NAME = "mx.remote.test"
SENDER = "alice@example.test"


@pytest.fixture(autouse=True)
def baseline():
    """Replaces the suite's baseline fixture: these tests need no Postern stack."""
    yield


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for mx.remote.test: (cert, key)."""
    d = tmp_path_factory.mktemp("relayd-client-tls")
    c, k = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(k), "-out", str(c), "-subj", f"/CN={MX_NAME}",
         "-addext", f"subjectAltName=DNS:{MX_NAME}"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    return str(c), str(k)


@pytest.fixture
def port():
    return free_ports(1)[0]


class Result:
    """relay_send's output: rcpts {address: (code, status, text, local)}, in blocks (one
    per transaction with --count), and the TLS line."""

    def __init__(self, proc):
        self.proc = proc
        self.blocks, self.tls = [], []
        block = {}
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("tls="):
                self.blocks.append(block)
                block = {}
                self.tls.append(dict(kv.split("=", 1) for kv in line.split()))
                continue
            rcpt, code, status, rest = line.split(" ", 3)
            text, _, local = rest.rpartition(" local=")
            block[rcpt] = (int(code), "" if status == "-" else status, text, local == "yes")
        self.rcpts = self.blocks[0] if self.blocks else {}

    def __repr__(self):
        return f"stdout={self.proc.stdout!r} stderr={self.proc.stderr[-3000:]!r}"


def relay_send(host, port, rcpts, message=b"Subject: t\r\n\r\nhi\r\n", sender=SENDER,
               args=(), timeout=60):
    if not os.access(RELAY_SEND, os.X_OK):
        pytest.fail(f"{RELAY_SEND} is missing: build first (make)")
    proc = subprocess.run([str(RELAY_SEND), *args, host, str(port), sender, *rcpts],
                          input=message, capture_output=True, timeout=timeout)
    err = proc.stderr.decode("utf-8", "replace")
    found = [m for m in SANITIZER_MARKS if m in err]
    assert not found, f"sanitizer reports from relay_send: {err[-5000:]}"
    assert proc.returncode == 0, f"relay_send exit {proc.returncode}: {err[-3000:]}"
    r = Result(proc)
    assert len(r.tls) >= 1, r
    return r


def on_the_wire(message):
    """What the server keeps of message: every line end CRLF, a last line end added."""
    out = bytearray()
    for i, b in enumerate(message):
        if b == 0x0A and (i == 0 or message[i - 1] != 0x0D):
            out += b"\r"
        out.append(b)
    if out and not out.endswith(b"\r\n"):
        out += b"\n" if out.endswith(b"\r") else b"\r\n"
    return bytes(out)


# ---- the message arrives as it was ------------------------------------------------------------

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\n"
           b"Subject: dots\r\n\r\n"
           b".one dot opens this line\r\n"
           b"..two dots\r\n"
           b".\r\n"
           b"a bare LF ends this line\n"
           b"\n"
           b"caf\xc3\xa9 8-bit\r\n"
           b". \r\n"
           b"no line end at the end")


def test_message_arrives_byte_for_byte(port):
    with Sink("127.0.0.2", port) as sink:
        r = relay_send("127.0.0.2", port, ["bob@remote.test"], MESSAGE)
        assert r.rcpts["bob@remote.test"][0] == 250, r
        assert r.rcpts["bob@remote.test"][3] is False
        m = sink.wait_for(1)[0]
    assert m.data == on_the_wire(MESSAGE)
    assert m.sender == SENDER and m.rcpts == ["bob@remote.test"]
    assert f"SIZE={len(MESSAGE)}" in m.mail_options
    assert "BODY=8BITMIME" in m.mail_options
    assert r.tls[0] == {"tls": "none", "verified": "no"}


def test_large_message_streamed(port):
    """Several write chunks and the back-pressure path; a CRLF split across a chunk edge
    and dots at line starts everywhere."""
    chunk = 64 * 1024
    head = b"Subject: big\r\n\r\n"
    body = bytearray(head)
    while len(body) < chunk - 1:
        body += b".dot line " + b"x" * 50 + b"\n"
    body = body[:chunk - 1] + b"\r\n.after the edge\n"
    while len(body) < 1_500_000:
        body += b".." + b"y" * 70 + b"\r\n"
    body = bytes(body)
    with Sink("127.0.0.2", port) as sink:
        r = relay_send("127.0.0.2", port, ["big@remote.test"], body)
        assert r.rcpts["big@remote.test"][0] == 250, r
        m = sink.wait_for(1)[0]
    assert m.data == on_the_wire(body)
    assert "BODY=8BITMIME" not in m.mail_options


def test_null_sender(port):
    with Sink("127.0.0.2", port) as sink:
        r = relay_send("127.0.0.2", port, ["bob@remote.test"], sender="")
        assert r.rcpts["bob@remote.test"][0] == 250, r
        m = sink.wait_for(1)[0]
    assert m.sender in ("", "<>")


# ---- per-recipient results ----------------------------------------------------------------------

@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_one_of_three_refused(port, pipelining):
    rules = {"bad@remote.test": "550 5.1.1 no such user"}
    rcpts = ["a@remote.test", "bad@remote.test", "c@remote.test"]
    with Sink("127.0.0.2", port, rules=rules, pipelining=pipelining) as sink:
        r = relay_send("127.0.0.2", port, rcpts)
        m = sink.wait_for(1)[0]
    assert r.rcpts["bad@remote.test"] == (550, "5.1.1", "no such user", False), r
    for ok in ("a@remote.test", "c@remote.test"):
        code, status, text, local = r.rcpts[ok]
        assert (code, status, local) == (250, "2.0.0", False), r
    assert m.rcpts == ["a@remote.test", "c@remote.test"]


def test_tempfail_at_data_end(port):
    rcpts = ["a@remote.test", "b@remote.test", "c@remote.test"]
    with Sink("127.0.0.2", port) as sink:
        sink.tempfail(1, at="data", reply="451 4.3.0 queue full, try later")
        r = relay_send("127.0.0.2", port, rcpts)
    assert sink.messages == [] and len(sink.refused) == 1
    for a in rcpts:
        assert r.rcpts[a] == (451, "4.3.0", "queue full, try later", False), r


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_all_refused_then_rset_and_next_message(port, pipelining):
    """Every RCPT refused leaves the transaction open: the next one starts with RSET
    (RFC 5321 section 4.1.1.5) over the same session."""
    rcpts = ["a@remote.test", "b@remote.test"]
    with Sink("127.0.0.2", port, pipelining=pipelining) as sink:
        sink.tempfail(1, at="rcpt", reply="450 4.2.1 mailbox busy")
        r = relay_send("127.0.0.2", port, rcpts, args=("--count", "2"))
        m = sink.wait_for(1)[0]
    assert len(r.blocks) == 2, r
    for a in rcpts:
        assert r.blocks[0][a] == (450, "4.2.1", "mailbox busy", False), r
        assert r.blocks[1][a][0] == 250, r
    assert m.rcpts == rcpts and len(sink.messages) == 1


def test_too_big_for_the_server(port):
    """RFC 1870: larger than the announced SIZE fails at once, without MAIL."""
    with Sink("127.0.0.2", port, size=1000) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"],
                       b"Subject: big\r\n\r\n" + b"z" * 2000 + b"\r\n")
    code, status, text, local = r.rcpts["a@remote.test"]
    assert (code, status, local) == (552, "5.3.4", True), r
    assert sink.messages == []


# ---- TLS ------------------------------------------------------------------------------------

def test_starttls_may_self_signed(port, cert):
    with Sink("127.0.0.2", port, tls=cert) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"], args=("--peer-name", MX_NAME))
        m = sink.wait_for(1)[0]
    assert r.rcpts["a@remote.test"][0] == 250, r
    assert r.tls[0]["tls"].startswith("TLSv1."), r
    assert r.tls[0]["verified"] == "no"
    assert m.tls


def test_verify_self_signed_fails(port, cert):
    with Sink("127.0.0.2", port, tls=cert) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"],
                       args=("--tls", "verify", "--peer-name", MX_NAME))
    code, status, text, local = r.rcpts["a@remote.test"]
    assert 400 <= code < 500 and local, r
    assert status.startswith("4.7."), r
    assert "verif" in text.lower(), r
    assert sink.messages == []


def test_verify_with_the_ca(port, cert):
    with Sink("127.0.0.2", port, tls=cert) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"],
                       args=("--tls", "verify", "--ca", cert[0], "--peer-name", MX_NAME))
        m = sink.wait_for(1)[0]
    assert r.rcpts["a@remote.test"][0] == 250, r
    assert r.tls[0]["verified"] == "yes", r
    assert m.tls


def test_verify_wrong_name_fails(port, cert):
    with Sink("127.0.0.2", port, tls=cert) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"],
                       args=("--tls", "verify", "--ca", cert[0], "--peer-name", "other.test"))
    code, status, text, local = r.rcpts["a@remote.test"]
    assert 400 <= code < 500 and local, r
    assert sink.messages == []


def test_encrypt_without_starttls(port):
    with Sink("127.0.0.2", port) as sink:
        r = relay_send("127.0.0.2", port, ["a@remote.test"], args=("--tls", "encrypt"))
    code, status, text, local = r.rcpts["a@remote.test"]
    assert (code // 100, status, local) == (4, "4.7.4", True), r
    assert "not offered" in text, r
    assert sink.messages == []


# ---- failures before any reply ---------------------------------------------------------------

def test_connection_refused(port):
    with socket.socket() as s:  # make sure nothing listens there
        s.bind(("127.0.0.2", port))
    r = relay_send("127.0.0.2", port, ["a@remote.test", "b@remote.test"])
    for a in ("a@remote.test", "b@remote.test"):
        code, status, text, local = r.rcpts[a]
        assert 400 <= code < 500 and local, r
        assert "refused" in text, r
        assert f"127.0.0.2]:{port}" in text, r


def test_timeout_waiting_for_greeting(port):
    """A server that never speaks: a local temporary failure after the greeting timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.2", port))
    srv.listen(1)
    try:
        r = relay_send("127.0.0.2", port, ["a@remote.test"], args=("--timeout", "500"))
    finally:
        srv.close()
    code, status, text, local = r.rcpts["a@remote.test"]
    assert (code // 100, local) == (4, True), r
    assert "timeout" in text and "greeting" in text, r


# ---- servers that misbehave: a scripted conversation ------------------------------------------

class Script:
    """One connection served from a script: ("send", bytes) writes, ("expect", prefix) reads
    one command line and checks its start, ("data",) reads a message up to CRLF.CRLF,
    ("wait",) waits for the client to close, ("close",) hangs up. What the client sent is
    in .lines; a mismatch in .errors."""

    def __init__(self, port, steps):
        self.steps, self.lines, self.errors = steps, [], []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.2", port))
        self.srv.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(15)
        self.srv.close()

    def _serve(self):
        conn, _ = self.srv.accept()
        conn.settimeout(10)
        f = conn.makefile("rb")
        try:
            for step in self.steps:
                if step[0] == "send":
                    conn.sendall(step[1])
                elif step[0] == "expect":
                    line = f.readline().decode("utf-8", "replace")
                    self.lines.append(line)
                    if not line.startswith(step[1]):
                        self.errors.append(f"expected {step[1]!r}, got {line!r}")
                        return
                elif step[0] == "data":
                    while True:
                        line = f.readline()
                        if line in (b".\r\n", b""):
                            break
                elif step[0] == "wait":
                    f.read()
                elif step[0] == "close":
                    return
        except OSError as e:
            self.errors.append(f"server: {e}")
        finally:
            f.close()
            conn.close()


def test_greeting_refused(port):
    """RFC 5321 section 3.1: a 554 greeting ends the session with that reply; QUIT follows."""
    with Script(port, [("send", b"554 5.3.2 not accepting mail\r\n"), ("expect", "QUIT"),
                       ("close",)]) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test"])
    assert r.rcpts["a@remote.test"] == (554, "5.3.2", "not accepting mail", False), r
    assert not srv.errors, srv.errors


def test_helo_fallback_one_at_a_time(port):
    """A multi-line greeting; EHLO refused with 5xx: HELO (RFC 5321 section 3.2), then MAIL
    without ESMTP parameters and one command at a time."""
    steps = [("send", b"220-mx.remote.test\r\n220 old server\r\n"),
             ("expect", "EHLO relay-send.test"), ("send", b"502 command not implemented\r\n"),
             ("expect", "HELO relay-send.test"), ("send", b"250 mx.remote.test\r\n"),
             ("expect", "MAIL FROM:<alice@example.test>\r\n"), ("send", b"250 ok\r\n"),
             ("expect", "RCPT TO:<a@remote.test>"), ("send", b"250 ok\r\n"),
             ("expect", "RCPT TO:<b@remote.test>"), ("send", b"550 no\r\n"),
             ("expect", "DATA"), ("send", b"354 go\r\n"), ("data",),
             ("send", b"250 queued\r\n"), ("expect", "QUIT"), ("send", b"221 bye\r\n"),
             ("wait",)]
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test", "b@remote.test"],
                       args=("--timeout", "5000"))
    assert not srv.errors, (srv.errors, r)
    assert r.rcpts["a@remote.test"] == (250, "", "queued", False), r
    assert r.rcpts["b@remote.test"] == (550, "", "no", False), r


def test_421_mid_pipeline(port):
    """A 421 (RFC 5321 section 3.8) decides every recipient still open."""
    steps = [("send", b"220 mx\r\n"), ("expect", "EHLO"),
             ("send", b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
             ("expect", "MAIL FROM:"), ("expect", "RCPT TO:<a@"), ("expect", "RCPT TO:<b@"),
             ("expect", "DATA"),
             ("send", b"250 ok\r\n421 4.3.2 shutting down\r\n"), ("close",)]
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test", "b@remote.test"])
    assert not srv.errors, srv.errors
    for a in ("a@remote.test", "b@remote.test"):
        assert r.rcpts[a] == (421, "4.3.2", "shutting down", False), r


@pytest.mark.parametrize("how", ["timeout", "close"])
def test_no_reply_after_the_data(port, how):
    steps = [("send", b"220 mx\r\n"), ("expect", "EHLO"), ("send", b"250 mx\r\n"),
             ("expect", "MAIL"), ("send", b"250 ok\r\n"), ("expect", "RCPT"),
             ("send", b"250 ok\r\n"), ("expect", "DATA"), ("send", b"354 go\r\n"), ("data",),
             ("wait",) if how == "timeout" else ("close",)]
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test"], args=("--timeout", "700"))
    assert not srv.errors, srv.errors
    code, status, text, local = r.rcpts["a@remote.test"]
    assert (code // 100, local) == (4, True), r
    want = "timeout waiting for reply to end of data" if how == "timeout" else "lost connection"
    assert want in text, r


def test_reply_before_the_end_of_a_large_body(port):
    """A server that answers while the body is still streaming: the reply is taken as the
    answer to the final dot once the body is out."""
    steps = [("send", b"220 mx\r\n"), ("expect", "EHLO"), ("send", b"250 mx\r\n"),
             ("expect", "MAIL"), ("send", b"250 ok\r\n"), ("expect", "RCPT"),
             ("send", b"250 ok\r\n"), ("expect", "DATA"),
             ("send", b"354 go\r\n554 5.3.4 too much mail data\r\n"), ("data",),
             ("expect", "QUIT"), ("send", b"221 bye\r\n"), ("wait",)]
    body = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 40000
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test"], body, args=("--timeout", "5000"))
    assert not srv.errors, srv.errors
    assert r.rcpts["a@remote.test"] == (554, "5.3.4", "too much mail data", False), r


def test_starttls_refused_under_may(port):
    """RFC 3207 section 4: a refused STARTTLS leaves the session in plaintext under may."""
    steps = [("send", b"220 mx\r\n"), ("expect", "EHLO"),
             ("send", b"250-mx\r\n250 STARTTLS\r\n"), ("expect", "STARTTLS"),
             ("send", b"454 4.7.0 TLS not available\r\n"),
             ("expect", "MAIL"), ("send", b"250 ok\r\n"), ("expect", "RCPT"),
             ("send", b"250 ok\r\n"), ("expect", "DATA"), ("send", b"354 go\r\n"), ("data",),
             ("send", b"250 2.0.0 queued\r\n"), ("expect", "QUIT"), ("close",)]
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test"])
    assert not srv.errors, srv.errors
    assert r.rcpts["a@remote.test"] == (250, "2.0.0", "queued", False), r
    assert r.tls[0]["tls"] == "none"


def test_not_a_reply(port):
    steps = [("send", b"220 mx\r\n"), ("expect", "EHLO"), ("send", b"hello there\r\n"),
             ("wait",)]
    with Script(port, steps) as srv:
        r = relay_send("127.0.0.2", port, ["a@remote.test"])
    assert not srv.errors, srv.errors
    code, status, text, local = r.rcpts["a@remote.test"]
    assert (code // 100, status, local) == (4, "4.5.0", True), r
    assert "bad reply" in text, r


# ---- internationalised addresses (RFC 6531) ---------------------------------------------------

def test_smtputf8_address(port):
    rcpt = "j\u00fcrgen@remote.test"
    with Sink("127.0.0.2", port) as sink:
        r = relay_send("127.0.0.2", port, [rcpt])
        m = sink.wait_for(1)[0]
    assert r.rcpts[rcpt][0] == 250, r
    assert "SMTPUTF8" in m.mail_options and m.rcpts == [rcpt]


def test_smtputf8_not_offered(port):
    rcpt = "j\u00fcrgen@remote.test"
    with Sink("127.0.0.2", port, smtputf8=False) as sink:
        r = relay_send("127.0.0.2", port, [rcpt, "plain@remote.test"])
        m = sink.wait_for(1)[0]
    code, status, text, local = r.rcpts[rcpt]
    assert (code, status, local) == (553, "5.6.7", True), r
    assert r.rcpts["plain@remote.test"][0] == 250, r
    assert m.rcpts == ["plain@remote.test"] and "SMTPUTF8" not in m.mail_options
