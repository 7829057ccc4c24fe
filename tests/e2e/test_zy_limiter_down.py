"""The limiter killed mid-run: authenticated mail gets a temporary failure (451 4.7.1,
nothing stored, nothing lost: the client retries), logins go on with the front ends' local copy
of the blocks, and nothing crashes. Once the limiter is back, mail flows again on its own, and
the accounts it had disabled and the addresses it had blocked are still disabled and blocked,
also while it is still loading them from PostgreSQL. Late in the run (zy): it stops a service
the other tests need."""

import contextlib
import time

import psycopg2
import pytest

from support import (BOB, greeting, login_attempt, make_message, nats_request,
                     submit, token, wait_until)

PW = "Down-pw-3!"
# How long the slow-PostgreSQL tests keep asking a limiter that is still loading (seconds).
WINDOW = 5


@pytest.fixture
def guarded(postern, mailctl, new_user):
    """Harvesting and HAMR state to keep across a limiter crash: an address blocked for
    failed logins, an account disabled by HAMR. Yields (blocked address, disabled user);
    the address is unblocked afterwards."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")
    blocked, disabled = state = ("127.0.3.31", new_user(PW))
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "60",
            "--block", "600")
    mailctl("hamr", "set", "--user", disabled, "--enabled", "on", "--max", "1", "--interval",
            "600", "--action", "disable", "--alert", "off")
    postern.limiter_sync()
    fe = postern.frontend()
    try:
        for i in range(3):
            assert login_attempt(fe, disabled, f"guess-{i}", source=blocked)[0] == 535
        wait_until(lambda: greeting(fe, blocked).code == 554, timeout=30,
                   what=f"{blocked} to be blocked")
        assert submit(fe, disabled, PW, disabled, token())[0] == 250
        assert submit(fe, disabled, PW, disabled, token())[0] == 550
        wait_until(lambda: postern.sql("SELECT count(*) FROM blocks WHERE network = %s::cidr",
                                       (blocked,))[0][0] == 1
                   and postern.sql("SELECT count(*) FROM send_disabled d JOIN users u"
                                   " ON u.id = d.user_id WHERE u.address = %s",
                                   (disabled,))[0][0] == 1,
                   timeout=30, what="the block and the disabled account in PostgreSQL")
        yield state
    finally:
        mailctl("harvest", "unblock", blocked, check=False)


def still_guarded(postern, frontends, blocked, disabled):
    for fe in frontends:
        g = greeting(fe, blocked)
        assert g.code == 554 and "blocked" in g.text, (fe, g)
        reply = submit(fe, disabled, PW, disabled, token())
        assert reply[0] == 550 and reply[1].startswith("5.7.1"), (fe, reply)


def test_limiter_killed_then_restarted(postern, mailctl, new_user, smtpd2, limiter_control,
                                       guarded):
    blocked, disabled = guarded
    sender = new_user(PW)
    fe1, fe2 = postern.frontend(), smtpd2
    assert submit(fe1, sender, PW, BOB, token())[0] == 250

    limiter_control.kill()

    # Authenticated mail: a temporary failure, and nothing stored.
    toks = {fe.name: token() for fe in (fe1, fe2)}
    for fe, port in ((fe1, "submission"), (fe2, "smtps")):
        code, text = submit(fe, sender, PW, BOB, toks[fe.name], port=port)
        assert code == 451 and text.startswith("4.7.1"), (fe, code, text)
        assert postern.find(BOB, toks[fe.name]) == []
    # Logins go on (with the local copy of the blocks): right and wrong passwords as ever.
    for fe in (fe1, fe2):
        assert login_attempt(fe, sender, PW, source="127.0.3.32")[0] == 235
        assert login_attempt(fe, sender, "not-the-password", source="127.0.3.32")[0] == 535
    # The blocked address is still refused at connect, by both.
    for fe in (fe1, fe2):
        assert greeting(fe, blocked).code == 554
    # Unauthenticated mail to local users does not ask the limiter.
    inbound = token()
    with fe2.connect("mx") as c:
        c.ehlo()
        c.send_mail("someone@other.example", [BOB], make_message(inbound))
    assert len(postern.find(BOB, inbound)) == 1

    limiter_control.start()

    # The client's retries go through on their own once the limiter answers again; once.
    for fe in (fe1, fe2):
        wait_until(lambda: submit(fe, sender, PW, BOB, toks[fe.name])[0] == 250, timeout=60,
                   interval=0.5, what=f"{fe.name} to accept mail again")
        assert len(postern.find(BOB, toks[fe.name])) == 1
    # What the limiter decided before it died still holds (once it has read it back: what
    # it says before that is the subject of the tests below).
    postern.limiter_loaded()
    still_guarded(postern, (fe1, fe2), blocked, disabled)
    listed = mailctl("harvest", "blocks").stdout
    assert blocked in listed, listed
    assert disabled in mailctl("hamr", "status").stdout


def test_limiter_timeout_policies(postern, mailctl, new_user, limiter_control):
    """Both behaviours without a limiter are settings: limiter.send_on_timeout allow lets
    authenticated mail through; limiter.login_on_timeout deny refuses logins (454 4.7.0)."""
    sender = new_user(PW)
    fe = postern.frontend()
    limiter_control.kill()
    mailctl("config", "set", "limiter.send_on_timeout", "allow")
    tok = token()
    wait_until(lambda: submit(fe, sender, PW, BOB, tok)[0] == 250, timeout=30,
               what="a message accepted without the limiter (send_on_timeout allow)")
    assert len(postern.find(BOB, tok)) == 1
    mailctl("config", "set", "limiter.login_on_timeout", "deny")

    def refused():
        reply = login_attempt(fe, sender, PW)
        return reply if reply[0] != 235 else None

    reply = wait_until(refused, timeout=30,
                       what="logins refused without the limiter (login_on_timeout deny)")
    assert reply[0] == 454 and reply[1].startswith("4.7.0"), reply
    limiter_control.start()
    wait_until(lambda: login_attempt(fe, sender, PW)[0] == 235, timeout=30,
               what="logins once the limiter is back")


@contextlib.contextmanager
def table_locked(postern, table):
    """Holds an exclusive lock on table: whoever reads it waits (PostgreSQL slow to answer
    that one query)."""
    conn = psycopg2.connect(postern.env["DATABASE_URL"], connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.client_addresses
def test_disabled_account_refused_while_limiter_loads(postern, limiter_control, guarded):
    """A restarted limiter that has not read the disabled accounts yet must not let one send
    (it may say "later": 451). PostgreSQL is slow to give it send_disabled; meanwhile the
    account tries, as a client retrying does, for a few seconds."""
    _, disabled = guarded
    fe = postern.frontend()
    limiter_control.stop()
    tok = token()
    replies = []
    with table_locked(postern, "send_disabled"):
        limiter_control.start(wait=False)  # its reload waits on send_disabled
        deadline = time.monotonic() + WINDOW
        while time.monotonic() < deadline and (not replies or replies[-1][0] == 451):
            replies.append(submit(fe, disabled, PW, disabled, tok))
    assert postern.find(disabled, tok) == [], \
        f"an account disabled by HAMR sent while the limiter was loading: {replies}"
    assert all(code in (451, 550) for code, _ in replies), replies
    wait_until(lambda: submit(fe, disabled, PW, disabled, tok)[0] == 550, timeout=30,
               what=f"{disabled} to be refused once the limiter has loaded")
    assert postern.find(disabled, tok) == []


@pytest.mark.client_addresses
def test_blocks_kept_while_limiter_loads(postern, pb, limiter_control, guarded):
    """A restarted limiter that has not read the blocks yet must not answer from an empty
    memory: front ends replace their copy of the blocks with the list it gives (at start and
    every 30 s), and ask it whether an address may try a password. Asked the way a front end
    asks, it must name the block or stay silent (the front end then keeps its copy).
    PostgreSQL is slow to give it the blocks; meanwhile we ask, for a few seconds."""
    blocked, _ = guarded
    url = postern.env["NATS_URL"]
    limiter_control.stop()
    listed = check = None
    with table_locked(postern, "blocks"):
        limiter_control.start(wait=False)  # its reload waits on blocks
        deadline = time.monotonic() + WINDOW
        while time.monotonic() < deadline and (listed is None or check is None):
            if listed is None:
                raw = nats_request(url, "postern.limiter.blocks",
                                   pb.BlockListRequest(paged=True).SerializeToString(),
                                   timeout=1)
                if raw is not None:
                    listed = [b.network for b in pb.BlockList.FromString(raw).blocks]
            if check is None:
                raw = nats_request(url, "postern.limiter.auth", pb.AuthCheck(
                    service=pb.SERVICE_SMTP, client_addr=blocked).SerializeToString(), timeout=1)
                if raw is not None:
                    check = pb.CheckReply.FromString(raw)
    problems = []
    if listed is not None and not any(n.split("/")[0] == blocked for n in listed):
        problems.append(f"the limiter answered the block list with {listed} while {blocked} "
                        f"is blocked")
    if check is not None and check.verdict != pb.VERDICT_BLOCKED:
        problems.append(f"the limiter lets the blocked {blocked} try a password: "
                        f"{pb.Verdict.Name(check.verdict)} {check.reason!r}")
    assert not problems, "; ".join(problems)

    def knows():
        raw = nats_request(url, "postern.limiter.auth", pb.AuthCheck(
            service=pb.SERVICE_SMTP, client_addr=blocked).SerializeToString(), timeout=5)
        return raw and pb.CheckReply.FromString(raw).verdict == pb.VERDICT_BLOCKED

    wait_until(knows, timeout=30, what=f"the limiter to know {blocked} is blocked once loaded")


@contextlib.contextmanager
def limiter_refreshing_every(limiter_control, seconds):
    """The limiter restarted with CONFIG_REFRESH=seconds, and with its own setting again
    afterwards."""
    svc = limiter_control.service
    saved = svc.env.get("CONFIG_REFRESH")
    limiter_control.stop()
    svc.env["CONFIG_REFRESH"] = str(seconds)
    try:
        limiter_control.start()
        yield
    finally:
        limiter_control.stop()
        if saved is None:
            svc.env.pop("CONFIG_REFRESH", None)
        else:
            svc.env["CONFIG_REFRESH"] = saved
        limiter_control.start()


@pytest.mark.own_processes  # the limiter restarted with a CONFIG_REFRESH of its own
def test_periodic_reload_does_not_hold_checks_back(postern, pb, limiter_control, new_user):
    """The periodic reload (CONFIG_REFRESH, a safety net for a change whose announcement was
    missed) asks for a user's settings again, but the user's next send check does not wait
    for them: with PostgreSQL unable to answer that lookup (users locked), the check is
    answered from the settings the limiter has. (An announced change makes checks wait for
    the new settings: test_hamr.py.)"""
    url = postern.env["NATS_URL"]
    user = new_user(PW)

    def check(timeout):
        raw = nats_request(url, "postern.limiter.send", pb.SendCheck(
            service=pb.SERVICE_SMTP, user=user, client_addr="127.0.3.40", rcpt_count=1,
            queue_id=token()).SerializeToString(), timeout=timeout)
        return raw and pb.CheckReply.FromString(raw)

    with limiter_refreshing_every(limiter_control, 1):
        first = check(5)
        assert first and first.verdict == pb.VERDICT_ALLOW, first  # the settings looked up
        with table_locked(postern, "users"):
            time.sleep(2.5)  # two periodic reloads or more
            again = check(3)
            assert again, "the send check waited for the user's settings after a periodic reload"
            assert again.verdict == pb.VERDICT_ALLOW, again


@pytest.mark.own_processes  # the limiter restarted with a CONFIG_REFRESH of its own
def test_periodic_reload_picks_up_an_unannounced_change(postern, pb, limiter_control, new_user):
    """A user's HAMR setting written straight into the table, with no announcement, reaches
    the limiter through the periodic reload: the user's checks after a round look the
    settings up again in the background (paced, a few a second at least), and the checks
    after that go by them."""
    url = postern.env["NATS_URL"]
    user = new_user(PW)

    def check():
        raw = nats_request(url, "postern.limiter.send", pb.SendCheck(
            service=pb.SERVICE_SMTP, user=user, client_addr="127.0.3.41", rcpt_count=1,
            queue_id=token()).SerializeToString(), timeout=3)
        return raw and pb.CheckReply.FromString(raw)

    conn = psycopg2.connect(postern.env["DATABASE_URL"], connect_timeout=10)
    conn.autocommit = True
    try:
        with limiter_refreshing_every(limiter_control, 1):
            first = check()
            assert first and first.verdict == pb.VERDICT_ALLOW, first
            with conn.cursor() as cur:  # one message an hour, the one above already counted
                cur.execute("INSERT INTO settings (scope, scope_id, key, value)"
                            " SELECT 'user', id, k, v FROM users,"
                            " (VALUES ('hamr.enabled', 'on'), ('hamr.max_messages', '1'),"
                            "         ('hamr.interval', '3600'), ('hamr.action', 'throttle'))"
                            " AS s(k, v) WHERE address = %s", (user,))

            def held_back():
                r = check()
                return r and r.verdict != pb.VERDICT_ALLOW and r

            held = wait_until(held_back, timeout=20, interval=0.3,
                              what="the periodic reload to bring the user's new HAMR limit")
            assert held.verdict == pb.VERDICT_THROTTLE, held
    finally:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM settings WHERE scope = 'user' AND scope_id ="
                        " (SELECT id FROM users WHERE address = %s)", (user,))
        conn.close()
