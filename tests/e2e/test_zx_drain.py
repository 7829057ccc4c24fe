"""Draining on SIGTERM (DRAIN_TIMEOUT): smtpd stops accepting at once, lets a session that
is open finish its transaction, closes what is still open when the deadline comes, and
exits 0. Each test stops an smtpd process of its own, started for it against the same
PostgreSQL and NATS; nothing here asserts how long anything took."""

import itertools
import signal
import socket
import subprocess

import pytest

from support import ALICE, dot_stuff, make_message, token, wait_until

SENDER = "sender@outside.example"
_names = (f"smtpd-drain-{n}" for n in itertools.count(1))


@pytest.fixture
def draining_smtpd(postern):
    """draining_smtpd(drain_timeout) -> (Frontend, Service): an smtpd of the test's own with
    DRAIN_TIMEOUT set. Afterwards it is stopped if still running, its exit status and log
    checked (postern.stop_service), and it is taken out of the stack, so that neither the
    check for dead services after the test nor the session's teardown sees it."""
    started = []

    def start(drain_timeout):
        name = next(_names)
        fe = postern.add_smtpd(name, env={"DRAIN_TIMEOUT": str(drain_timeout)})
        started.append(name)
        return fe, postern.services[name]

    yield start
    for name in started:
        try:
            postern.stop_service(name)   # SIGTERM if still running; exit 0, no sanitizer report
        finally:
            postern.services.pop(name, None)
            postern.frontends.pop(name, None)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def open_sessions(svc):
    log = svc.since(svc.started_at)
    return log.count('msg="session opened"') - log.count('msg="session closed"')


def sigterm(svc):
    """Sends SIGTERM once the test's client is the only session (the harness's readiness
    probes have gone), and returns the log offset once smtpd says it is draining (its
    listeners are closed by then)."""
    wait_until(lambda: open_sessions(svc) == 1, what="one open session")
    offset = svc.size()
    svc.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: 'msg="draining"' in svc.since(offset),
               what="smtpd to log that it is draining")
    return offset


def exit_status(svc):
    return wait_until(lambda: svc.proc.poll() is not None and (svc.proc.returncode,),
                      timeout=60, what="smtpd to exit")[0]


def test_open_session_finishes_its_transaction(postern, draining_smtpd):
    # A deadline far away: the session ends on its own, and smtpd goes with it.
    fe, svc = draining_smtpd(60)
    tok = token()
    c = fe.connect("mx")
    c.ehlo()
    offset = sigterm(svc)
    assert "sessions=1 deadline_s=60" in svc.since(offset)

    # Nobody new gets in, on any port.
    for port in (fe.mx, fe.submission, fe.smtps):
        wait_until(lambda: refused(port), what=f"port {port} to refuse connections")

    # The open session goes on: a whole transaction, committed before the 250.
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.data(dot_stuff(make_message(tok, sender=SENDER)), 250, "2.0.0")
    [raw] = postern.find(ALICE, tok)
    assert tok.encode() in raw
    c.expect("QUIT", 221)

    assert exit_status(svc) == 0
    log = svc.since(offset)
    assert 'msg="drain finished" sessions=1 finished=1 forced=0' in log, log
    assert "drain deadline reached" not in log


@pytest.mark.parametrize("drain_timeout", [3, 0])
def test_idle_session_is_closed_at_the_deadline(postern, draining_smtpd, drain_timeout):
    fe, svc = draining_smtpd(drain_timeout)
    c = fe.connect("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)   # in the middle of a transaction, then silent
    offset = sigterm(svc)
    assert f"sessions=1 deadline_s={drain_timeout}" in svc.since(offset)

    assert c.closed_by_server(timeout=60)
    assert exit_status(svc) == 0
    log = svc.since(offset)
    assert 'msg="drain deadline reached, closing sessions"' in log, log
    assert 'msg="drain finished" sessions=1 finished=0 forced=1' in log, log


@pytest.mark.parametrize("value", ["ten", "-1", "1.5", "10s", " 10", "86401"])
def test_bad_drain_timeout_fails_the_start(postern, value):
    exe = postern.bin / "smtpd"
    if not exe.exists():
        pytest.skip(f"no {exe}")
    env = postern.smtpd_env()
    env["DRAIN_TIMEOUT"] = value
    r = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert 'level=error svc=smtpd msg="bad DRAIN_TIMEOUT"' in r.stderr, r.stderr
