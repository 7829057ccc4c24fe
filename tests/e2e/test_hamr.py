"""The Hacked Account Mail Regulator, end to end: an authenticated user's messages are counted
by the limiter (one count for every smtpd process), and past the limit set at the system,
domain or user level the next message is throttled (451 4.7.1, with the seconds to wait) or
the account is disabled (550 5.7.1) until an administrator enables it again. Settings are
inherited field by field, user over domain over system; `hamr reset` clears the user level.
Mail from unauthenticated (MX) sessions never counts.

HAMR is off in the baseline; each test turns it on through mailctl, for a fresh user."""

import json
import re

import pytest

from support import DOMAIN, OUTSIDE, Submitter, make_message, submit, token, wait_until

PW = "Hamr-pw-9!"
OTHER_DOMAIN = "hamr-other.test"


@pytest.fixture(autouse=True)
def needs_limiter(postern):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: HAMR needs it")


def hamr_set(postern, level, *fields):
    """mailctl hamr set at one level ("system", ("domain", D) or ("user", U)), then waits
    until the limiter has reloaded."""
    where = ["--system"] if level == "system" else [f"--{level[0]}", level[1]]
    postern.mailctl("hamr", "set", *where, *fields)
    postern.limiter_sync()


def show(postern, user):
    """hamr show --user U --json: {key: (value, source)} and the whole document."""
    doc = json.loads(postern.mailctl("--json", "hamr", "show", "--user", user).stdout)
    return {item["key"]: (item["value"], item["source"]) for item in doc["settings"]}, doc


def wait_seconds(text):
    m = re.search(r"try again in (\d+) seconds", text)
    assert m, f"no wait in seconds in {text!r}"
    return int(m.group(1))


def assert_throttled(reply, interval, level_text=None):
    code, text = reply
    assert code == 451 and text.startswith("4.7.1"), reply
    assert 1 <= wait_seconds(text) <= interval, reply
    if level_text:
        assert level_text in text, reply


def assert_disabled(reply, user):
    code, text = reply
    assert code == 550 and text.startswith("5.7.1"), reply
    assert user in text and "disabled" in text.lower(), reply


def send_n(frontend, user, n, to=None):
    """n messages from user in one session, every one accepted; returns their tokens."""
    toks = [token() for _ in range(n)]
    with Submitter(frontend, user, PW) as sub:
        for tok in toks:
            reply = sub.send(to or user, tok)
            assert reply[0] == 250, (tok, reply)
    return toks


# --- throttle at each level ---------------------------------------------------------------

@pytest.mark.parametrize("level", ["system", "domain", "user"])
def test_throttle_at_each_level(postern, new_user, level):
    user = new_user(PW)
    where = {"system": "system", "domain": ("domain", DOMAIN), "user": ("user", user)}[level]
    hamr_set(postern, where, "--enabled", "on", "--max", "2", "--interval", "5",
             "--action", "throttle", "--alert", "off")
    fe = postern.frontend()

    first = send_n(fe, user, 2)
    blocked_tok = token()
    with Submitter(fe, user, PW) as sub:
        reply = sub.send(user, blocked_tok)
        assert_throttled(reply, 5, f"2 messages ({level} level) per 5 s ({level} level)")
        # The session goes on; the same answer while the window is full.
        assert sub.send(user, blocked_tok)[0] == 451
    for tok in first:
        assert len(postern.find(user, tok)) == 1
    assert postern.find(user, blocked_tok) == [], "a throttled message was stored"

    # The client retries, as an MTA would after a 4xx; the window moves and it goes through.
    wait_until(lambda: submit(fe, user, PW, user, blocked_tok)[0] == 250, timeout=60,
               interval=0.5, what="the throttled message to go through")
    assert len(postern.find(user, blocked_tok)) == 1
    # A throttled user is not disabled: nothing in send_disabled, show says sending allowed.
    assert show(postern, user)[1]["send_disabled"] is None


def test_precedence_user_over_domain_over_system(postern, mailctl, new_user):
    mailctl("domain", "add", OTHER_DOMAIN)
    try:
        outsider = f"hamr-sys@{OTHER_DOMAIN}"
        mailctl("user", "add", outsider, "--password-stdin", input=PW + "\n")
        by_user, by_domain, mixed = new_user(PW), new_user(PW), new_user(PW)
        hamr_set(postern, "system", "--enabled", "on", "--max", "4", "--interval", "60",
                 "--action", "throttle", "--alert", "off")
        hamr_set(postern, ("domain", DOMAIN), "--max", "3")
        hamr_set(postern, ("user", by_user), "--max", "2")
        # Only the action at the user level: the maximum still comes from the domain, the
        # rest from the system.
        hamr_set(postern, ("user", mixed), "--action", "disable")

        eff, _ = show(postern, by_user)
        assert eff["hamr.max_messages"] == ("2", "user")
        assert eff["hamr.interval"] == ("60", "system")
        assert eff["hamr.enabled"] == ("on", "system")
        eff, _ = show(postern, by_domain)
        assert eff["hamr.max_messages"] == ("3", "domain")
        assert eff["hamr.action"] == ("throttle", "system")
        eff, _ = show(postern, mixed)
        assert eff["hamr.max_messages"] == ("3", "domain")
        assert eff["hamr.action"] == ("disable", "user")
        assert eff["hamr.interval"] == ("60", "system")
        eff, _ = show(postern, outsider)
        assert eff["hamr.max_messages"] == ("4", "system")
        assert eff["hamr.max_recipients"] == ("0", "default")

        fe = postern.frontend()
        for user, n, level in ((by_user, 2, "user"), (by_domain, 3, "domain"),
                               (outsider, 4, "system")):
            send_n(fe, user, n, to=by_domain)
            assert_throttled(submit(fe, user, PW, by_domain, token()), 60,
                             f"{n} messages ({level} level) per 60 s (system level)")
        send_n(fe, mixed, 3)
        reply = submit(fe, mixed, PW, mixed, token())
        assert_disabled(reply, mixed)
        assert "3 messages (domain level)" in reply[1], reply
    finally:
        mailctl("domain", "del", OTHER_DOMAIN)


# --- disable -------------------------------------------------------------------------------

def test_disable_on_both_smtpd_until_enabled(postern, mailctl, new_user, smtpd2,
                                             limiter_control):
    user = new_user(PW)
    hamr_set(postern, ("user", user), "--enabled", "on", "--max", "1", "--interval", "600",
             "--action", "disable", "--alert", "off")
    fe1, fe2 = postern.frontend(), smtpd2

    send_n(fe1, user, 1)
    refused = token()
    assert_disabled(submit(fe1, user, PW, user, refused), user)
    # Every replica refuses it: the verdict is the limiter's.
    assert_disabled(submit(fe2, user, PW, user, refused), user)
    assert_disabled(submit(fe2, user, PW, user, refused, port="smtps"), user)
    assert postern.find(user, refused) == []

    # mailctl says so: hamr status lists the account, hamr show has the reason.
    status = json.loads(mailctl("--json", "hamr", "status").stdout)
    listed = [d for d in status["disabled"] if d["address"] == user]
    assert len(listed) == 1 and listed[0]["reason"] and listed[0]["since"], status
    assert user in mailctl("hamr", "status").stdout
    _, doc = show(postern, user)
    assert doc["send_disabled"] and doc["send_disabled"]["reason"], doc

    # It can still receive mail (from outside, over MX) and log in.
    inbound = token()
    with postern.connect("mx") as c:
        c.ehlo()
        c.send_mail(OUTSIDE, [user], make_message(inbound, sender=OUTSIDE, to=user))
    assert len(postern.find(user, inbound)) == 1
    with Submitter(fe2, user, PW):
        pass

    # A limiter restart changes nothing: the state is in PostgreSQL.
    limiter_control.stop()
    limiter_control.start()
    postern.limiter_loaded()  # (answering before that is test_zy_limiter_down's business)
    assert_disabled(submit(fe1, user, PW, user, refused), user)
    assert_disabled(submit(fe2, user, PW, user, refused), user)

    out = mailctl("hamr", "enable", "--user", user).stdout
    assert user in out
    wait_until(lambda: submit(fe2, user, PW, user, refused)[0] == 250, timeout=30,
               what=f"{user} to send again after hamr enable")
    assert len(postern.find(user, refused)) == 1
    status = json.loads(mailctl("--json", "hamr", "status").stdout)
    assert user not in [d["address"] for d in status["disabled"]], status


# --- reset and show -------------------------------------------------------------------------

def test_reset_domain_and_system_clear_the_user_level(postern, mailctl, new_user):
    mailctl("domain", "add", OTHER_DOMAIN)
    try:
        elsewhere = f"hamr-reset@{OTHER_DOMAIN}"
        mailctl("user", "add", elsewhere, "--password-stdin", input=PW + "\n")
        here = new_user(PW)
        hamr_set(postern, "system", "--enabled", "on", "--max", "5", "--interval", "60",
                 "--action", "throttle", "--alert", "off")
        hamr_set(postern, ("domain", DOMAIN), "--max", "3")
        for user in (here, elsewhere):
            hamr_set(postern, ("user", user), "--max", "1", "--interval", "90")

        eff, doc = show(postern, here)
        assert doc["scope"] == "user" and doc["target"] == here and doc["domain"] == DOMAIN
        assert eff["hamr.max_messages"] == ("1", "user")
        assert eff["hamr.interval"] == ("90", "user")
        for item in doc["settings"]:  # every field, its value, its source, each level's value
            assert {"key", "value", "source", "user", "domain", "system", "default"} <= set(item)
        fe = postern.frontend()
        send_n(fe, here, 1)
        assert_throttled(submit(fe, here, PW, here, token()), 90, "1 messages (user level)")

        # Reset at the domain: its users inherit again; the other domain's user keeps its own.
        out = json.loads(mailctl("--json", "hamr", "reset", "--domain", DOMAIN).stdout)
        assert out["settings_deleted"] == 2 and out["users"] == 1, out
        postern.limiter_sync()
        eff, _ = show(postern, here)
        assert eff["hamr.max_messages"] == ("3", "domain")
        assert eff["hamr.interval"] == ("60", "system")
        eff, _ = show(postern, elsewhere)
        assert eff["hamr.max_messages"] == ("1", "user")
        # The domain's own setting stays.
        dom = json.loads(mailctl("--json", "hamr", "show", "--domain", DOMAIN).stdout)
        assert {i["key"]: (i["value"], i["source"]) for i in dom["settings"]}[
            "hamr.max_messages"] == ("3", "domain")
        # The limit that applies now is the domain's: two more go through (three in the
        # window), the next is throttled and says where the limit comes from.
        send_n(fe, here, 2)
        assert_throttled(submit(fe, here, PW, here, token()), 60,
                         "3 messages (domain level) per 60 s (system level)")

        # Reset at the system: every user-level setting goes.
        out = json.loads(mailctl("--json", "hamr", "reset", "--system").stdout)
        assert out["settings_deleted"] >= 2 and out["users"] >= 1, out
        postern.limiter_sync()
        eff, _ = show(postern, elsewhere)
        assert eff["hamr.max_messages"] == ("5", "system")
        assert eff["hamr.interval"] == ("60", "system")
        send_n(fe, elsewhere, 5, to=here)
        assert_throttled(submit(fe, elsewhere, PW, here, token()), 60,
                         "5 messages (system level)")
    finally:
        mailctl("domain", "del", OTHER_DOMAIN)


# --- one limit for every replica; what does not count ------------------------------------

def test_one_limit_across_both_smtpd(postern, new_user, smtpd2):
    user = new_user(PW)
    hamr_set(postern, ("user", user), "--enabled", "on", "--max", "3", "--interval", "120",
             "--action", "throttle", "--alert", "off")
    fe1, fe2 = postern.frontend(), smtpd2
    send_n(fe1, user, 1)
    send_n(fe2, user, 1)
    assert submit(fe1, user, PW, user, token(), port="smtps")[0] == 250
    # Three accepted in all, through two processes: the fourth is refused by both.
    assert_throttled(submit(fe2, user, PW, user, token()), 120)
    assert_throttled(submit(fe1, user, PW, user, token()), 120)
    assert_throttled(submit(fe2, user, PW, user, token(), port="smtps"), 120)
    assert len([raw for _, _, raw in postern.inbox(user)]) == 3


def test_unauthenticated_mx_mail_is_not_counted(postern, new_user):
    user = new_user(PW)
    hamr_set(postern, ("user", user), "--enabled", "on", "--max", "2", "--interval", "120",
             "--action", "throttle", "--alert", "off")
    fe = postern.frontend()
    # Five messages over MX, unauthenticated, with the user's own address as the sender and
    # as the recipient: none of them is the user sending.
    with fe.smtplib_client("mx") as s:
        s.ehlo()
        for _ in range(5):
            tok = token()
            assert s.sendmail(user, [user], make_message(tok, sender=user, to=user)) == {}
    assert len(postern.inbox(user)) == 5
    # The user's own allowance is untouched.
    send_n(fe, user, 2)
    assert_throttled(submit(fe, user, PW, user, token()), 120)


def test_status_lists_throttled_users(postern, mailctl, new_user):
    """Issue 3: `hamr status` shows the throttled and the disabled users, with counts and since
    when. A throttled user (alerts off, so no alert record either) must be among them."""
    user = new_user(PW)
    hamr_set(postern, ("user", user), "--enabled", "on", "--max", "1", "--interval", "300",
             "--action", "throttle", "--alert", "off")
    fe = postern.frontend()
    send_n(fe, user, 1)
    assert_throttled(submit(fe, user, PW, user, token()), 300)
    out = mailctl("hamr", "status").stdout
    doc = mailctl("--json", "hamr", "status").stdout
    assert user in out and user in doc, f"hamr status does not show the throttled {user}:\n" \
                                         f"{out}{doc}"


def test_a_message_counts_once_whatever_its_recipients(postern, new_user):
    user, other = new_user(PW), new_user(PW)
    hamr_set(postern, ("user", user), "--enabled", "on", "--max", "2", "--interval", "120",
             "--action", "throttle", "--alert", "off")
    fe = postern.frontend()
    with fe.smtplib_client("submission") as s:
        s.ehlo()
        s.starttls(context=postern.tls_context())
        s.ehlo()
        s.login(user, PW)
        tok = token()
        assert s.sendmail(user, [user, other, "bob@example.test"],
                          make_message(tok, sender=user, to=other)) == {}
    assert len(postern.messages_with(tok)) == 3
    send_n(fe, user, 1)
    assert_throttled(submit(fe, user, PW, user, token()), 120)
