"""IMAP across replicas: a second imapd process sharing PostgreSQL and NATS. An IDLE session on
one replica is told of mail delivered by smtpd and of flag changes and expunges made through
the other replica, pushed over the bus (no polling by the client)."""

import time

import pytest

from conftest import Service, config_loaded
from support import free_ports, listens, token
from test_imap import Imap, deliver, mailbox, simple_message  # noqa: F401 (fixture)

pytestmark = pytest.mark.own_processes


@pytest.fixture(scope="module")
def imapd2(postern):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    for attempt in range(3):
        port = free_ports(2)
        env = postern.imapd_env()
        env.update({"IMAP_PORT": str(port[0]), "IMAPS_PORT": str(port[1])})
        svc = Service("imapd2", postern.bin / "imapd", env, postern.dir / "imapd2.log", None)
        svc.ready = lambda svc=svc: config_loaded(svc) and listens(port[0])
        try:
            svc.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    postern.services["imapd2"] = svc
    yield port
    svc.stop()
    postern.services.pop("imapd2", None)


def login_select(c, mailbox):
    c.starttls()
    c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
    c.ok("SELECT INBOX")


def test_idle_on_one_replica_sees_the_other_and_smtpd(postern, imapd2, mailbox):
    deliver(postern, mailbox.address, simple_message(token()))
    a = Imap(postern.port("imap"), postern.tls_context())
    b = Imap(imapd2[0], postern.tls_context())
    try:
        login_select(a, mailbox)
        login_select(b, mailbox)
        a.send("i1 IDLE\r\n")
        assert a.line().startswith(b"+ ")
        a.sock.settimeout(10)
        # New mail through smtpd: pushed to the IDLE session.
        deliver(postern, mailbox.address, simple_message(token()))
        assert a.line() == b"* 2 EXISTS"
        assert a.line() == b"* 2 RECENT"  # a was the first to see both
        # A flag set through the other replica.
        b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert a.line().startswith(b"* 1 FETCH (FLAGS (\\Flagged")
        # An expunge through the other replica: IDLE may be told (RFC 2177).
        b.ok("NOOP")  # b learns of message 2
        b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        got = [a.line()]
        b.ok("EXPUNGE")
        while b"EXPUNGE" not in got[-1]:
            got.append(a.line())
        assert got[-1] == b"* 2 EXPUNGE", got
        a.send("DONE\r\n")
        assert a.until("i1")[1].startswith("OK")
    finally:
        a.close()
        b.close()
