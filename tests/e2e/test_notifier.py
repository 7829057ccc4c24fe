"""Alerts, end to end: a user reaching its HAMR limit, and a client address blocked for
harvesting, make the limiter ask the notifier for an alert, which arrives as a message in the
administrators' INBOX (admin@example.test, a local user): one per user (or address) and cause
per interval, however often the limit is hit, naming who, which limit and which action. Mail
the system writes itself is not counted by HAMR.

"Exactly one" is counted after a later alert about someone else has arrived: the limiter
publishes its alerts in order and the notifier works through them in order, so by then the
earlier ones have been delivered or suppressed."""

import email
import email.policy
import re
import time

import pytest

from support import (DOMAIN, Submitter, greeting, login_attempt, nats_publish, submit, token,
                     wait_until)

PW = "Notify-pw-5!"
ADMIN = f"admin@{DOMAIN}"
ADMIN_PW = "Admin-pw-1!"


@pytest.fixture(scope="module")
def admin(postern, accounts):
    """The administrator: a local user (created once; its password set either way)."""
    if not postern.sql("SELECT 1 FROM users WHERE address = %s", (ADMIN,)):
        postern.mailctl("user", "add", ADMIN, "--password-stdin", input=ADMIN_PW + "\n")
    else:
        postern.mailctl("user", "passwd", ADMIN, "--password-stdin", input=ADMIN_PW + "\n")
    return ADMIN


@pytest.fixture
def alerts_to_admin(postern, mailctl, admin):
    for name in ("limiter", "notifier"):
        if name not in postern.services:
            pytest.skip(f"no {name} in {postern.bin}: alerts need it")
    r = mailctl("--json", "alert-address", "add", admin)
    assert '"delivery":"mailbox"' in r.stdout.replace(" ", ""), r.stdout
    assert admin in mailctl("alert-address", "list").stdout
    try:
        yield admin
    finally:
        mailctl("alert-address", "del", admin, check=False)


def alerts(postern, about, cause):
    """The alert messages in the admin's INBOX about one user or address, parsed."""
    found = []
    for _, _, raw in postern.inbox(ADMIN):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(msg["Subject"] or "")
        if subject.startswith(f"[Postern] {cause}: ") and re.search(
                rf"\b{re.escape(about)}(/32)?\b", subject.split(": ", 1)[1]):
            found.append(msg)
    return found


def body_text(msg):
    """The body as one line (the notifier wraps long lines)."""
    return " ".join(msg.get_content().split())


def hamr_user(postern, new_user, max_messages, interval):
    user = new_user(PW)
    postern.mailctl("hamr", "set", "--user", user, "--enabled", "on", "--max", max_messages,
                    "--interval", interval, "--action", "throttle", "--alert", "on")
    return user


def exceed(postern, user, allowed, extra):
    """allowed messages accepted, then extra refused with 451, in one session."""
    with Submitter(postern.frontend(), user, PW) as sub:
        for _ in range(allowed):
            assert sub.send(user, token())[0] == 250
        for _ in range(extra):
            assert sub.send(user, token())[0] == 451


def flush(postern, new_user):
    """Returns once every alert asked for before the call has been handled: a fresh user goes
    over its limit and its alert arrives."""
    marker = hamr_user(postern, new_user, 1, 600)
    postern.limiter_sync()
    exceed(postern, marker, 1, 1)
    wait_until(lambda: alerts(postern, marker, "HAMR"), timeout=60,
               what=f"the alert about {marker} (the marker)")


# --- HAMR alerts ---------------------------------------------------------------------------

def test_hamr_alert_once_per_user_and_interval(postern, pb, mailctl, nats, new_user,
                                               alerts_to_admin):
    mailctl("config", "set", "notifier.interval", "8")
    user = hamr_user(postern, new_user, 2, 8)
    postern.limiter_sync()
    asked = nats("postern.alert", pb.Alert)

    # Past the limit several times: one alert.
    exceed(postern, user, 2, 4)
    # The limiter's Alert carries the interval the limit counts over.
    event = asked.wait_for(lambda a: a.user == user, timeout=60)
    assert (event.cause, event.action, event.interval_s) == ("hamr", "throttle", 8), event
    got = wait_until(lambda: alerts(postern, user, "HAMR"), timeout=60,
                     what=f"the HAMR alert about {user}")
    flush(postern, new_user)
    got = alerts(postern, user, "HAMR")
    assert len(got) == 1, [m["Subject"] for m in got]

    msg = got[0]
    assert msg["Subject"] == f"[Postern] HAMR: {user} throttled"
    assert msg["To"] and ADMIN in str(msg["To"])
    assert msg["Auto-Submitted"] == "auto-generated"
    text = body_text(msg)
    assert f"Account: {user}" in text, text
    assert "Limit: 2 messages (user level) per 8 s (user level)" in text, text
    assert "Interval: 8 s (the limit counts what happened in the last 8 seconds)" in text, text
    assert "Action: throttle" in text, text
    assert postern.client_address in text, text  # the client address it sent from
    assert "When:" in text, text
    # mailctl hamr status counts it.
    status = mailctl("hamr", "status").stdout
    assert user in status, status

    # The next interval: once the window and notifier.interval have passed, the limit is hit
    # again, several times, and exactly one more alert comes.
    wait_until(lambda: postern.sql("SELECT bool_and(at < now() - interval '9 seconds')"
                                   " FROM alerts WHERE subject = %s", (user,))[0][0],
               timeout=60, what="notifier.interval to pass since the first alert")
    wait_until(lambda: submit(postern.frontend(), user, PW, user, token())[0] == 250,
               timeout=60, what="the window to free a slot")
    exceed(postern, user, 1, 3)
    wait_until(lambda: len(alerts(postern, user, "HAMR")) >= 2, timeout=60,
               what=f"a second HAMR alert about {user}")
    flush(postern, new_user)
    assert len(alerts(postern, user, "HAMR")) == 2


def test_disable_alert_names_the_action(postern, mailctl, new_user, alerts_to_admin):
    """Also: an alert address outside the hosted domains gets the alert through the outbound
    queue, in the same message; with alert-owner on, the account's owner gets it too."""
    remote = "ops@remote-admins.example"
    r = mailctl("--json", "alert-address", "add", remote)
    assert '"delivery":"relay"' in r.stdout.replace(" ", ""), r.stdout
    user = new_user(PW)
    mailctl("hamr", "set", "--user", user, "--enabled", "on", "--max", "1", "--interval", "300",
            "--action", "disable", "--alert", "on", "--alert-owner", "on")
    postern.limiter_sync()
    fe = postern.frontend()
    with Submitter(fe, user, PW) as sub:
        assert sub.send(user, token())[0] == 250
        for _ in range(3):
            assert sub.send(user, token())[0] == 550
    got = wait_until(lambda: alerts(postern, user, "HAMR"), timeout=60,
                     what=f"the HAMR alert about {user}")
    flush(postern, new_user)
    got = alerts(postern, user, "HAMR")
    assert len(got) == 1, [m["Subject"] for m in got]
    assert got[0]["Subject"] == f"[Postern] HAMR: {user} disabled"
    text = body_text(got[0])
    assert "Limit: 1 messages (user level) per 300 s (user level)" in text, text
    assert "Action: disable" in text, text
    assert f"mailctl hamr enable --user {user}" in text, text
    queued = postern.queued(f"HAMR: {user} disabled")
    assert len(queued) == 1, queued
    _, sender, recipients, raw = queued[0]
    assert sender == "" and list(recipients) == [remote], queued[0]
    assert remote in str(got[0]["To"]) and ADMIN in str(got[0]["To"]), got[0]["To"]
    assert user in str(got[0]["To"]), got[0]["To"]
    own = [raw for _, _, raw in postern.inbox(user) if b"[Postern] HAMR: " in raw]
    assert len(own) == 1, own


def test_relayed_alert_is_announced_to_the_queue(postern, pb, mailctl, nats, alerts_to_admin):
    """An alert that goes to an address outside the hosted domains waits in the outbound queue:
    the notifier announces it there (postern.queue.added, the alert's id) once it is stored."""
    remote = "ops-queue@remote-admins.example"
    mailctl("alert-address", "add", remote)
    try:
        sub = nats("postern.queue.added", pb.QueueAdded)
        about = f"queued-{token()[-8:]}@{DOMAIN}"
        a = pb.Alert(cause="hamr", user=about, client_addrs=["192.0.2.11"],
                     limit="5 messages (user level) per 60 s (user level)", action="throttle",
                     time_ms=int(time.time() * 1000), detail="Asked for by the test.")
        nats_publish(postern.env["NATS_URL"], "postern.alert", a.SerializeToString())
        got = wait_until(lambda: alerts(postern, about, "HAMR"), timeout=60,
                         what=f"the HAMR alert about {about}")
        alert_id = re.search(r"\bid (\S+);", str(got[0]["Received"])).group(1)
        sub.wait_for(lambda e: e.queue_id == alert_id)
    finally:
        mailctl("alert-address", "del", remote, check=False)


def test_alert_mail_is_not_counted(postern, mailctl, new_user, nats, alerts_to_admin):
    """The alert is system mail: it is not a message anyone sent. Not the address in its From:
    (a local user here), not its recipient, not the user it is about."""
    sender = new_user(PW)
    mailctl("config", "set", "notifier.from", sender)
    for who in (sender, ADMIN):
        mailctl("hamr", "set", "--user", who, "--enabled", "on", "--max", "1", "--interval",
                "600", "--action", "throttle", "--alert", "off")
    user = hamr_user(postern, new_user, 1, 600)
    postern.limiter_sync()
    events = nats("postern.event.message", postern.pb.MessageEvent)

    exceed(postern, user, 1, 2)
    got = wait_until(lambda: alerts(postern, user, "HAMR"), timeout=60,
                     what=f"the HAMR alert about {user}")
    assert sender in str(got[0]["From"]), got[0]["From"]
    alert_id = re.search(r"\bid (\S+);", str(got[0]["Received"])).group(1)

    # Nothing announced the alert as an accepted message (that is what the limiter counts).
    flush(postern, new_user)
    assert not [e for e in events.events if e.queue_id == alert_id], events.events
    # The From: address and the administrator still have their one message.
    for who, pw in ((sender, PW), (ADMIN, ADMIN_PW)):
        reply = submit(postern.frontend(), who, pw, who, token())
        assert reply[0] == 250, (who, reply)


def test_notifier_once_per_interval_across_restarts(postern, pb, new_user, service_control,
                                                   alerts_to_admin):
    """Limiters forget what they alerted when they restart, and there may be several: the
    same alert asked for again and again, also after the notifier itself restarted, is mailed
    once within notifier.interval (the alerts table decides)."""
    url = postern.env["NATS_URL"]
    user = new_user(PW)

    def ask(about):
        a = pb.Alert(cause="hamr", user=about, client_addrs=["192.0.2.7", "2001:db8::7"],
                     limit="5 messages (user level) per 60 s (user level)", action="throttle",
                     time_ms=int(time.time() * 1000), detail="Asked for by the test.")
        nats_publish(url, "postern.alert", a.SerializeToString())

    def delivered(about):
        """Asks until the alert about `about` is there (the notifier may be starting)."""
        def there():
            if not alerts(postern, about, "HAMR"):
                ask(about)
                return False
            return True
        wait_until(there, timeout=60, interval=0.5, what=f"an alert about {about}")

    for _ in range(3):
        ask(user)
    delivered(user)
    service_control.stop("notifier")
    service_control.start("notifier")
    delivered(f"marker-{token()[-8:]}@{DOMAIN}")  # the new notifier is listening
    for _ in range(3):
        ask(user)
    delivered(f"marker-{token()[-8:]}@{DOMAIN}")
    got = alerts(postern, user, "HAMR")
    assert len(got) == 1, [m["Subject"] for m in got]
    text = body_text(got[0])
    assert "Clients: 192.0.2.7, 2001:db8::7" in text, text


def test_alert_is_pushed_to_an_idle_imap_session(postern, pb, alerts_to_admin):
    """The notifier announces the alerts it stores in a mailbox: an administrator's mail
    client in IMAP IDLE is told at once, not at its next poll."""
    from test_imap import Imap
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    with Imap(postern.port("imaps"), postern.tls_context(), implicit_tls=True) as c:
        c.ok(f"LOGIN {ADMIN} {ADMIN_PW}")
        exists = [u for u in c.ok("SELECT INBOX") if u.endswith(b" EXISTS")]
        count = int(exists[0].split()[1])
        c.send("i1 IDLE\r\n")
        assert c.line().startswith(b"+ ")
        about = f"idle-{token()[-8:]}@{DOMAIN}"
        a = pb.Alert(cause="hamr", user=about, client_addrs=["192.0.2.9"],
                     limit="5 messages (user level) per 60 s (user level)", action="throttle",
                     time_ms=int(time.time() * 1000), detail="Asked for by the test.")
        nats_publish(postern.env["NATS_URL"], "postern.alert", a.SerializeToString())
        c.sock.settimeout(30)
        assert c.line() == f"* {count + 1} EXISTS".encode()
        c.send("DONE\r\n")
        assert c.until("i1")[1].startswith("OK")
    assert alerts(postern, about, "HAMR")


# --- harvesting alerts ----------------------------------------------------------------------

@pytest.mark.client_addresses
def test_block_alert_once_per_address(postern, pb, mailctl, nats, alerts_to_admin):
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "60",
            "--block", "30")
    postern.limiter_sync()
    asked = nats("postern.alert", pb.Alert)
    attacker, marker = "127.0.3.21", "127.0.3.22"
    fe = postern.frontend()

    def storm(address):
        for i in range(3):
            who = f"nobody-{token()[-8:]}@{DOMAIN}"  # unknown users: no per-account alerts
            assert login_attempt(fe, who, f"guess-{i}", source=address)[0] == 535
        wait_until(lambda: greeting(fe, address).code == 554, timeout=30,
                   what=f"{address} to be blocked")

    try:
        storm(attacker)
        got = wait_until(lambda: alerts(postern, attacker, "Harvesting"), timeout=60,
                         what=f"the alert about {attacker}")
        event = asked.wait_for(lambda a: f"{attacker}/32" in a.client_addrs)
        assert (event.cause, event.action, event.interval_s) == ("harvest", "block", 60), event
        msg = got[0]
        assert msg["Subject"] == f"[Postern] Harvesting: {attacker}/32 blocked", msg["Subject"]
        text = body_text(msg)
        assert f"Address: {attacker}/32" in text, text
        assert "Limit: 3 failed logins (system level) per 60 s (system level)" in text, text
        assert "Interval: 60 s" in text, text
        assert "Action: block" in text, text
        assert f"mailctl harvest unblock {attacker}/32" in text, text

        # Lifted, and blocked again at once: no second alert within the interval.
        mailctl("harvest", "unblock", attacker)
        wait_until(lambda: greeting(fe, attacker).code == 220, timeout=30,
                   what=f"{attacker} to be served again")
        storm(attacker)
        storm(marker)
        wait_until(lambda: alerts(postern, marker, "Harvesting"), timeout=60,
                   what=f"the alert about {marker} (the marker)")
        assert len(alerts(postern, attacker, "Harvesting")) == 1
    finally:
        for address in (attacker, marker):
            mailctl("harvest", "unblock", address, check=False)
