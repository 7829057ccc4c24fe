"""Account harvesting prevention, end to end: failed logins from one client address, counted
by the limiter, block that address on every smtpd process (refused at connect, with a reply
that says until when); `mailctl harvest blocks` lists it and `mailctl harvest unblock` lifts it
at once everywhere. A wrong password repeated unchanged counts once; exempt networks are never
blocked; invalid local recipients (a dictionary attack) are slowed down past the soft limit
and blocked at the hard limit.

Harvesting is off in the baseline; each test turns it on through mailctl. The harness connects
from 127.0.0.1, so the attacks come from addresses of their own (127.0.3.x), each used by one
test only; blocks are lifted afterwards whatever happened."""

import json
import re
from datetime import datetime, timezone

import pytest

from support import ALICE, DOMAIN, greeting, login_attempt, plain_response, token, wait_until

pytestmark = pytest.mark.client_addresses

PW = "Harvest-pw-7!"
UNTIL_RE = re.compile(r"blocked until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


@pytest.fixture
def harvesting(postern, mailctl):
    """Harvesting on: 3 failures within 60 s block for 30 s. Yields the list of addresses to
    unblock after the test."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: harvesting needs it")
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "60",
            "--block", "30")
    seen = postern.limiter_sync()
    assert (seen["harvest.enabled"], seen["harvest.max_failures"]) == ("on", "3"), seen
    blocked = []
    try:
        yield blocked
    finally:
        for address in blocked:
            mailctl("harvest", "unblock", address, check=False)


def blocks(mailctl):
    return json.loads(mailctl("--json", "harvest", "blocks").stdout)["blocks"]


def block_of(mailctl, address):
    found = [b for b in blocks(mailctl) if b["network"].split("/")[0] == address]
    return found[0] if found else None


def listed_block(mailctl, address):
    """The block of address in mailctl harvest blocks, waiting for it: the limiter tells the
    front ends first and writes PostgreSQL next."""
    return wait_until(lambda: block_of(mailctl, address), timeout=30,
                      what=f"mailctl harvest blocks to list {address}")


def refused_at_connect(frontend, address, port="mx"):
    """The greeting when it is a refusal (else None, for wait_until)."""
    g = greeting(frontend, address, port)
    return g if g.code == 554 else None


def served(frontend, address):
    return greeting(frontend, address).code == 220


def fail_logins(frontend, user, address, passwords):
    """Failed logins from address, one session each; every one must get 535 (a 421 would mean
    the address was blocked already)."""
    for pw in passwords:
        reply = login_attempt(frontend, user, pw, source=address)
        assert reply[0] == 535 and reply[1].startswith("5.7.8"), (pw, reply)


# --- blocked after N failures, on every replica; unblock ---------------------------------

def test_failed_logins_block_on_both_smtpd_until_unblocked(postern, mailctl, new_user, smtpd2,
                                                          harvesting):
    attacker, bystander = "127.0.3.11", "127.0.3.19"
    user = new_user(PW)
    fe1, fe2 = postern.frontend(), smtpd2
    started = datetime.now(timezone.utc).replace(microsecond=0)
    harvesting.append(attacker)

    fail_logins(fe1, user, attacker, ["guess-1", "guess-2"])
    assert served(fe1, attacker) and served(fe2, attacker)
    fail_logins(fe2, user, attacker, ["guess-3"])  # the third counts, through the other smtpd

    # Refused at connect by both processes, on every port, saying until when.
    for fe in (fe1, fe2):
        g = wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                       what=f"{fe.name} to refuse {attacker} at connect")
        assert g.lines[0].startswith("5.7.1"), g
        assert attacker in g.text and "blocked" in g.text, g
    m = UNTIL_RE.search(g.text)
    assert m, g
    until = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert until > started, g
    assert login_attempt(fe2, user, PW, source=attacker, port="smtps")[0] == 554
    assert login_attempt(fe1, user, PW, source=attacker, port="submission")[0] == 554
    # Only that address.
    assert served(fe1, bystander) and served(fe2, bystander)
    assert login_attempt(fe2, user, PW, source=bystander)[0] == 235

    # mailctl lists it, with the reason and the same end.
    b = listed_block(mailctl, attacker)
    assert b["service"] == "smtp" and "failed logins" in b["reason"], b
    assert b["until"] == m.group(1) and b["since"] <= b["until"], (b, g)
    assert attacker in mailctl("harvest", "blocks").stdout

    # Lifted by the administrator: served again at once by both.
    out = mailctl("harvest", "unblock", attacker).stdout
    assert attacker in out
    harvesting.remove(attacker)
    for fe in (fe1, fe2):
        wait_until(lambda: served(fe, attacker), timeout=30,
                   what=f"{fe.name} to serve {attacker} again")
    assert block_of(mailctl, attacker) is None
    assert login_attempt(fe1, user, PW, source=attacker)[0] == 235
    # Unblocking what is not blocked says so.
    r = mailctl("harvest", "unblock", attacker, check=False)
    assert r.returncode != 0 and "not blocked" in r.stderr, r


def test_blocked_inside_a_session(postern, new_user, harvesting):
    """Failed logins in one session: the attempt after the limit is refused with 421 and
    the connection closed."""
    attacker = "127.0.3.16"
    user = new_user(PW)
    harvesting.append(attacker)
    fe = postern.frontend()
    with fe.connect("smtps", source=attacker) as c:
        c.ehlo()
        replies = []
        for i in range(10):
            r = c.cmd("AUTH PLAIN " + plain_response(user, f"guess-{i}"))
            replies.append(r)
            if r.code != 535:
                break
        assert [r.code for r in replies[:3]] == [535, 535, 535], replies
        assert replies[-1].code == 421 and "blocked" in replies[-1].text, replies
        assert c.closed_by_server(timeout=30)
    wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
               what=f"{attacker} refused at connect")


# --- what counts ----------------------------------------------------------------------------

def test_same_wrong_password_counts_once(postern, mailctl, new_user, harvesting):
    attacker = "127.0.3.12"
    user = new_user(PW)
    fe = postern.frontend()
    harvesting.append(attacker)

    # A phone with a stale password: the same wrong password again and again.
    fail_logins(fe, user, attacker, ["stale-password"] * 6)
    assert served(fe, attacker)
    assert block_of(mailctl, attacker) is None
    # It counted once: two different wrong passwords more are needed to reach three. (Each
    # attempt is checked with the limiter first, after the events before it: a block would
    # show as a refusal, not as 535.)
    fail_logins(fe, user, attacker, ["other-guess-1"])
    assert served(fe, attacker)
    fail_logins(fe, user, attacker, ["other-guess-2"])
    wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
               what=f"{attacker} to be blocked after three different wrong passwords")
    listed_block(mailctl, attacker)


def test_unknown_users_count_like_wrong_passwords(postern, mailctl, harvesting):
    attacker = "127.0.3.17"
    fe = postern.frontend()
    harvesting.append(attacker)
    for i in range(3):
        reply = login_attempt(fe, f"no-such-{i}-{token()[-6:]}@{DOMAIN}", "guess", source=attacker)
        assert reply[0] == 535, reply
    wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
               what=f"{attacker} to be blocked after three unknown users")


# --- exempt networks ------------------------------------------------------------------------

def test_exempt_network_is_never_blocked(postern, mailctl, new_user, harvesting):
    exempt = "127.0.0.5"
    user = new_user(PW)
    fe = postern.frontend()
    mailctl("harvest", "exempt", "add", f"{exempt}/32")
    try:
        listed = json.loads(mailctl("--json", "harvest", "exempt", "list").stdout)
        assert exempt in json.dumps(listed), listed
        postern.limiter_sync()
        fail_logins(fe, user, exempt, [f"guess-{i}" for i in range(8)])
        assert served(fe, exempt)
        assert block_of(mailctl, exempt) is None
        assert login_attempt(fe, user, PW, source=exempt)[0] == 235
    finally:
        mailctl("harvest", "exempt", "del", f"{exempt}/32", check=False)


def test_exemption_beats_a_block(postern, mailctl, new_user, smtpd2, harvesting):
    attacker = "127.0.3.13"
    user = new_user(PW)
    fe1, fe2 = postern.frontend(), smtpd2
    harvesting.append(attacker)
    fail_logins(fe1, user, attacker, ["guess-1", "guess-2", "guess-3"])
    for fe in (fe1, fe2):
        wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                   what=f"{fe.name} to refuse {attacker}")
    mailctl("harvest", "exempt", "add", "127.0.3.13/32")
    try:
        for fe in (fe1, fe2):
            wait_until(lambda: served(fe, attacker), timeout=30,
                       what=f"{fe.name} to serve the exempted {attacker}")
        postern.limiter_sync()
        fail_logins(fe1, user, attacker, [f"again-{i}" for i in range(5)])
        assert served(fe1, attacker) and served(fe2, attacker)
        b = block_of(mailctl, attacker)
        assert b is None or b["exempt"], b
    finally:
        mailctl("harvest", "exempt", "del", "127.0.3.13/32", check=False)


# --- dictionary attacks ---------------------------------------------------------------------

def test_dictionary_attack_slowed_then_blocked(postern, mailctl, smtpd2, harvesting):
    mailctl("harvest", "set", "--soft-limit", "2", "--hard-limit", "5")
    seen = postern.limiter_sync()
    assert (seen["harvest.soft_limit"], seen["harvest.hard_limit"]) == ("2", "5"), seen
    attacker = "127.0.3.14"
    harvesting.append(attacker)
    fe1, fe2 = postern.frontend(), smtpd2
    probe = token()[-8:]
    with fe1.connect("mx", source=attacker, timeout=60) as c:
        c.ehlo()
        c.expect("MAIL FROM:<list@spammer.example>", 250)
        # Below and past the soft limit the answers still come (later and later).
        for i in range(4):
            c.expect(f"RCPT TO:<guess{i}-{probe}@{DOMAIN}>", 550, "5.1.1")
        # The fifth unknown recipient reaches the hard limit: blocked, and cut off.
        r = c.cmd(f"RCPT TO:<guess4-{probe}@{DOMAIN}>")
        assert r.code == 421 and r.enh == "4.7.1", r
        assert "blocked" in r.text and attacker in r.text, r
        assert c.closed_by_server(timeout=30)
    for fe in (fe1, fe2):
        g = wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                       what=f"{fe.name} to refuse {attacker}")
        assert "dictionary attack" in g.text, g
    b = listed_block(mailctl, attacker)
    assert "dictionary attack" in b["reason"], b
    # Known recipients from elsewhere are unaffected.
    with fe2.connect("mx", source="127.0.3.18") as c:
        c.ehlo()
        c.expect("MAIL FROM:<someone@other.example>", 250)
        c.expect(f"RCPT TO:<{ALICE}>", 250)


# --- blocks end on their own; repeat offenders; unblocking a network ---------------------

def test_block_expires_and_repeat_offender_gets_longer(postern, mailctl, new_user, smtpd2,
                                                       harvesting):
    mailctl("harvest", "set", "--block", "3")
    postern.limiter_sync()
    attacker = "127.0.3.15"
    user = new_user(PW)
    fe1, fe2 = postern.frontend(), smtpd2
    harvesting.append(attacker)

    def span(b):
        t = [datetime.strptime(b[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("since", "until")]
        return int((t[1] - t[0]).total_seconds())

    fail_logins(fe1, user, attacker, ["guess-1", "guess-2", "guess-3"])
    wait_until(lambda: refused_at_connect(fe1, attacker), timeout=30,
               what=f"{attacker} to be blocked")
    first = listed_block(mailctl, attacker)
    assert first["offense"] == 1 and span(first) == 3, first
    # Nobody lifts it: it ends by itself, everywhere, and leaves the list.
    for fe in (fe1, fe2):
        wait_until(lambda: served(fe, attacker), timeout=60,
                   what=f"{fe.name} to serve {attacker} once the block ended")
    wait_until(lambda: block_of(mailctl, attacker) is None, timeout=60,
               what="the ended block to leave mailctl harvest blocks")
    # The same address again: a second offense, twice as long.
    fail_logins(fe2, user, attacker, ["guess-4", "guess-5", "guess-6"])
    wait_until(lambda: refused_at_connect(fe2, attacker), timeout=30,
               what=f"{attacker} to be blocked again")
    second = listed_block(mailctl, attacker)
    assert second["offense"] == 2 and span(second) == 6, second


def test_unblock_a_network(postern, mailctl, new_user, harvesting):
    attackers = ["127.0.3.41", "127.0.3.42"]
    user = new_user(PW)
    fe = postern.frontend()
    harvesting.extend(attackers)
    for address in attackers:
        fail_logins(fe, user, address, ["guess-1", "guess-2", "guess-3"])
    for address in attackers:
        wait_until(lambda: refused_at_connect(fe, address), timeout=30,
                   what=f"{address} to be blocked")
    out = json.loads(mailctl("--json", "harvest", "unblock", "127.0.3.40/29").stdout)
    assert sorted(b["network"].split("/")[0] for b in out["lifted"]) == attackers, out
    for address in attackers:
        wait_until(lambda: served(fe, address), timeout=30, what=f"{address} served again")


def test_per_service_setting(postern, mailctl, new_user, harvesting):
    """harvest set --service smtp overrides the system value for SMTP only."""
    mailctl("harvest", "set", "--max-failures", "5")
    mailctl("harvest", "set", "--service", "smtp", "--max-failures", "2")
    shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
    assert shown["smtp"]["max_failures"] == {"value": "2", "source": "smtp"}, shown
    assert shown["pop3"]["max_failures"] == {"value": "5", "source": "system"}, shown
    postern.limiter_sync()
    attacker = "127.0.3.43"
    user = new_user(PW)
    fe = postern.frontend()
    harvesting.append(attacker)
    fail_logins(fe, user, attacker, ["guess-1", "guess-2"])
    wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
               what=f"{attacker} to be blocked after two failures (the smtp value)")
    assert "2 within 60 s at smtp" in listed_block(mailctl, attacker)["reason"]
