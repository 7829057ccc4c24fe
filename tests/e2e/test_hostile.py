"""Hostile clients. No reply, on any protocol, carries a control character the client sent:
control characters (CR, NUL, ESC, DEL, bare LF where a line may hold one) go into every
place a reply could echo (SMTP parameters, addresses, unknown commands, AUTH mechanisms and
responses; POP3 commands and arguments; IMAP tags, commands and arguments, a literal
inside an argument), and every byte of every reply line must be printable US-ASCII, or the
CRLF that ends the line (IMAP literals are data, and skipped).

And a session cut off (the error cap, the command cap, the idle timeout, the drain deadline)
ends so that the client reads its last reply (SMTP 421, POP3 -ERR, IMAP BYE) and then the
end of the stream: never a connection reset, even when the client was still sending."""

import re
import signal
import socket
import ssl
import time

import pytest

from support import ALICE, ALICE_PW, nats_request, wait_until

CRLF = b"\r\n"
PRINTABLE = re.compile(rb"[\x20-\x7e]*")
SMTP_LINE = re.compile(rb"(\d{3})([ -])[\x20-\x7e]*")


# --- a raw connection read to its end -------------------------------------------------------

class Raw:
    """A plain or TLS connection that sends bytes as given and reads what the server sends
    until it closes; a connection reset fails the test."""

    def __init__(self, port, tls_context=None, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_context:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"server closed the connection (unparsed {self.buf!r})"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def until(self, pattern, timeout=30):
        """The bytes received up to and including the first line matching pattern."""
        self.sock.settimeout(timeout)
        out = b""
        while True:
            ln = self.line()
            out += ln
            if re.match(pattern, ln):
                return out

    def to_eof(self, timeout=30):
        """Everything the server sends until it closes the connection."""
        self.sock.settimeout(timeout)
        out, self.buf = self.buf, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                pytest.fail(f"connection reset after reading {out!r}")
            if not chunk:
                return out
            out += chunk

    def keep_sending(self, data, times=5, pause=0.1):
        """Goes on sending after the server has stopped listening, as a pipelining client
        does; the server reading and dropping it is part of what is tested."""
        for _ in range(times):
            time.sleep(pause)
            try:
                self.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pytest.fail("the server reset the connection while the client was sending")


def reply_lines(data):
    """The reply lines (without CRLF) of a byte stream that must be whole CRLF lines of
    printable US-ASCII."""
    assert data.endswith(CRLF), f"the stream does not end with CRLF: {data[-80:]!r}"
    lines = data[:-2].split(CRLF)
    for ln in lines:
        assert PRINTABLE.fullmatch(ln), f"reply line with a control character: {ln!r}"
    return lines


def smtp_replies(data):
    """The SMTP replies in data as (code, text of the last line); every line well-formed."""
    replies = []
    for ln in reply_lines(data):
        m = SMTP_LINE.fullmatch(ln)
        assert m, f"malformed reply line {ln!r}"
        if m.group(2) == b" ":
            replies.append((int(m.group(1)), ln[4:].decode()))
    return replies


def imap_lines(data):
    """The IMAP response lines in data, literals (RFC 3501 section 4.3: data) replaced by
    "{n}"; every byte outside the literals printable, every line ended by CRLF."""
    lines, cur, i = [], b"", 0
    while i < len(data):
        end = data.find(CRLF, i)
        assert end >= 0, f"response without CRLF: {data[i:i + 80]!r}"
        part = data[i:end]
        assert PRINTABLE.fullmatch(part), f"response line with a control character: {part!r}"
        cur += part
        i = end + 2
        m = re.search(rb"\{(\d+)\}$", part)
        if m:
            i += int(m.group(1))  # the literal's bytes, then the rest of the line
            continue
        lines.append(cur)
        cur = b""
    assert not cur, f"unfinished response {cur!r}"
    return lines


# --- control characters in every echoable place ------------------------------------------------

def smtp_conversation(port, lines, tls_context=None):
    """Sends lines (each ended by CRLF unless it ends in a bare LF) in one write after the
    greeting, then QUIT; returns the replies, the greeting's first, read to the end."""
    payload = b"".join(ln if ln.endswith(b"\n") else ln + CRLF for ln in lines) + b"QUIT\r\n"
    with Raw(port, tls_context) as c:
        c.send(payload)
        replies = smtp_replies(c.to_eof())
    # One reply per line the server saw (a bare LF ends one), the greeting and QUIT's.
    assert len(replies) == payload.count(b"\n") + 1, replies
    assert replies[0][0] == 220 and replies[-1][0] == 221, replies
    return replies


def test_smtp_envelope_and_commands(postern):
    replies = smtp_conversation(postern.mx, [
        b"EHLO client.test",
        b"MAIL FROM:<a@b.test> X=\rFAKE",           # the example
        b"MAIL FROM:<a@b.test> X=\x1b[2J\x1b[31mred",
        b"MAIL FROM:<a@b.test> X=\x7f\x01\x02\x03\x04\x05\x06\x07\x08\t\x0b\x0c\x0e\x1f",
        b"MAIL FROM:<a@b.test> X=" + b"\r" * 60,      # past the cap, still one line
        b"MAIL FROM:<a@b.test> X=\x00FAKE",
        b"MAIL FROM:<a@b.test> X=\nFAKE",           # bare LF: two lines, both refused
        b"MAIL FROM:<a\x1b@b.test>",
        b"MAIL FROM:<a@b\r.test>",
        b"MAIL FROM:<\"a\rb\"@b.test>",
        b"MAIL FROM:<a@b.test> SIZE=1\r",
        b"MAIL FROM:<a@b.test>",
        b"RCPT TO:<bob@example.test> X=\r",
        b"RCPT TO:<b\x1bob@example.test>",
        b"RCPT TO:<someone@ex\x7fample.test>",
        b"RSET",
        b"FOO\x1b[31m bar\r",
        b"\x1b\r",
        b"VRFY \x1b[2J",
        b"HELO \x1b\r",
    ])
    codes = [code for code, _ in replies]
    assert codes[2:4] == [555, 555], replies
    assert replies[2][1].startswith("5.5.4 Unsupported parameter X=?FAKE"), replies
    assert 250 in codes[12:], replies  # the plain MAIL FROM went through


def test_smtp_auth_mechanisms_and_responses(postern):
    replies = smtp_conversation(postern.smtps, [
        b"EHLO client.test",
        b"AUTH X\x1bY",
        b"AUTH X\rY",
        b"AUTH \x7f",
        b"AUTH PLAIN \x1b[2J",
        b"AUTH LOGIN",
        b"\x1b[31m\r",              # a SASL response
        b"AUTH PLAIN",
        b"*\r",
    ], tls_context=postern.tls_context())
    assert [code for code, _ in replies[2:5]] == [504, 504, 504], replies


def test_pop3_commands_and_arguments(postern):
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    lines = [b"CAPA \x1b", b"FO\x1bO", b"\x1b[2J", b"NOOP\r\x00", b"LIST 1\x1b",
             b"USER a\x1bb\rc", b"PASS x\x7fy", b"AUTH X\x1bY", b"AUTH PLAIN \x1b", b"AUTH \r",
             b"STAT\n", b"CAPA \r\n", b"QUIT"]
    with Raw(postern.pop3s, postern.tls_context()) as c:
        c.send(b"".join(ln if ln.endswith(b"\n") else ln + CRLF for ln in lines))
        out = reply_lines(c.to_eof())
    status = [ln for ln in out if ln.startswith((b"+OK", b"-ERR"))]
    # The greeting, then one status line for each line sent.
    assert len(status) == len(lines) + 1, out
    assert status[-1].startswith(b"+OK") and b"signing off" in status[-1], out


def test_imap_tags_commands_and_arguments(postern):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    sent = [
        (b"*", b"a\x1bb NOOP"),
        (b"*", b"t\r1 NOOP"),
        (b"t1", b"t1 FOO\x1b"),
        (b"t2", b"t2 X\x7fY"),
        (b"t3", b"t3 NOOP \x1b"),
        (b"t4", b"t4 NOOP\n"),                                   # bare LF is tolerated
        (b"t5", b"t5 LOGIN \"a\x1b\" \"b\""),
        (b"t6", b"t6 AUTHENTICATE X\x1bY"),
        (b"t7", b"t7 AUTHENTICATE X\rY"),
        (b"t8", b"t8 FETCH 1 (BODY[\x1b])"),
        (b"t9", f"t9 LOGIN {ALICE} \"{ALICE_PW}\"".encode()),
        (b"t10", b"t10 STATUS INBOX (MESSAGES {7+}\r\nA\r\n\x1b[2J)"),  # a literal echoed
        (b"t11", b"t11 STATUS INBOX (\x1b)"),
        (b"t12", b"t12 STATUS INBOX (MESSAGES \"\x1b[2J\")"),
        (b"t13", b"t13 SELECT \"a\x1bb\""),
        (b"t14", b"t14 SELECT INBOX"),
        (b"t15", b"t15 FETCH 1:* (FLAGS \x1b)"),
        (b"t16", b"t16 UID X\x1b 1"),
        (b"t17", b"t17 LOGOUT"),
    ]
    with Raw(postern.port("imaps"), postern.tls_context()) as c:
        c.send(b"".join(ln if ln.endswith(b"\n") else ln + CRLF for _, ln in sent))
        out = imap_lines(c.to_eof())
    tagged = [ln.split(b" ", 2)[:2] for ln in out
              if not ln.startswith(b"* ") or ln.startswith((b"* BAD", b"* NO"))]
    assert [tag for tag, _ in tagged] == [tag for tag, _ in sent], out
    statuses = dict((tag, status) for tag, status in tagged if tag != b"*")
    assert statuses[b"t9"] == b"OK" and statuses[b"t10"] == b"BAD", out
    assert statuses[b"t17"] == b"OK", out
    assert any(ln.startswith(b"* BYE") for ln in out), out


# --- the last reply before a session is cut off --------------------------------------------------

def test_smtp_error_cap_last_reply_is_read(postern):
    # smtp.max_errors is 20: 20 refusals, then 421, then the end of the stream; the client
    # goes on sending meanwhile.
    with Raw(postern.mx) as c:
        c.send(b"EHLO client.test\r\n" + b"XYZZY\r\n" * 30)
        c.keep_sending(b"XYZZY\r\n" * 20)
        replies = smtp_replies(c.to_eof())
    codes = [code for code, _ in replies]
    assert codes == [220, 250] + [500] * 20 + [421], replies
    assert "too many errors" in replies[-1][1], replies


def test_pop3_error_cap_last_reply_is_read(postern):
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    with Raw(postern.pop3) as c:
        c.send(b"BOGUS\r\n" * 30)
        c.keep_sending(b"BOGUS\r\n" * 20)
        out = reply_lines(c.to_eof())
    assert out[0].startswith(b"+OK"), out
    assert len(out) == 22 and all(ln.startswith(b"-ERR") for ln in out[1:]), out
    assert out[-1] == b"-ERR Too many errors, closing the connection", out


def test_imap_error_cap_last_reply_is_read(postern):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    with Raw(postern.port("imap")) as c:
        c.send(b"".join(b"e%d BOGUS\r\n" % i for i in range(30)))
        c.keep_sending(b"x BOGUS\r\n" * 20)
        out = imap_lines(c.to_eof())
    assert out[0].startswith(b"* OK"), out
    assert out[1:21] == [b"e%d BAD Unknown command BOGUS" % i for i in range(20)], out
    assert out[21:] == [b"* BYE Too many errors, closing the connection"], out


def test_smtp_command_cap_last_reply_is_read(postern, mailctl):
    mailctl("config", "set", "smtp.max_commands", "10")  # the smallest allowed

    def cut_off_with_421():
        with Raw(postern.mx) as c:
            # Ten commands are served; the 11th gets 421 (QUIT ends the session while the
            # new limit is not in force yet).
            c.send(b"EHLO client.test\r\n" + b"NOOP\r\n" * 14 + b"QUIT\r\n")
            c.keep_sending(b"NOOP\r\n" * 10)
            replies = smtp_replies(c.to_eof())
        if replies[-1][0] == 221:
            return False
        assert [code for code, _ in replies] == [220] + [250] * 10 + [421], replies
        assert "too many commands" in replies[-1][1], replies
        return True

    wait_until(cut_off_with_421, what="the 11th command of a session to be refused")


@pytest.fixture
def raw_setting(postern, sql):
    """raw_setting(key, value): a system setting written into the table as it is (below the
    minimum mailctl allows), announced, removed afterwards."""
    keys = []

    def announce():
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


def idle_goodbye(port, greeting, last, timeout):
    """Connects, reads the greeting and waits silently: the goodbye (a line matching last),
    then the end of the stream; None while the short timeout is not in force yet."""
    with Raw(port) as c:
        c.until(greeting)
        try:
            out = c.to_eof(timeout)
        except socket.timeout:
            return None
    lines = reply_lines(out)
    assert len(lines) == 1 and re.fullmatch(last, lines[0]), lines
    return lines[0]


def test_smtp_idle_timeout_last_reply_is_read(postern, raw_setting):
    # below mailctl's smallest (10, which test_limits.py's test_idle_timeout takes): quicker
    raw_setting("smtp.idle_timeout", 2)
    wait_until(lambda: idle_goodbye(postern.mx, rb"220 ", rb"421 4\.4\.2 .*timeout.*", 8),
               timeout=60, what="an idle SMTP session to get 421")


def test_pop3_idle_timeout_last_reply_is_read(postern, raw_setting):
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    raw_setting("pop3.idle_timeout", 2)
    wait_until(lambda: idle_goodbye(postern.pop3, rb"\+OK", rb"-ERR Autologout.*", 8),
               timeout=60, what="an idle POP3 session to get -ERR")


def test_imap_idle_timeout_last_reply_is_read(postern, raw_setting):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    raw_setting("imap.idle_timeout", 2)
    wait_until(lambda: idle_goodbye(postern.port("imap"), rb"\* OK", rb"\* BYE Autologout.*", 8),
               timeout=60, what="an idle IMAP session to get BYE")


# --- the drain deadline ------------------------------------------------------------------------

def open_sessions(svc):
    log = svc.since(svc.started_at)
    return log.count('msg="session opened"') - log.count('msg="session closed"')


def sigterm(svc):
    """SIGTERM once the test's client is the only session (the readiness probes have gone);
    returns once the service logs that it is draining."""
    wait_until(lambda: open_sessions(svc) == 1, what="one open session")
    offset = svc.size()
    svc.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: 'msg="draining"' in svc.since(offset), what="the service to drain")
    return offset


DRAIN_CASES = {
    # service: (greeting, what the client says first, its answer, the goodbye)
    "smtpd": (rb"220 ", b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n", rb"250 2\.1\.0",
              rb"421 4\.3\.2 \S+ Service shutting down"),
    "pop3d": (rb"\+OK", b"CAPA\r\n", rb"\.\r\n",
              rb"-ERR \[SYS/TEMP\] Server shutting down"),
    "imapd": (rb"\* OK", b"t1 NOOP\r\n", rb"t1 OK",
              rb"\* BYE \[UNAVAILABLE\] Server shutting down.*"),
}


@pytest.mark.parametrize("service", sorted(DRAIN_CASES))
def test_drain_deadline_last_reply_is_read(postern, draining_frontend, service):
    greeting, first, answer, goodbye = DRAIN_CASES[service]
    port, svc = draining_frontend(service, 1)
    with Raw(port) as c:
        c.until(greeting)
        c.send(first)
        c.until(answer)
        offset = sigterm(svc)
        lines = reply_lines(c.to_eof(timeout=60))
    assert len(lines) == 1 and re.fullmatch(goodbye, lines[0]), lines
    wait_until(lambda: svc.proc.poll() is not None, timeout=60, what=f"{service} to exit")
    assert svc.proc.returncode == 0
    log = svc.since(offset)
    assert 'msg="drain finished" sessions=1 finished=0 forced=1' in log, log
