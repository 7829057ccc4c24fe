"""Account harvesting across protocols: a storm of failed POP3 logins from one address
blocks it on POP3 and on SMTP, and failed SMTP logins block it on POP3 (the block is the
limiter's, shared by every front end). Needs the limiter; harvesting is switched on for the
test through mailctl and the blocks are lifted afterwards."""

import pytest

from support import ALICE, ALICE_PW, plain_response, wait_until
from test_pop3 import Pop3

pytestmark = pytest.mark.client_addresses

BLOCK_CODE = "-ERR [LOGIN-DELAY]"


@pytest.fixture
def harvesting(postern, mailctl):
    """Harvesting on, three failures within a minute block for two minutes. Yields unblock(addr)
    which lifts a block and waits until pop3d and smtpd serve that address again."""
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    if "limiter" not in postern.services:
        pytest.skip(f"the limiter is not built in {postern.bin}: harvesting needs it")
    r = mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "60",
                "--block", "120", check=False)
    postern.dirty = True  # the baseline turns harvesting off again for the next test
    if r.returncode != 0:
        pytest.skip(f"mailctl harvest set is not available: {r.stderr.strip()}")
    lifted = []

    def unblock(address):
        # Front ends hear of a block as soon as the limiter makes it; PostgreSQL, which
        # mailctl reads, has it a moment later.
        wait_until(lambda: mailctl("harvest", "unblock", address, check=False).returncode == 0,
                   timeout=30, what=f"the block on {address} to be recorded and lifted")

        def served():
            with Pop3(postern.pop3, source=address) as p:
                ok = p.greeting.startswith("+OK")
            with postern.connect("mx", source=address) as c:
                return ok and c.greeting.code == 220

        wait_until(served, timeout=30, what=f"{address} to be served again")

    yield unblock, lifted
    for address in lifted:
        unblock(address)


def pop3_storm(postern, source, attempts=15):
    """Failed logins in one session from source (a new password each time: a repeated wrong
    password counts once) until pop3d says the address is blocked; returns that reply."""
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, source=source) as p:
        assert p.greeting.startswith("+OK"), p.greeting
        for i in range(attempts):
            r = p.auth_plain(ALICE, f"guess-{i}")
            if not r.startswith("-ERR [AUTH]"):
                assert p.closed_by_server(), "the session goes on after the block"
                return r
    raise AssertionError(f"{attempts} failed logins from {source} did not block it")


def test_pop3_storm_blocks_pop3_and_smtp(postern, harvesting):
    unblock, lifted = harvesting
    source = "127.0.0.9"
    lifted.append(source)
    said = pop3_storm(postern, source)
    assert said.startswith(BLOCK_CODE), said
    # Refused at connect on both POP3 ports, and on SMTP, with the time the block ends, once
    # the limiter's broadcast has reached each service's copy of the blocks (moments).
    def pop3_greeting():
        with Pop3(postern.pop3, source=source) as p:
            if not p.greeting.startswith(BLOCK_CODE):
                return None
            assert p.closed_by_server()
            return p.greeting

    greeting = wait_until(pop3_greeting, timeout=30, what=f"pop3d to refuse {source} at connect")
    assert "blocked until" in greeting, greeting
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, source=source) as p:
        assert p.greeting.startswith(BLOCK_CODE), p.greeting

    def smtp_greeting():
        with postern.connect("mx", source=source) as c:
            return c.greeting if c.greeting.code == 554 else None

    greeting = wait_until(smtp_greeting, timeout=30, what=f"smtpd to refuse {source} at connect")
    assert "blocked" in greeting.text, greeting
    # Another address is not affected.
    with Pop3(postern.pop3, source="127.0.0.1") as p:
        assert p.greeting.startswith("+OK"), p.greeting
    lifted.remove(source)
    unblock(source)
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, source=source) as p:
        p.login(ALICE, ALICE_PW)
        p.ok("QUIT")


def test_smtp_storm_blocks_pop3(postern, harvesting):
    unblock, lifted = harvesting
    source = "127.0.0.10"
    lifted.append(source)
    blocked = False
    for i in range(30):
        with postern.connect("submission", source=source) as c:
            if c.greeting.code != 220:
                blocked = True
                break
            c.ehlo()
            c.starttls()
            c.ehlo()
            r = c.cmd(f"AUTH PLAIN {plain_response(ALICE, f'smtp-guess-{i}')}")
            if r.code != 535:
                blocked = True
                break
    assert blocked, "failed SMTP logins did not block the address"

    def pop3_refuses():
        with Pop3(postern.pop3, source=source) as p:
            return p.greeting.startswith(BLOCK_CODE)

    wait_until(pop3_refuses, timeout=30, what=f"pop3d to refuse {source} at connect")
