"""Account harvesting for webd's logins (service web): failed web logins, published as
AuthEvents with service SERVICE_WEB the way webd does, count with the settings
harvest.web.* (`mailctl harvest set --service web`), and the block they lead to holds on
every service: smtpd refuses the address at connect and at AUTH. The events are published on
NATS directly, as the harness's user, so the test needs no webd.

Harvesting is off in the baseline; the tests turn it on through mailctl, and the harness's
reset does not know harvest.web.*: the fixture unsets it afterwards. The attacks come from
addresses of their own (127.0.3.5x)."""

import json
import os
import time

import pytest

from support import login_attempt, nats_publish, wait_until
from test_harvest import PW, UNTIL_RE, block_of, listed_block, refused_at_connect, served

pytestmark = pytest.mark.client_addresses

AUTH_SUBJECT = "postern.event.auth"


@pytest.fixture
def web_harvesting(postern, mailctl):
    """Harvesting on for every service (3 failures within 60 s, 30 s blocks) and, for web
    only, 2 failures and 20 s blocks. Yields the list of addresses to unblock afterwards."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: harvesting needs it")
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "60",
            "--block", "30")
    mailctl("harvest", "set", "--service", "web", "--max-failures", "2", "--block", "20")
    seen = postern.limiter_sync()
    assert (seen["harvest.enabled"], seen["harvest.max_failures"]) == ("on", "3"), seen
    blocked = []
    try:
        yield blocked
    finally:
        for address in blocked:
            mailctl("harvest", "unblock", address, check=False)
        mailctl("harvest", "unset", "--service", "web", "--all", check=False)


def web_login(postern, pb, user, client, ok=False):
    """One web login outcome, as webd publishes it."""
    ev = pb.AuthEvent(service=pb.SERVICE_WEB, user=user, client_addr=client,
                      mechanism="PASSWORD", tls=True,
                      result=pb.AUTH_OK if ok else pb.AUTH_BAD_CREDENTIALS,
                      time_ms=int(time.time() * 1000), instance="webd-e2e",
                      attempt_digest=b"" if ok else os.urandom(32))
    nats_publish(postern.env["NATS_URL"], AUTH_SUBJECT, ev.SerializeToString())


def test_web_failures_block_the_address_everywhere(postern, pb, mailctl, new_user,
                                                    web_harvesting):
    attacker, bystander = "127.0.3.51", "127.0.3.59"
    user = new_user(PW)
    fe = postern.frontend()
    web_harvesting.append(attacker)
    assert served(fe, attacker)

    # Two failures reach web's own limit (the system's is three).
    web_login(postern, pb, user, attacker)
    web_login(postern, pb, user, attacker)

    g = wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                   what=f"smtpd to refuse {attacker} after two failed web logins")
    assert g.lines[0].startswith("5.7.1") and attacker in g.text and "blocked" in g.text, g
    assert UNTIL_RE.search(g.text), g
    assert login_attempt(fe, user, PW, source=attacker, port="smtps")[0] == 554
    assert login_attempt(fe, user, PW, source=attacker, port="submission")[0] == 554
    # Only that address.
    assert served(fe, bystander)
    assert login_attempt(fe, user, PW, source=bystander)[0] == 235

    b = listed_block(mailctl, attacker)
    assert b["service"] == "web", b
    assert "2 within 60 s at web" in b["reason"], b
    out = mailctl("harvest", "blocks").stdout
    assert attacker in out and " web " in out, out

    mailctl("harvest", "unblock", attacker)
    web_harvesting.remove(attacker)
    wait_until(lambda: served(fe, attacker), timeout=30, what=f"{attacker} served again")


def test_web_and_smtp_failures_count_apart(postern, pb, mailctl, new_user, web_harvesting):
    """A successful web login does not count; failures count per service, and SMTP's come
    under SMTP's limit (three) whatever web's is."""
    attacker = "127.0.3.52"
    user = new_user(PW)
    fe = postern.frontend()
    web_harvesting.append(attacker)
    web_login(postern, pb, user, attacker, ok=True)
    web_login(postern, pb, user, attacker)
    for pw in ("guess-1", "guess-2"):
        assert login_attempt(fe, user, pw, source=attacker)[0] == 535
    # One web failure and two SMTP failures: under either limit.
    assert served(fe, attacker)
    assert block_of(mailctl, attacker) is None
    assert login_attempt(fe, user, "guess-3", source=attacker)[0] == 535
    g = wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                   what=f"{attacker} blocked by its third SMTP failure")
    assert "at smtp" in g.text, g
    assert listed_block(mailctl, attacker)["service"] == "smtp"


def test_web_settings_through_mailctl(postern, mailctl, web_harvesting):
    shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
    assert shown["web"]["max_failures"] == {"value": "2", "source": "web"}, shown
    assert shown["web"]["block"] == {"value": "20", "source": "web"}, shown
    assert shown["web"]["interval"] == {"value": "60", "source": "system"}, shown
    assert shown["smtp"]["max_failures"] == {"value": "3", "source": "system"}, shown
    assert "soft_limit" not in shown["web"], shown  # SMTP recipients only
    text = mailctl("harvest", "show").stdout
    assert text.splitlines()[0].split() == ["FIELD", "SMTP", "POP3", "IMAP", "WEB"], text

    mailctl("harvest", "set", "--service", "WEB", "--enabled", "off")
    shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
    assert shown["web"]["enabled"] == {"value": "off", "source": "web"}, shown
    assert shown["imap"]["enabled"] == {"value": "on", "source": "system"}, shown

    # The same keys through config set, checked against the same rules.
    mailctl("config", "set", "harvest.web.interval", "90")
    shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
    assert shown["web"]["interval"] == {"value": "90", "source": "web"}, shown
    r = mailctl("config", "set", "harvest.web.interval", "0", check=False)
    assert r.returncode == 1 and "harvest.web.interval" in r.stderr, r
    r = mailctl("config", "set", "harvest.web.soft_limit", "3", check=False)
    assert r.returncode == 1 and "unknown setting" in r.stderr, r
    r = mailctl("harvest", "set", "--service", "www", "--block", "5", check=False)
    assert r.returncode == 1 and "web" in r.stderr, r
    r = mailctl("harvest", "set", "--service", "web", "--hard-limit", "5", check=False)
    assert r.returncode == 1 and "no per-service value" in r.stderr, r

    # The limiter takes them: web's own fields, the system's for the rest.
    seen = postern.limiter_sync()
    assert seen["harvest.max_failures"] == "3", seen

    out = json.loads(mailctl("--json", "harvest", "unset", "--service", "web", "--all").stdout)
    assert out["ok"], out
    shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
    for field in ("enabled", "max_failures", "interval", "block"):
        assert shown["web"][field]["source"] in ("system", "default"), shown
