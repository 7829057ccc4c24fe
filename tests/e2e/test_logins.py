"""The login history (table logins), end to end: logins over SMTP AUTH, POP3 and IMAP, good
and bad, and a web login published the way webd does, appear in `mailctl user logins` (the
answering limiter writes them in batches, about once a second, so the tests poll for them;
nothing here measures time). `mailctl user del` takes a user's history along, and rows older
than logins.keep_days are deleted by the limiter that answers."""

import json
import re
import time

import pytest

from support import login_attempt, nats_publish, plain_response, wait_until
from test_imap import Imap
from test_pop3 import Pop3

PW = "Logins-pw-5!"
TIME_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture(autouse=True)
def needs_limiter(postern):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: it writes the login history")
    yield
    # The failed logins here count against the harness's client address (in a compose
    # stack the one address of every test): the next test starts from the baseline's
    # limiter state again, blocks lifted.
    postern.dirty = postern.limiter_dirty = True


def logins(mailctl, user, *extra):
    return json.loads(mailctl("--json", "user", "logins", user, *extra).stdout)


def wait_for_logins(mailctl, user, want, timeout=30):
    """The user's history once it holds every (service, result) of want."""
    def complete():
        rows = logins(mailctl, user, "--limit", "100")
        have = {(r["service"], r["result"]) for r in rows}
        return rows if set(want) <= have else None
    return wait_until(complete, timeout=timeout, what=f"the login history of {user} to hold {want}")


def pop3_login(postern, user, password, plain=True):
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True) as p:
        assert p.greeting.startswith("+OK"), p.greeting
        if plain:
            return p.auth_plain(user, password)
        p.cmd(f"USER {user}")
        return p.cmd(f"PASS {password}")


def imap_login(postern, user, password):
    with Imap(postern.port("imaps"), postern.tls_context(), implicit_tls=True) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        return c.cmd(f'LOGIN "{user}" "{password}"')[1]


def test_logins_over_every_protocol(postern, pb, mailctl, new_user):
    if not postern.has_pop3d or not postern.has_imapd:
        pytest.skip("pop3d and imapd are needed")
    user = new_user(PW)
    fe = postern.frontend()
    assert login_attempt(fe, user, PW)[0] == 235
    assert login_attempt(fe, user, "wrong-1")[0] == 535
    assert pop3_login(postern, user, PW).startswith("+OK")
    assert pop3_login(postern, user, "wrong-2", plain=False).startswith("-ERR")
    assert imap_login(postern, user, PW).startswith("OK")
    assert imap_login(postern, user, "wrong-3").startswith("NO")
    want = [(s, r) for s in ("smtp", "pop3", "imap") for r in ("ok", "bad-credentials")]
    rows = wait_for_logins(mailctl, user, want)
    assert len(rows) == 6, rows
    for r in rows:
        assert set(r) == {"time", "service", "client_addr", "mechanism", "tls", "result"}, r
        assert r["client_addr"] == postern.client_address and r["tls"] is True, r
        assert re.match(TIME_RE, r["time"]), r
    mechanisms = {(r["service"], r["result"]): r["mechanism"] for r in rows}
    assert mechanisms[("smtp", "ok")] == "PLAIN", mechanisms
    assert mechanisms[("pop3", "bad-credentials")] == "USER", mechanisms
    # Newest first: the last attempt was IMAP's failure.
    assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True), rows
    assert (rows[0]["service"], rows[0]["result"]) == ("imap", "bad-credentials"), rows

    # --limit, and the table for people.
    two = logins(mailctl, user, "--limit", "2")
    assert two == rows[:2], (two, rows)
    text = mailctl("user", "logins", user.upper()).stdout.splitlines()
    assert text[0].split() == ["TIME", "SERVICE", "CLIENT", "MECHANISM", "TLS", "RESULT"], text
    assert len(text) == 7 and "bad-credentials" in text[1] and "imap" in text[1], text


def test_web_login_and_unknown_users(postern, pb, mailctl, new_user):
    """A web login (webd's AuthEvent) is kept as service web; attempts against a name nobody
    has are kept under that name."""
    user = new_user(PW)
    for ok in (True, False):
        ev = pb.AuthEvent(service=pb.SERVICE_WEB, user=user.upper(), client_addr="2001:db8::7",
                          mechanism="PASSWORD", tls=True,
                          result=pb.AUTH_OK if ok else pb.AUTH_BAD_CREDENTIALS,
                          time_ms=int(time.time() * 1000), instance="webd-e2e")
        nats_publish(postern.env["NATS_URL"], "postern.event.auth", ev.SerializeToString())
    rows = wait_for_logins(mailctl, user, [("web", "ok"), ("web", "bad-credentials")])
    assert {r["client_addr"] for r in rows} == {"2001:db8::7"}, rows
    assert {r["mechanism"] for r in rows} == {"PASSWORD"}, rows

    nobody = f"nobody-{int(time.time() * 1000) % 10**8}@example.test"
    assert login_attempt(postern.frontend(), nobody, "guess")[0] == 535
    rows = wait_for_logins(mailctl, nobody, [("smtp", "bad-credentials")])
    assert len(rows) == 1, rows
    assert mailctl("user", "logins", "nobody-else@example.test").stdout.startswith(
        "no logins recorded for nobody-else@example.test")
    assert logins(mailctl, "nobody-else@example.test") == []


def test_bad_arguments(mailctl):
    for args in (["user", "logins"], ["user", "logins", "a@example.test", "b@example.test"],
                 ["user", "logins", "a@example.test", "--limit", "0"],
                 ["user", "logins", "a@example.test", "--limit", "1001"],
                 ["user", "logins", "a@example.test", "--limit", "x"],
                 ["user", "logins", "not an address"]):
        r = mailctl(*args, check=False)
        assert r.returncode == 1, (args, r)
    r = mailctl("config", "set", "logins.keep_days", "0", check=False)
    assert r.returncode == 1 and "logins.keep_days" in r.stderr, r


def test_user_del_takes_the_history_along(postern, mailctl, new_user):
    user = new_user(PW)
    assert login_attempt(postern.frontend(), user, PW)[0] == 235
    wait_for_logins(mailctl, user, [("smtp", "ok")])
    mailctl("user", "del", user)
    assert logins(mailctl, user) == []


def test_old_logins_are_deleted(postern, sql, mailctl, limiter_control):
    """Rows older than logins.keep_days go when the answering limiter prunes: at once when it
    starts to answer (then every hour)."""
    who = f"aged-{int(time.time() * 1000) % 10**8}@example.test"
    sql("INSERT INTO logins (address, at, service, client_addr, mechanism, tls, result)"
        " VALUES (%s, now() - interval '40 days', 'smtp', '192.0.2.1', 'PLAIN', true, 'ok'),"
        "        (%s, now() - interval '10 days', 'imap', NULL, 'LOGIN', false, 'ok')",
        (who, who))
    assert len(logins(mailctl, who)) == 2
    mailctl("config", "set", "logins.keep_days", "20")
    try:
        limiter_control.stop()
        limiter_control.start()

        def pruned():
            rows = logins(mailctl, who)
            return rows if len(rows) == 1 else None

        rows = wait_until(pruned, timeout=60, what="the 40-day-old login to be deleted")
        assert rows[0]["service"] == "imap" and rows[0]["client_addr"] is None, rows
    finally:
        mailctl("config", "unset", "logins.keep_days")
