"""Small helpers for Postern's end-to-end tests: a raw SMTP conversation client, a NATS
subscriber speaking the text protocol, and wait_until.

The raw client exists for what smtplib will not do on purpose (pipelining by hand, bare LF,
NUL bytes, over-long lines, plaintext injection after STARTTLS); everything else goes
through real clients: smtplib, swaks, msmtp, openssl s_client.
"""

import base64
import json
import random
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid

CRLF = b"\r\n"

# The accounts every session has (created by the `accounts` fixture) and the server's name.
DOMAIN = "example.test"
ALICE = "alice@example.test"
ALICE_PW = "Alice-pw-0ne!"
BOB = "bob@example.test"
BOB_PW = "B0b-pw-two?"
SMTP_HOSTNAME = "mx.test.example"
OUTSIDE = "someone@other.example"
ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


def wait_until(fn, timeout=15, interval=0.1, what=None):
    """Calls fn until it returns something truthy and returns that. Exceptions count as
    "not yet". After timeout seconds, fails with the last value or exception."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        if time.monotonic() >= deadline:
            name = what or getattr(fn, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout}s waiting for {name}; last: {last!r}")
        time.sleep(interval)


def token():
    """A unique string to find one test's message in the store."""
    return "tok-" + uuid.uuid4().hex


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def plain_response(user, password, authzid=""):
    """The SASL PLAIN initial response (RFC 4616), base64-encoded."""
    return b64(f"{authzid}\0{user}\0{password}")


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n):
    """n distinct ports that can be bound now, picked below the kernel's ephemeral range:
    outgoing connections (to PostgreSQL, NATS, the servers under test) take their local
    ports from that range, so a port picked there may be taken again before a server binds
    it."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, high - 20000)
    rng = random.SystemRandom()
    ports = []
    while len(ports) < n:
        port = rng.randint(low, high)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def listens(port):
    """True when something on 127.0.0.1 accepts a connection on port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def client_tls_context(cafile):
    """TLS client context that trusts exactly the harness's self-signed certificate."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Reply:
    """One SMTP reply: a code and its text lines (without the code and separator)."""

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        """The enhanced status code of the first line (RFC 2034), or None."""
        first = self.lines[0].split(" ", 1)[0] if self.lines and self.lines[0] else ""
        return first if ENH_RE.match(first) else None

    def keywords(self):
        """EHLO reply as {KEYWORD: [params]} (the first line, the greeting, is skipped)."""
        caps = {}
        for line in self.lines[1:]:
            parts = line.split()
            if parts:
                caps[parts[0].upper()] = parts[1:]
        return caps

    def __repr__(self):
        return f"<Reply {self.code} {self.lines!r}>"


def code_matches(code, want):
    """want: an int (250), a one-digit class as str ('4', '5'), or a tuple/set of those."""
    if isinstance(want, (tuple, list, set, frozenset)):
        return any(code_matches(code, w) for w in want)
    if isinstance(want, str):
        return str(code).startswith(want)
    return code == want


def check_reply(reply, code, enh=None, context=""):
    assert code_matches(reply.code, code), f"{context}: expected {code}, got {reply!r}"
    if enh is not None:
        assert reply.enh == enh, f"{context}: expected enhanced code {enh}, got {reply!r}"
    return reply


class SMTPClient:
    """A byte-exact SMTP conversation. `expect(line, code, enh)` sends one command and checks
    the reply; `send` writes raw bytes; `reply` reads the next reply."""

    def __init__(self, port, host="127.0.0.1", source=None, tls_context=None, timeout=30):
        self.timeout = timeout
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.tls_context = tls_context
        self.buf = b""
        self.tls = False
        self.greeting = None

    @classmethod
    def connect(cls, port, implicit_tls=False, **kw):
        c = cls(port, **kw)
        if implicit_tls:
            c._wrap()
        c.greeting = c.reply()
        return c

    def _wrap(self):
        assert not self.buf, f"unread bytes before the TLS handshake: {self.buf!r}"
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname="localhost")
        self.tls = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.settimeout(2)
            self.sock.sendall(b"QUIT\r\n")
            self._read_line()
        except (OSError, EOFError, ssl.SSLError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None

    # --- raw I/O ---------------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no reply within {self.timeout}s (unparsed input {self.buf!r})")
        if not chunk:
            raise EOFError(f"server closed the connection (unparsed input {self.buf!r})")
        self.buf += chunk

    def _read_line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = []
        code = None
        while True:
            line = self._read_line()
            m = re.match(r"^(\d{3})([ -]?)(.*)$", line)
            assert m, f"malformed reply line {line!r}"
            if code is None:
                code = int(m.group(1))
            assert int(m.group(1)) == code, f"mixed codes in one reply: {lines!r} then {line!r}"
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines)

    def closed_by_server(self, timeout=None):
        """True once the server has closed the connection (reads and drops replies)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError, ssl.SSLError):
            return True

    # --- conversation --------------------------------------------------------------------
    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.reply()

    def expect(self, line, code, enh=None):
        return check_reply(self.cmd(line), code, enh, context=repr(line))

    def expect_reply(self, code, enh=None, context="reply"):
        return check_reply(self.reply(), code, enh, context=context)

    def ehlo(self, name="client.test"):
        return self.expect(f"EHLO {name}", 250)

    def starttls(self):
        self.expect("STARTTLS", 220)
        self._wrap()

    def data(self, payload, code=250, enh="2.0.0"):
        """DATA, then the already dot-stuffed payload (bytes ending in CRLF) and the final dot."""
        self.expect("DATA", 354)
        self.send(payload + b".\r\n")
        return self.expect_reply(code, enh, context="end of DATA")

    def send_mail(self, sender, rcpts, message):
        """One whole transaction that must succeed; returns the queue id."""
        self.expect(f"MAIL FROM:<{sender}>", 250)
        for r in rcpts:
            self.expect(f"RCPT TO:<{r}>", 250)
        return queue_id_of(self.data(dot_stuff(message)))


def make_message(tok, sender=BOB, to=ALICE, body=b"Hello.\r\n"):
    """A small CRLF message whose Subject and Message-ID carry tok."""
    head = (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {tok}\r\n"
            f"Message-ID: <{tok}@client.test>\r\n\r\n")
    return head.encode() + body


def dot_stuff(body):
    """SMTP transparency (RFC 5321 4.5.2) for a CRLF-terminated body."""
    out = []
    for line in body.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)


def queue_id_of(reply):
    m = re.search(r"queued as (\S+)", reply.text)
    assert m, f"no queue id in {reply!r}"
    return m.group(1)


def split_added_headers(raw):
    """Splits a stored message into (Return-Path line, Received header, the rest).
    The Received header may be folded over several lines."""
    assert raw.startswith(b"Return-Path: "), f"stored message starts with {raw[:60]!r}"
    rp_end = raw.index(CRLF) + 2
    return_path = raw[:rp_end]
    rest = raw[rp_end:]
    assert rest.startswith(b"Received: "), f"no Received header after Return-Path: {rest[:60]!r}"
    end = rest.index(CRLF) + 2
    while rest[end:end + 1] in (b" ", b"\t"):
        end = rest.index(CRLF, end) + 2
    return return_path, rest[:end], rest[end:]


# Who the harness's own NATS clients log in as: (user, password), or None for no
# credentials. conftest.py sets it to its nats-server's user "test", allowed everything (the
# harness's server only). Every helper below also takes login= to connect as another user.
NATS_LOGIN = None
# The CA that signed the NATS servers' certificate, when they require TLS (a compose stack).
NATS_TLS_CA = None
_AS_HARNESS = object()


def nats_address(url):
    """(host, port) of the first server of a NATS_URL (one URL or a comma-separated list)."""
    m = re.match(r"^(?:nats|tls)://([^:/,]+):(\d+)", url.strip())
    assert m, f"cannot parse NATS_URL {url!r}"
    return m.group(1), int(m.group(2))


def nats_open(url, timeout=10):
    """A connection to the first server of url, its INFO read (and returned) and, when the
    server requires it, TLS started (verified with NATS_TLS_CA)."""
    sock = socket.create_connection(nats_address(url), timeout=timeout)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)  # byte by byte: nothing of what follows INFO may be lost
        if not chunk:
            raise EOFError("NATS connection closed")
        line += chunk
    assert line.startswith(b"INFO "), f"NATS server said {line!r}"
    info = json.loads(line[5:])
    if info.get("tls_required"):
        ctx = ssl.create_default_context(cafile=NATS_TLS_CA)
        sock = ctx.wrap_socket(sock, server_hostname=nats_address(url)[0])
    return sock, info


def nats_connect_line(login=_AS_HARNESS, verbose=False, name="postern-e2e"):
    """The CONNECT command of the NATS text protocol, with login's user and password."""
    login = NATS_LOGIN if login is _AS_HARNESS else login
    opts = {"verbose": verbose, "pedantic": False, "name": name, "lang": "python",
            "protocol": 1, "headers": False}
    if login:
        opts["user"], opts["pass"] = login
    return b"CONNECT " + json.dumps(opts).encode() + b"\r\n"


class NatsWire:
    """Reads the NATS text protocol off self.sock (with self.buf): CRLF lines, payloads."""

    buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("NATS connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("NATS connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


class NatsSubscriber(NatsWire):
    """Subscribes to one NATS subject and collects the decoded protobuf payloads."""

    def __init__(self, url, subject, msg_type, timeout=15, login=_AS_HARNESS):
        self.subject = subject
        self.msg_type = msg_type
        self.events = []
        self.errors = []
        self.cond = threading.Condition()
        self.closed = False
        self.sock, _ = nats_open(url, timeout=timeout)
        self.buf = b""
        self.sock.sendall(nats_connect_line(login)
                          + f"SUB {subject} 1\r\n".encode() + b"PING\r\n")
        # The PONG proves the subscription is registered before anything is published.
        while True:
            line = self._line()
            if line == b"PONG":
                break
            assert not line.startswith(b"-ERR"), f"NATS refused the subscription: {line!r}"
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()


    def _run(self):
        try:
            while True:
                line = self._line()
                if line.startswith(b"MSG "):
                    # MSG <subject> <sid> [reply-to] <#bytes>
                    size = int(line.split()[-1])
                    payload = self._exact(size + 2)[:size]
                    self._deliver(payload)
                elif line == b"PING":
                    self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"-ERR"):
                    with self.cond:
                        self.errors.append(line.decode("utf-8", "replace"))
                # INFO, +OK, PONG: nothing to do
        except (OSError, EOFError) as e:
            if not self.closed:
                with self.cond:
                    self.errors.append(f"connection lost: {e}")
                    self.cond.notify_all()

    def _deliver(self, payload):
        try:
            event = self.msg_type.FromString(payload)
        except Exception as e:  # noqa: BLE001 - a bad payload is a finding, not a crash
            with self.cond:
                self.errors.append(f"undecodable payload {payload!r}: {e}")
            return
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, pred, timeout=15):
        """Returns the first collected event for which pred(event) is true, waiting for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching event on {self.subject} within {timeout}s; "
                        f"got {[str(e) for e in self.events]!r}, errors {self.errors!r}")
                self.cond.wait(left)

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def nats_request(url, subject, payload=b"", timeout=5, login=_AS_HARNESS):
    """One NATS request: returns the reply payload, or None when nothing answered in time
    (a "no responders" status counts as no answer)."""
    # Replies go to the asker's own inbox, _INBOX.<user>. The harness's user asks the way a
    # front end does, in smtpd's: the limiter may answer only the front ends' inboxes.
    who = NATS_LOGIN if login is _AS_HARNESS else login
    user = who[0] if who and who[0] != "test" else "smtpd"
    inbox = f"_INBOX.{user}.e2e{uuid.uuid4().hex}"
    sock, _ = nats_open(url, timeout=timeout)
    with sock:
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError("NATS connection closed")
                buf += chunk
            ln, buf = buf.split(b"\r\n", 1)
            return ln

        def exact(n):
            nonlocal buf
            while len(buf) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError("NATS connection closed")
                buf += chunk
            data, buf = buf[:n], buf[n:]
            return data

        sock.sendall(nats_connect_line(login)
                     + f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
                     + payload + b"\r\n")
        try:
            while True:
                ln = line()
                if ln.startswith(b"MSG "):
                    size = int(ln.split()[-1])
                    return exact(size + 2)[:size]
                if ln == b"PING":
                    sock.sendall(b"PONG\r\n")
        except socket.timeout:
            return None


# --- authenticated sending and logins through smtplib (the HAMR and harvesting tests) ---------

def _smtplib_session(frontend, port, source):
    """A connected smtplib client inside TLS (STARTTLS on submission, implicit on smtps)."""
    s = frontend.smtplib_client(port, source)
    try:
        s.ehlo()
        if port != "smtps":
            s.starttls(context=frontend.stack.tls_context())
            s.ehlo()
    except BaseException:
        s.close()
        raise
    return s


class Submitter:
    """One authenticated (SASL PLAIN) smtplib session through a Frontend's submission or smtps
    port; send() runs one transaction and returns the (code, text) of the reply that ended it:
    the reply to the end of DATA, or to MAIL or RCPT when they refused."""

    def __init__(self, frontend, user, password, port="submission", source=None):
        self.user = user
        self.s = _smtplib_session(frontend, port, source)
        self.s.user, self.s.password = user, password
        try:
            code, _ = self.s.auth("PLAIN", self.s.auth_plain)
        except BaseException:
            self.s.close()
            raise
        assert code == 235, code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.s.quit()
        except (smtplib.SMTPException, OSError):
            self.s.close()

    def send(self, to, tok):
        code, text = self.s.mail(self.user)
        if code == 250:
            code, text = self.s.rcpt(to)
            if code in (250, 251):
                code, text = self.s.data(make_message(tok, sender=self.user, to=to))
                return code, text.decode("utf-8", "replace")
        self.s.rset()
        return code, text.decode("utf-8", "replace")


def submit(frontend, user, password, to, tok, port="submission", source=None):
    """One message in its own authenticated session: (code, text) as Submitter.send."""
    with Submitter(frontend, user, password, port, source) as sub:
        return sub.send(to, tok)


def login_attempt(frontend, user, password, source=None, port="smtps"):
    """One SASL PLAIN login in a new smtplib session from source: (code, text) of the reply
    to AUTH, or of the greeting when the connection is refused."""
    try:
        s = _smtplib_session(frontend, port, source)
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode("utf-8", "replace")
    try:
        s.user, s.password = user, password
        try:
            code, text = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code, text = e.smtp_code, e.smtp_error
        return code, text.decode("utf-8", "replace")
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def greeting(frontend, source, port="mx"):
    """The reply a new connection from source gets first (220, or 554 when blocked)."""
    with frontend.connect(port, source=source) as c:
        return c.greeting


def nats_publish(url, subject, payload, login=_AS_HARNESS):
    """Publishes one message (as any service would) and returns once the server has it."""
    sock, _ = nats_open(url)
    with sock:
        f = sock.makefile("rb")
        sock.sendall(nats_connect_line(login)
                     + f"PUB {subject} {len(payload)}\r\n".encode() + payload
                     + b"\r\nPING\r\n")
        while True:
            line = f.readline()
            assert line, "NATS connection closed"
            assert not line.startswith(b"-ERR"), line
            if line.startswith(b"PONG"):
                return


class RawConversation:
    """A byte-exact conversation with a line-based server (test_pop3.Pop3, test_imap.Imap):
    the connection (optionally from a source address, optionally TLS from the first byte),
    sending, reading into self.buf, and whether the server hangs up. Subclasses read the
    greeting and give the protocol's commands."""

    def __init__(self, port, tls_context=None, implicit_tls=False, source=None, timeout=30):
        src = (source, 0) if source else None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=src)
        self.tls_context = tls_context
        self.buf = b""
        if implicit_tls:
            self._wrap()

    def _wrap(self):
        assert not self.buf, f"unread bytes before the TLS handshake: {self.buf!r}"
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname="localhost")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"server closed the connection (unparsed {self.buf!r})")
        self.buf += chunk

    def closed_by_server(self, timeout=10):
        """True once the server closes the connection (whatever it sends first), False if it
        is still open after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
