"""Limiter replicas and the counters' persistence, end to end (services/limiter/replica.h).

Two limiter processes share the harness's nats-server (JetStream on) and PostgreSQL: one holds
the lease and answers, the other follows the stream POSTERN_LIMITER. Killed with SIGKILL, the
leader's counters are not lost: the follower takes the lease over and counts on from where it
was, so a HAMR limit of 10 messages lets exactly 10 through, whichever smtpd process carries
them and whichever limiter answers; the same for failed logins on SMTP, POP3 and IMAP. A lone
limiter killed and started again rebuilds its windows from the stream."""

import re
import time

import pytest

from support import Submitter, greeting, login_attempt, plain_response, token, wait_until
from test_imap import Imap
from test_pop3 import Pop3

pytestmark = pytest.mark.own_processes

PW = "Replica-pw-4!"
LEADS = 'msg="limiter replica leads'
STOPS = 'msg="limiter replica stops answering"'


@pytest.fixture(autouse=True)
def needs_limiter(postern):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")


def limiter_names(postern):
    return [n for n in postern.services if n == "limiter" or n.startswith("limiter-")]


def leads(svc):
    """True when svc's log says it leads now: its last word on the lease is "leads"."""
    out = svc.since(svc.started_at)
    last_lead, last_stop = out.rfind(LEADS), out.rfind(STOPS)
    return svc.alive() and last_lead >= 0 and last_lead > last_stop


def leader(postern, timeout=30):
    """The name of the limiter process that answers, waiting until exactly one does."""
    def one():
        found = [n for n in limiter_names(postern) if leads(postern.services[n])]
        return found[0] if len(found) == 1 else None
    return wait_until(one, timeout=timeout, what="exactly one limiter to lead")


def following(svc):
    return 'msg="limiter replica caught up' in svc.since(svc.started_at)


@pytest.fixture
def limiters(postern):
    """A second limiter process beside the harness's, following the stream. Afterwards the
    harness's limiter runs again (it may have been killed) and the second one is gone."""
    base = postern.services["limiter"]
    from conftest import Service
    svc = Service("limiter-2", base.exe, dict(base.env), postern.dir / "limiter-2.log", None)
    svc.ready = lambda: following(svc)
    postern.services["limiter-2"] = svc
    svc.start()
    try:
        yield ["limiter", "limiter-2"]
    finally:
        if postern.services["limiter"].alive():
            postern.remove_service("limiter-2")
        else:
            postern.start_limiter()
            postern.remove_service("limiter-2")
        leader(postern)


def kill(postern, name):
    """SIGKILL, as a crash or an OOM kill would; the process is not restarted."""
    postern.services[name].kill()


def takeover(postern, dead, timeout=30):
    """Waits for another limiter to lead after dead was killed; returns its name and the
    seconds it took (measured here, reported, not asserted)."""
    started = time.monotonic()
    name = wait_until(lambda: (lambda n: n if n != dead else None)(leader(postern)),
                      timeout=timeout, what=f"a limiter to take over from {dead}")
    return name, time.monotonic() - started


def replica_id(svc):
    """The replica id the process logged when it began to follow the stream."""
    m = re.findall(r'msg="following the limiter stream" replica=(\S+)', svc.since(svc.started_at))
    assert m, f"{svc.name} logged no replica id"
    return m[-1]


def limiter_status(postern):
    import json
    return json.loads(postern.mailctl("--json", "limiter", "status").stdout)


def hamr_user(postern, new_user, maximum, interval):
    user = new_user(PW)
    postern.mailctl("hamr", "set", "--user", user, "--enabled", "on", "--max", str(maximum),
                    "--interval", str(interval), "--action", "throttle", "--alert", "off")
    postern.limiter_sync()
    return user


def send(frontend, user):
    with Submitter(frontend, user, PW) as sub:
        return sub.send(user, token())


# --- HAMR across three smtpd, the answering limiter killed half-way ------------------------

def test_hamr_limit_holds_when_the_answering_limiter_is_killed(postern, new_user, limiters,
                                                                  smtpd2):
    smtpd3 = postern.add_smtpd("smtpd3")
    fronts = [postern.frontend(), smtpd2, smtpd3]
    user = hamr_user(postern, new_user, 10, 3600)
    first = leader(postern)
    for i in range(5):
        reply = send(fronts[i % 3], user)
        assert reply[0] == 250, (i, reply)

    first_id = replica_id(postern.services[first])
    st = limiter_status(postern)
    assert st["lease"]["replica"] == first_id and st["lease"]["owns"] == "every key", st
    assert st["stream"]["followers"] >= 2 and st["stream"]["last_seq"] > 0, st

    kill(postern, first)
    second, seconds = takeover(postern, first)
    print(f"\ntakeover after SIGKILL: {second} answers {seconds:.2f} s after the kill was sent")
    st = limiter_status(postern)
    assert st["lease"]["replica"] == replica_id(postern.services[second]), st
    assert st["lease"]["takeover_from"] == first_id, st
    text = postern.mailctl("limiter", "status").stdout
    assert f"last takeover: " in text and f"from {first_id}" in text, text
    for i in range(5, 10):
        reply = send(fronts[i % 3], user)
        assert reply[0] == 250, (i + 1, reply)
    reply = send(fronts[10 % 3], user)
    assert reply[0] == 451 and reply[1].startswith("4.7.1"), ("the 11th message", reply)
    assert "10 messages" in reply[1], reply


# --- harvesting on SMTP, POP3 and IMAP, the answering limiter killed half-way --------------

def smtp_failure(postern, user, source, i):
    reply = login_attempt(postern.frontend(), user, f"wrong-{i}", source=source)
    return reply[0] == 535


def pop3_failure(postern, user, source, i):
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, source=source) as p:
        if not p.greeting.startswith("+OK"):
            return False
        return p.auth_plain(user, f"wrong-{i}").startswith("-ERR [AUTH]")


def imap_failure(postern, user, source, i):
    with Imap(postern.port("imaps"), postern.tls_context(), implicit_tls=True,
              source=source) as c:
        if not c.greeting.startswith(b"* OK"):
            return False
        tag = c.tag()
        c.send(f"{tag} AUTHENTICATE PLAIN {plain_response(user, f'wrong-{i}')}\r\n")
        return c.line().startswith(f"{tag} NO [AUTHENTICATIONFAILED]".encode())


def smtp_served(postern, source):
    return greeting(postern.frontend(), source).code == 220


def pop3_served(postern, source):
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, source=source) as p:
        return p.greeting.startswith("+OK")


def imap_served(postern, source):
    with Imap(postern.port("imaps"), postern.tls_context(), implicit_tls=True,
              source=source) as c:
        return c.greeting.startswith(b"* OK")


@pytest.mark.client_addresses
def test_harvest_limit_holds_when_the_answering_limiter_is_killed(postern, mailctl, new_user,
                                                                   limiters):
    if not (postern.has_pop3d and postern.has_imapd):
        pytest.skip("needs pop3d and imapd")
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "5", "--interval", "3600",
            "--block", "120")
    postern.limiter_sync()
    kinds = {
        "127.0.6.1": (smtp_failure, smtp_served),
        "127.0.6.2": (pop3_failure, pop3_served),
        "127.0.6.3": (imap_failure, imap_served),
    }
    users = {source: new_user(PW) for source in kinds}
    try:
        for source, (fail, _) in kinds.items():
            for i in range(2):
                assert fail(postern, users[source], source, i), (source, i)
        first = leader(postern)
        kill(postern, first)
        second, seconds = takeover(postern, first)
        print(f"\ntakeover after SIGKILL: {second} answers after {seconds:.2f} s")
        for source, (fail, served) in kinds.items():
            for i in range(2, 4):
                assert fail(postern, users[source], source, i), (source, i + 1)
            # Four failures: still served (a limiter that had lost the first two would be at
            # two; one that counted some twice would have blocked).
            time.sleep(0.5)  # the events reach the limiter through the stream
            assert served(postern, source), f"{source} blocked after 4 failures"
            assert fail(postern, users[source], source, 4), (source, 5)
            wait_until(lambda: not served(postern, source), timeout=30,
                       what=f"{source} to be blocked after its 5th failure")
    finally:
        for source in kinds:
            mailctl("harvest", "unblock", source, check=False)


# --- a lone limiter restarted late in the window --------------------------------------------

def test_a_restarted_limiter_still_counts_the_window_before_its_restart(postern, new_user):
    """HAMR 3 messages per 18 s: 2 sent, the limiter killed and started again 12 s into the
    window (two thirds of it, as 40 minutes of an hour), then one more goes through and the
    next is throttled until the first two leave the window."""
    window, restart_at = 18, 12
    user = hamr_user(postern, new_user, 3, window)
    fe = postern.frontend()
    t0 = time.monotonic()
    for i in range(2):
        assert send(fe, user)[0] == 250, i
    time.sleep(max(0.0, restart_at - (time.monotonic() - t0)))
    kill(postern, "limiter")
    postern.start_limiter()
    leader(postern)
    assert send(fe, user)[0] == 250, "the 3rd message"
    reply = send(fe, user)
    assert reply[0] == 451, ("the 4th message, with 2 counted before the restart", reply)
    m = re.search(r"try again in (\d+) seconds", reply[1])
    assert m and 1 <= int(m.group(1)) <= window - (restart_at - 1), reply


@pytest.mark.client_addresses
def test_an_unblock_outlives_a_restart(postern, mailctl, new_user):
    """Failures that led to a block an administrator lifted do not come back when a limiter
    rebuilds its counters from the stream: the lift is in the stream too."""
    source = "127.0.6.9"
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "3600",
            "--block", "600")
    postern.limiter_sync()
    user = new_user(PW)
    try:
        for i in range(3):
            assert smtp_failure(postern, user, source, i), i
        wait_until(lambda: not smtp_served(postern, source), timeout=30,
                   what=f"{source} to be blocked")
        mailctl("harvest", "unblock", source)
        wait_until(lambda: smtp_served(postern, source), timeout=30,
                   what=f"{source} to be served again")
        assert smtp_failure(postern, user, source, 3)  # one failure after the lift

        kill(postern, "limiter")
        postern.start_limiter()
        leader(postern)
        time.sleep(1)  # a block the replay made would reach smtpd within this
        assert smtp_served(postern, source), "the lifted block came back with the replay"
        # One failure before the restart and one after: two of three, not blocked.
        assert smtp_failure(postern, user, source, 4)
        time.sleep(1)
        assert smtp_served(postern, source), "blocked after 2 failures since the lift"
        assert smtp_failure(postern, user, source, 5)
        wait_until(lambda: not smtp_served(postern, source), timeout=30,
                   what=f"{source} to be blocked at its 3rd failure since the lift")
    finally:
        mailctl("harvest", "unblock", source, check=False)


@pytest.mark.client_addresses
def test_a_deleted_stream_is_made_again(postern, mailctl, new_user):
    """Without its stream nothing the front ends publish would be counted, and the follower
    cannot tell (its consumer goes with the stream): the limiter looks for the stream, makes
    it again and follows it, and failed logins count and block again."""
    from support import nats_request
    source = "127.0.6.10"
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "3600",
            "--block", "600")
    postern.limiter_sync()
    user = new_user(PW)
    svc = postern.services["limiter"]
    offset = svc.size()
    reply = nats_request(postern.env["NATS_URL"], "$JS.API.STREAM.DELETE.POSTERN_LIMITER", b"",
                         timeout=5)
    assert reply and b'"success":true' in reply, reply
    wait_until(lambda: 'msg="the limiter stream is gone' in svc.since(offset), timeout=30,
               what="the limiter to see its stream gone")
    wait_until(lambda: 'msg="following the limiter stream"' in svc.since(offset)
               and leads(svc), timeout=30, what="the limiter to follow a new stream and lead")
    try:
        for i in range(3):
            assert smtp_failure(postern, user, source, i), i
        wait_until(lambda: not smtp_served(postern, source), timeout=30,
                   what=f"{source} blocked: failures counted through the new stream")
    finally:
        mailctl("harvest", "unblock", source, check=False)
