"""The bus is no open door: every NATS connection logs in, and each user may publish and
subscribe only what its job needs (helm/postern/files/nats-permissions.txt, made into the
harness's nats-server configuration by deploy/nats-auth.sh).

A client of the test's own speaks the NATS text protocol with verbose on, so the server
answers every command with +OK or -ERR. A second client, the harness's own user (allowed
everything), watches the subjects, so a refused publish is also seen not to arrive."""

import socket
import subprocess
import time

import pytest

import support
from support import nats_connect_line, nats_open, wait_until

# What only the limiter may publish, and what only mailctl (and web) may.
LIMITER_ONLY = ("postern.block.changed", "postern.account.changed", "postern.alert")
MAILCTL_ONLY = ("postern.config.changed",)


class Nats(support.NatsWire):
    """One connection in verbose mode: each command gets its +OK or -ERR."""

    def __init__(self, url, login, verbose=True, timeout=5):
        self.sock, self.info = nats_open(url, timeout=timeout)
        self.buf = b""
        self.sock.sendall(nats_connect_line(login, verbose=verbose, name="test-nats-auth"))
        if verbose:
            self.connected = self.answer()
        else:  # no +OK comes: a PING's PONG says the CONNECT was taken
            self.sock.sendall(b"PING\r\n")
            self.connected = "closed"
            while self.connected == "closed":
                ln = self.line()
                if ln.startswith("-ERR"):
                    self.connected = ln
                    break
                if ln == "PONG":
                    self.connected = "+OK"

    def line(self):
        return self._line().decode("utf-8", "replace")

    def exact(self, n):
        return self._exact(n)

    def answer(self):
        """The server's next +OK or -ERR line (PINGs answered, INFO skipped); "closed" when
        the server hung up."""
        try:
            while True:
                ln = self.line()
                if ln == "PING":
                    self.sock.sendall(b"PONG\r\n")
                elif ln.startswith("+OK") or ln.startswith("-ERR"):
                    return ln
        except (EOFError, OSError):
            return "closed"

    def pub(self, subject, payload=b"", reply=None):
        head = f"PUB {subject} {reply} {len(payload)}" if reply else f"PUB {subject} {len(payload)}"
        self.sock.sendall(head.encode() + b"\r\n" + payload + b"\r\n")
        return self.answer()

    def sub(self, subject, sid=1):
        self.sock.sendall(f"SUB {subject} {sid}\r\n".encode())
        return self.answer()

    def close(self):
        self.sock.close()


@pytest.fixture
def bus(postern):
    """bus(user) -> a verbose connection logged in as that bus user (None: no credentials);
    closed after the test."""
    conns = []

    def connect(user, password=None):
        login = None if user is None else (user, password or postern.nats_login(user)[1])
        c = Nats(postern.env["NATS_URL"], login)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


@pytest.fixture
def watcher(postern):
    """The harness's own user (allowed everything) subscribed to every postern.> subject:
    watcher(wait) -> the subjects of what it received within wait seconds (the services'
    own traffic, such as the front ends' block list requests, among them)."""
    c = Nats(postern.env["NATS_URL"], support.NATS_LOGIN, verbose=False)
    assert c.connected == "+OK", c.connected
    c.sock.sendall(b"SUB postern.> 1\r\nPING\r\n")
    while c.line() != "PONG":
        pass
    c.sock.settimeout(0.2)

    def seen(wait=1.0):
        got = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                ln = c.line()
            except socket.timeout:
                continue
            if ln.startswith("MSG "):
                parts = ln.split()
                got.append(parts[1])
                c.exact(int(parts[-1]) + 2)
        return got

    yield seen
    c.close()


def test_the_server_asks_for_credentials(bus):
    c = bus(None)
    assert c.info.get("auth_required") is True


def test_a_client_without_credentials_is_refused_at_connect(bus):
    c = bus(None)
    assert c.connected.startswith("-ERR 'Authorization Violation'"), c.connected
    assert c.answer() == "closed"


def test_a_wrong_password_is_refused_at_connect(bus):
    c = bus("smtpd", password="not-the-password")
    assert c.connected.startswith("-ERR 'Authorization Violation'"), c.connected


@pytest.mark.parametrize("user", ["smtpd", "pop3d", "imapd", "notifier", "relayd"])
def test_no_service_but_mailctl_announces_a_configuration_change(bus, watcher, user):
    c = bus(user)
    assert c.connected == "+OK", c.connected
    for subject in MAILCTL_ONLY:
        r = c.pub(subject, b"x")
        assert r.startswith("-ERR 'Permissions Violation for Publish to"), (subject, r)
        assert subject in r
    assert not set(watcher()) & set(MAILCTL_ONLY)


@pytest.mark.parametrize("user", ["smtpd", "pop3d", "imapd", "notifier", "relayd", "mailctl", "webd"])
def test_nobody_but_the_limiter_publishes_blocks_and_alerts(bus, watcher, user):
    c = bus(user)
    assert c.connected == "+OK", c.connected
    for subject in LIMITER_ONLY:
        r = c.pub(subject, b"x")
        assert r.startswith("-ERR 'Permissions Violation for Publish to"), (subject, r)
    assert not set(watcher()) & set(LIMITER_ONLY)


def test_a_front_end_cannot_answer_as_the_limiter(bus):
    """A front end may neither serve the limiter's requests nor write into another
    service's inbox; it reads only its own."""
    c = bus("smtpd")
    for subject in ("postern.limiter.auth", "postern.limiter.send", "postern.limiter.blocks"):
        r = c.sub(subject)
        assert r.startswith("-ERR 'Permissions Violation for Subscription to"), (subject, r)
    r = c.pub("_INBOX.pop3d.abc.1", b"x")
    assert r.startswith("-ERR 'Permissions Violation for Publish to"), r
    for subject in ("_INBOX.>", "_INBOX.limiter.>", "_INBOX.pop3d.>", ">"):
        r = c.sub(subject, sid=2)
        assert r.startswith("-ERR 'Permissions Violation for Subscription to"), (subject, r)
    assert c.sub("_INBOX.smtpd.>", sid=3) == "+OK"


def test_pop3d_may_not_ask_what_only_smtpd_asks(bus):
    c = bus("pop3d")
    for subject in ("postern.limiter.send", "postern.limiter.rcpt", "postern.event.message"):
        r = c.pub(subject, b"x", reply="_INBOX.pop3d.t.1")
        assert r.startswith("-ERR 'Permissions Violation for Publish to"), (subject, r)


def test_mailctl_announces_a_configuration_change(bus, watcher):
    c = bus("mailctl")
    assert c.connected == "+OK", c.connected
    assert c.pub("postern.config.changed", b"") == "+OK"
    assert wait_until(lambda: "postern.config.changed" in watcher(0.3), timeout=5)


def test_a_front_end_publishes_its_events(bus, watcher):
    c = bus("smtpd")
    assert c.pub("postern.event.auth", b"") == "+OK"
    assert wait_until(lambda: "postern.event.auth" in watcher(0.3), timeout=5)


def test_mailctl_announces_with_its_own_credentials(postern, mailctl, watcher):
    """The real mailctl, with var/postern.env's credentials (the harness's client_env):
    no warning that the change could not be announced, and the announcement arrives."""
    r = mailctl("config", "set", "smtp.max_errors", "21")
    try:
        assert "could not be announced" not in r.stderr, r.stderr
        assert wait_until(lambda: "postern.config.changed" in watcher(0.3), timeout=5)
    finally:
        mailctl("config", "unset", "smtp.max_errors")


def test_mailctl_without_the_password_says_so(postern):
    """A wrong password: the change is saved, and mailctl says it was not announced."""
    env = postern.client_env()
    env.pop("NATS_PASSWORD_FILE", None)
    env.update({"NATS_USER": "mailctl", "NATS_PASSWORD": "wrong"})
    r = subprocess.run([str(postern.bin / "mailctl"), "config", "set", "smtp.max_errors", "22"],
                       capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    try:
        assert r.returncode == 0, r.stderr
        assert "could not be announced" in r.stderr, r.stderr
    finally:
        postern.mailctl("config", "unset", "smtp.max_errors")


def test_services_were_never_refused(postern):
    """Every service of the harness logs in as itself and has every right it uses: no
    "bus error" (a permissions violation, an authorization failure) in any log."""
    for name, svc in postern.services.items():
        text = svc.text()
        assert 'msg="bus error"' not in text, f"{name}:\n" + "\n".join(
            ln for ln in text.splitlines() if "bus error" in ln)
        assert 'msg="bus connected"' in text, f"{name} never connected:\n{svc.tail()}"
