"""Account harvesting over IMAP: failed LOGIN/AUTHENTICATE count like POP3 and SMTP failures,
a blocked address gets `* BYE` with the reason and until when, on IMAP at connect and on SMTP
and POP3 too (the block is the limiter's, shared by every front end), and failed POP3 logins
block IMAP. Needs the limiter and pop3d."""

import pytest

from support import ALICE, plain_response, wait_until
from test_imap import Imap
from test_pop3 import Pop3
from test_pop3_harvest import harvesting, pop3_storm  # noqa: F401 (fixture)

pytestmark = pytest.mark.client_addresses


def imap_storm(postern, source, attempts=15):
    """Failed logins in one IMAPS session from source until imapd says it is blocked."""
    with Imap(postern.port("imaps"), postern.tls_context(), implicit_tls=True,
              source=source) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        for i in range(attempts):
            tag = c.tag()
            c.send(f"{tag} AUTHENTICATE PLAIN {plain_response(ALICE, f'guess-{i}')}\r\n")
            ln = c.line()
            if ln.startswith(f"{tag} NO [AUTHENTICATIONFAILED]".encode()):
                continue
            assert ln.startswith(b"* BYE [UNAVAILABLE]"), ln
            assert c.closed_by_server(), "the session goes on after the block"
            return ln.decode()
    raise AssertionError(f"{attempts} failed logins from {source} did not block it")


def test_imap_storm_blocks_imap_smtp_and_pop3(postern, harvesting):  # noqa: F811
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    unblock, lifted = harvesting
    source = "127.0.0.61"
    lifted.append(source)
    said = imap_storm(postern, source)
    assert f"Your address {source} is blocked until " in said, said

    def imap_greeting():
        with Imap(postern.port("imap"), source=source) as c:
            return c.greeting if c.greeting.startswith(b"* BYE") else None

    greeting = wait_until(imap_greeting, timeout=30, what=f"imapd to refuse {source} at connect")
    assert b"[UNAVAILABLE]" in greeting and b"blocked until" in greeting, greeting
    with postern.connect("mx", source=source) as c:
        assert c.greeting.code == 554, c.greeting
    with Pop3(postern.pop3, source=source) as p:
        assert p.greeting.startswith("-ERR [LOGIN-DELAY]"), p.greeting
    # Another address is served as before.
    with Imap(postern.port("imap"), source="127.0.0.1") as c:
        assert c.greeting.startswith(b"* OK")


def test_pop3_storm_blocks_imap(postern, harvesting):  # noqa: F811
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    unblock, lifted = harvesting
    source = "127.0.0.62"
    pop3_storm(postern, source)

    def imap_refuses():
        with Imap(postern.port("imap"), source=source) as c:
            return c.greeting.startswith(b"* BYE")

    wait_until(imap_refuses, timeout=30, what=f"imapd to refuse {source} at connect")
    unblock(source)
    with Imap(postern.port("imap"), source=source) as c:
        assert c.greeting.startswith(b"* OK")
