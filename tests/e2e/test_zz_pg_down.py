"""PostgreSQL stopped mid-run: smtpd answers with temporary errors, stays up, and recovers on
its own once the database is back. Last in the run (zz) so it cannot disturb the others."""

import pytest

from support import ALICE, dot_stuff, make_message, token, wait_until

SENDER = "sender@outside.example"


def attempt(postern, tok):
    """One transaction to alice. Returns the codes of MAIL, RCPT and the end of DATA (what
    was reached); the first reply that is not 2xx/3xx ends the attempt."""
    codes = []
    with postern.connect("mx", timeout=90) as c:
        c.ehlo()
        for line in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{ALICE}>", "DATA"):
            r = c.cmd(line)
            codes.append(r.code)
            if r.code >= 400:
                return codes
        c.send(dot_stuff(make_message(tok)) + b".\r\n")
        codes.append(c.reply().code)
    return codes


@pytest.fixture
def pg_restored(postern):
    """PostgreSQL is running again after the test, whatever happened."""
    try:
        yield
    finally:
        postern.pg_start()


@pytest.fixture
def pg_down(postern, pg_restored):
    postern.pg_stop()


def test_database_down_gives_4xx_and_recovers(postern, pg_down):
    tok = token()
    codes = attempt(postern, tok)
    assert codes[-1] != 250, f"accepted while PostgreSQL was down: {codes}"
    assert 400 <= codes[-1] < 500, f"expected a temporary failure, got {codes}"
    assert all(code < 500 for code in codes), codes
    assert postern.services["smtpd"].alive(), "smtpd exited"

    # smtpd still talks to clients while the database is away.
    with postern.connect("mx") as c:
        c.ehlo()
        c.expect("NOOP", 250)

    postern.pg_start()

    # The client retries, as a real MTA would after a 4xx, until it goes through.
    wait_until(lambda: attempt(postern, tok)[-1] == 250, timeout=90,
               what="the transaction to succeed after PostgreSQL is back")
    assert len(postern.find(ALICE, tok)) == 1
    assert postern.services["smtpd"].alive()


def test_database_lost_inside_a_transaction(postern, pg_restored):
    tok = token()
    with postern.connect("mx", timeout=90) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<{SENDER}>", 250)
        c.expect(f"RCPT TO:<{ALICE}>", 250)
        postern.pg_stop()
        r = c.cmd("DATA")
        if r.code == 354:
            c.send(dot_stuff(make_message(tok)) + b".\r\n")
            r = c.reply()
        assert 400 <= r.code < 500, f"expected a temporary failure, got {r!r}"
        # Nothing half-done: the session is still there for the client's next try.
        c.expect("RSET", 250)
    assert postern.services["smtpd"].alive(), "smtpd exited"

    postern.pg_start()
    wait_until(lambda: attempt(postern, tok)[-1] == 250, timeout=90,
               what="the transaction to succeed after PostgreSQL is back")
    assert len(postern.find(ALICE, tok)) == 1


def test_webd_after_a_restart_and_while_down(postern, pg_restored):
    """webd keeps idle connections to PostgreSQL; after a restart the first login must not
    fail on one the server closed (found by the suite: a 503 right after test_pop3_zz_pg_down),
    and while the database is down a login gets 503, never a crash."""
    if not postern.has_webd:
        pytest.skip(f"webd is not built in {postern.bin}")
    import json
    import ssl
    import urllib.error
    import urllib.request
    postern.mailctl("admin", "add", "pgdown-admin", "--password-stdin", input="pgdown-pw-1\n",
                    check=False)
    ctx = ssl.create_default_context(cafile=str(postern.cert))

    def login():
        req = urllib.request.Request(
            postern.web_url + "/api/v1/login", method="POST",
            data=json.dumps({"user": "pgdown-admin", "password": "pgdown-pw-1"}).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        assert login() == 200          # the pool holds an idle connection now
        postern.pg_stop()
        postern.pg_start()
        assert login() == 200          # at once: no 503 from the connection the restart closed
        postern.pg_stop()
        assert login() == 503
        postern.pg_start()
        assert login() == 200
        assert postern.services["webd"].alive()
    finally:
        postern.pg_start()
        postern.mailctl("admin", "del", "pgdown-admin", check=False)
