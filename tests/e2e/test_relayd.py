"""relayd: relayed mail reaches other hosts, is retried while they fail temporarily, comes back
to the sender as a delivery status notification (RFC 3464) when it cannot go, and is never
lost or delivered twice when several relayd processes share the queue or one is killed.

The other hosts are Sink servers (aiosmtpd) on loopback addresses 127.0.0.2-127.0.0.6, all on
one port that relayd is told to use for MX hosts (RELAY_SMTP_PORT); their names and MX records
come from a private dnsmasq (DNS_SERVERS). relay.allow_private is on for the module, since
every address here is a loopback one; one test turns it off to see such MX hosts refused.
"""

import email
import email.policy
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sink import Sink
from support import ALICE, ALICE_PW, free_ports, make_message, submit, token, wait_until

pytestmark = pytest.mark.own_processes

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
# MX hosts and addresses the DNS server gives (dnsmasq options).
DNS_RECORDS = [
    # remote.test: two MX hosts; the preferred one answers.
    "--mx-host=remote.test,mx1.remote.test,10", "--mx-host=remote.test,mx2.remote.test,20",
    "--host-record=mx1.remote.test,127.0.0.2", "--host-record=mx2.remote.test,127.0.0.3",
    # pref.test: the preferred MX host does not answer (nothing listens on 127.0.0.9).
    "--mx-host=pref.test,down.pref.test,10", "--mx-host=pref.test,up.pref.test,20",
    "--host-record=down.pref.test,127.0.0.9", "--host-record=up.pref.test,127.0.0.5",
    # fallback.test: no MX, an address of its own (RFC 5321 section 5.1).
    "--host-record=fallback.test,127.0.0.4",
    # nullmx.test: accepts no mail (RFC 7505).
    "--dns-rr=nullmx.test,15,000000",  # MX 0 "." as raw RDATA
]
SINK_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
# What the module needs of the settings; kept through the harness's settings resets.
RELAY_SETTINGS = {"relay.allow_private": "on", "relay.retry_min": "1", "relay.retry_max": "2",
                  "relay.lease": "5"}


class World:
    """The remote side: sinks by address, the DNS server, relayd, and helpers."""

    def __init__(self, postern, port, dns_port, health_port):
        self.postern, self.port, self.dns_port, self.health_port = postern, port, dns_port, health_port
        self.sinks = {}
        self.relayd = None

    def env(self, **extra):
        env = {"DNS_SERVERS": f"127.0.0.1:{self.dns_port}", "RELAY_SMTP_PORT": str(self.port),
               "DRAIN_TIMEOUT": "5"}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def reset(self):
        for s in self.sinks.values():
            s.rules.clear()
            s.tempfail(0)
            del s.messages[:]
            del s.refused[:]

    def sink(self, host="127.0.0.2"):
        return self.sinks[host]

    def all_received(self):
        return [m for s in self.sinks.values() for m in s.messages]

    def queue(self, sender, rcpts, raw, created="now()"):
        """Puts a message in the outbound queue as smtpd would and wakes relayd (mailctl
        queue retry announces it); returns its id."""
        [(qid,)] = self.postern.sql(
            "INSERT INTO outbound_queue (queue_id, sender, recipients, raw, created_at)"
            f" VALUES (%s, %s, %s, %s, {created}) RETURNING id",
            (token(), sender, list(rcpts), raw))
        self.wake()
        return qid

    def wake(self):
        self.postern.mailctl("queue", "retry", "--all")

    def queued_ids(self):
        return [r[0] for r in self.postern.sql("SELECT id FROM outbound_queue ORDER BY id")]

    def recipient_rows(self, qid):
        return self.postern.sql("SELECT recipient, state, last_reply FROM outbound_recipients"
                                " WHERE message_id = %s ORDER BY recipient", (qid,))

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as r:
            return r.read().decode()


def notices(postern, tok):
    """Delivery status notifications in alice's INBOX about the message carrying tok, parsed."""
    return [email.message_from_bytes(raw, policy=email.policy.compat32)
            for raw in postern.find(ALICE, tok) if b"report-type=delivery-status" in raw]


def status_fields(msg):
    """The per-recipient field blocks of a DSN's message/delivery-status part, as dicts."""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            # compat32 parses the part's blocks as a list of header sets
            blocks = part.get_payload()
            return [dict(b.items()) for b in blocks[1:]]
    raise AssertionError("no message/delivery-status part")


@pytest.fixture(scope="module")
def world(postern, tmp_path_factory):
    if not Path(DNSMASQ).exists():
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    port, dns_port, health_port = free_ports(3)
    w = World(postern, port, dns_port, health_port)
    tmp = tmp_path_factory.mktemp("relayd")
    dns = subprocess.Popen(
        [DNSMASQ, "--keep-in-foreground", f"--port={dns_port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
         "--local=/test/", f"--pid-file={tmp / 'dnsmasq.pid'}", "--user=root",
         f"--log-facility={tmp / 'dnsmasq.log'}", *DNS_RECORDS],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    saved = dict(postern.baseline_settings)
    try:
        for host in SINK_HOSTS:
            w.sinks[host] = Sink(host, port, tls=(str(postern.cert), str(postern.key))).start()
        # Nothing queued by earlier tests (to example addresses nobody answers for) may get
        # in the way of this module's counts.
        postern.sql("DELETE FROM outbound_queue")
        postern.sql("DELETE FROM relay_transports")
        postern.sql("DELETE FROM relay_tls_policy")
        postern.baseline_settings.update(RELAY_SETTINGS)
        for key, value in RELAY_SETTINGS.items():
            postern.mailctl("config", "set", key, value)
        w.relayd = postern.add_relayd("relayd", w.env(HEALTH_PORT=health_port))
        wait_settled(w.relayd)
        yield w
    finally:
        # The DNS server and the sinks go whatever the relayd processes' stops say.
        try:
            try:
                postern.remove_service("relayd2")
            finally:
                postern.remove_service("relayd")
        finally:
            dns.terminate()
            dns.wait()
            for s in w.sinks.values():
                s.stop()
            postern.baseline_settings.clear()
            postern.baseline_settings.update(saved)
            postern.dirty = True
            postern.sql("DELETE FROM outbound_queue")
            postern.sql("DELETE FROM relay_transports")
            postern.sql("DELETE FROM relay_tls_policy")


def wait_settled(svc, settings=RELAY_SETTINGS):
    """Waits until relayd has logged relay settings matching the module's. A change is read
    when the configuration reloads, not at the next look at the queue (30 s when it is
    empty): the wait is shorter than that."""
    want = {f"{k.split('.', 1)[1]}={v}" for k, v in settings.items()}

    def seen():
        lines = [l for l in svc.since(svc.started_at).splitlines() if 'msg="relay settings"' in l]
        return lines and want <= set(lines[-1].split())
    wait_until(seen, timeout=20, what=f"relayd to use {sorted(want)}")


@pytest.fixture
def remote(world):
    world.reset()
    yield world
    world.reset()


def wakeups(remote):
    for line in remote.metrics().splitlines():
        if line.startswith("postern_relay_wakeups_total"):
            return float(line.split()[-1])
    return 0.0


def test_submitted_mail_to_a_remote_domain_arrives_byte_for_byte(postern, remote):
    before = wakeups(remote)
    tok = token()
    to = f"user-{tok}@remote.test"
    code, text = submit(postern.frontend(), ALICE, ALICE_PW, to, tok)
    assert code == 250, text
    [m] = remote.sink("127.0.0.2").wait_for(1, timeout=30)
    assert m.sender == ALICE and m.rcpts == [to]
    sent = make_message(tok, sender=ALICE, to=to)
    # smtpd's trace header on top, then exactly what the client sent.
    assert m.data.startswith(b"Received: ") and m.data.endswith(b"\r\n\r\n" + sent.split(b"\r\n\r\n", 1)[1])
    assert sent.split(b"\r\n\r\n", 1)[0] in m.data
    wait_until(lambda: not remote.queued_ids(), what="the queue to be empty")
    assert 'msg="delivered"' in remote.relayd.since(0) and f"rcpt={to}" in remote.relayd.since(0)
    # smtpd announced the new entry on the bus (postern.queue.added) and relayd woke for it.
    assert wakeups(remote) > before


def test_queued_bytes_are_sent_unchanged(remote):
    tok = token()
    # Lines starting with dots (SMTP transparency, RFC 5321 section 4.5.2), 8-bit text, a
    # long line, an empty last line.
    raw = (f"From: <{ALICE}>\r\nTo: <x@remote.test>\r\nSubject: {tok}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           ".\r\n..two dots\r\n. space\r\nGr\u00fc\u00dfe \u2014 8-bit\r\n" + "x" * 990 + "\r\n\r\n"
           ).encode()
    remote.queue(ALICE, ["x@remote.test"], raw)
    [m] = remote.sink("127.0.0.2").wait_for(1, timeout=30)
    assert m.data == raw
    assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options]


def test_mx_preference_order_and_fallback_to_the_address(postern, remote):
    tok = token()
    remote.queue(ALICE, ["a@pref.test"], make_message(tok + "-pref", sender=ALICE, to="a@pref.test"))
    remote.queue(ALICE, ["b@fallback.test"], make_message(tok + "-fb", sender=ALICE, to="b@fallback.test"))
    # The preferred MX of pref.test (127.0.0.9) refuses connections: the next one gets it.
    [m] = remote.sink("127.0.0.5").wait_for(1, timeout=30)
    assert m.rcpts == ["a@pref.test"]
    # No MX: the domain's own address (RFC 5321 section 5.1).
    [m] = remote.sink("127.0.0.4").wait_for(1, timeout=30)
    assert m.rcpts == ["b@fallback.test"]
    # remote.test's preferred MX answers, so its second never gets anything.
    assert not remote.sink("127.0.0.3").messages
    log = remote.relayd.since(0)
    assert "127.0.0.9" in log  # the refused attempt is logged


def test_null_mx_and_unknown_domain_bounce_at_once(postern, remote):
    tok = token()
    qid = remote.queue(ALICE, ["a@nullmx.test", "b@no-such-domain.test"],
                       make_message(tok, sender=ALICE, to="a@nullmx.test"))
    wait_until(lambda: qid not in remote.queued_ids(), timeout=30, what="the message to leave the queue")
    [dsn] = wait_until(lambda: notices(postern, tok), timeout=15, what="a bounce")
    fields = {f["Final-Recipient"].split(";")[1].strip(): f for f in status_fields(dsn)}
    assert fields["a@nullmx.test"]["Status"] == "5.1.10"  # RFC 7505 section 3
    assert fields["b@no-such-domain.test"]["Status"] == "5.1.2"
    assert all(f["Action"] == "failed" for f in fields.values())
    assert dsn["From"].startswith("Mail Delivery System") and dsn["Auto-Submitted"] == "auto-replied"
    assert not remote.all_received()


def test_temporary_failure_is_retried_until_it_goes(remote):
    tok = token()
    sink = remote.sink("127.0.0.2")
    sink.tempfail(2, at="data")
    qid = remote.queue(ALICE, ["t@remote.test"], make_message(tok, sender=ALICE, to="t@remote.test"))
    [m] = sink.wait_for(1, timeout=60)
    assert tok.encode() in m.data
    assert len(sink.refused) == 2  # two attempts refused at the end of DATA
    wait_until(lambda: qid not in remote.queued_ids(), what="the message to leave the queue")
    log = remote.relayd.since(0)
    assert f'msg="deferred" queue_id=' in log and "attempt=3" in log


def test_one_refused_recipient_of_three_gets_a_bounce_for_it_alone(postern, remote):
    tok = token()
    sink = remote.sink("127.0.0.2")
    sink.rules["bad@remote.test"] = "550 5.1.1 no such user here"
    rcpts = ["good1@remote.test", "bad@remote.test", "good2@remote.test"]
    qid = remote.queue(ALICE, rcpts, make_message(tok, sender=ALICE, to=rcpts[0]))
    [m] = sink.wait_for(1, timeout=30)
    assert sorted(m.rcpts) == ["good1@remote.test", "good2@remote.test"]
    wait_until(lambda: qid not in remote.queued_ids(), what="the message to leave the queue")
    [dsn] = wait_until(lambda: notices(postern, tok), timeout=15, what="a bounce")
    [f] = status_fields(dsn)
    assert f["Final-Recipient"] == "rfc822; bad@remote.test"
    assert f["Action"] == "failed" and f["Status"] == "5.1.1"
    assert "550 5.1.1 no such user here" in f["Diagnostic-Code"]
    assert dsn["To"] == ALICE and dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    # The original comes back with it.
    assert any(tok in str(p) for p in dsn.walk() if p.get_content_type() == "message/rfc822")


def test_bounce_is_never_bounced(postern, remote):
    tok = token()
    sink = remote.sink("127.0.0.2")
    sink.rules["gone@remote.test"] = "550 5.1.1 gone"
    qid = remote.queue("", ["gone@remote.test"], make_message(tok, sender="", to="gone@remote.test"))
    wait_until(lambda: qid not in remote.queued_ids(), timeout=30, what="the message to leave the queue")
    assert not postern.messages_with(tok)
    assert not remote.queued_ids()


def test_private_mx_addresses_refused_unless_a_transport_names_them(postern, mailctl, remote):
    mailctl("config", "set", "relay.allow_private", "off")
    wait_settled(remote.relayd, {"relay.allow_private": "off"})
    tok = token()
    qid = remote.queue(ALICE, ["p@remote.test"], make_message(tok, sender=ALICE, to="p@remote.test"))
    wait_until(lambda: any("private" in (r[2] or "") for r in remote.recipient_rows(qid)), timeout=30,
               what="the recipient deferred for private addresses")
    [(_, state, reply)] = remote.recipient_rows(qid)
    assert state == "pending" and reply.startswith("451 4.4.4")
    assert not remote.all_received()
    # A transport names the address: allowed.
    mailctl("transport", "set", "remote.test", f"127.0.0.6:{remote.port}")
    [m] = remote.sink("127.0.0.6").wait_for(1, timeout=30)
    assert tok.encode() in m.data
    mailctl("transport", "del", "remote.test")
    mailctl("config", "set", "relay.allow_private", "on")
    wait_settled(remote.relayd)


def test_verify_policy_refuses_a_self_signed_peer_and_defers(postern, mailctl, remote):
    mailctl("relay", "tls-policy", "remote.test", "verify")
    tok = token()
    qid = remote.queue(ALICE, ["v@remote.test"], make_message(tok, sender=ALICE, to="v@remote.test"))
    wait_until(lambda: any("verif" in (r[2] or "") for r in remote.recipient_rows(qid)), timeout=30,
               what="the recipient deferred for the certificate")
    [(_, state, reply)] = remote.recipient_rows(qid)
    assert state == "pending" and reply.startswith("4"), reply
    assert not remote.all_received()
    # may: STARTTLS without verification, and the message goes.
    mailctl("relay", "tls-policy", "remote.test", "may")
    [m] = remote.sink("127.0.0.2").wait_for(1, timeout=30)
    assert m.tls and tok.encode() in m.data
    assert "tls=TLSv1.3" in remote.relayd.since(0) or "tls=TLSv1.2" in remote.relayd.since(0)
    mailctl("relay", "tls-policy", "remote.test", "--unset")


def test_delay_notice_goes_once_then_the_message(postern, mailctl, remote):
    mailctl("config", "set", "relay.delay_warning", "1")
    wait_settled(remote.relayd, {"relay.delay_warning": "1"})
    tok = token()
    sink = remote.sink("127.0.0.2")
    sink.tempfail(1000, at="rcpt")
    qid = remote.queue(ALICE, ["d@remote.test"], make_message(tok, sender=ALICE, to="d@remote.test"),
                       created="now() - interval '10 seconds'")
    wait_until(lambda: notices(postern, tok), timeout=30, what="a delay notice")
    # Retries go on (at least two more attempts), and no second notice comes.
    attempts = lambda: postern.sql("SELECT attempts FROM outbound_queue WHERE id = %s", (qid,))[0][0]
    first = attempts()
    wait_until(lambda: attempts() >= first + 2, timeout=30, what="two more attempts")
    [dsn] = notices(postern, tok)
    [f] = status_fields(dsn)
    assert f["Action"] == "delayed" and "Will-Retry-Until" in f
    assert dsn["Subject"].startswith("Delayed mail")
    sink.tempfail(0)
    [m] = sink.wait_for(1, timeout=30)
    assert tok.encode() in m.data
    wait_until(lambda: qid not in remote.queued_ids(), what="the message to leave the queue")
    assert len(notices(postern, tok)) == 1
    mailctl("config", "unset", "relay.delay_warning")


def test_expired_message_bounces_with_4_4_7(postern, remote):
    tok = token()
    remote.sink("127.0.0.2").tempfail(1000, at="rcpt")
    qid = remote.queue(ALICE, ["e@remote.test"], make_message(tok, sender=ALICE, to="e@remote.test"),
                       created="now() - interval '6 days'")
    wait_until(lambda: qid not in remote.queued_ids(), timeout=30, what="the message to leave the queue")
    [dsn] = wait_until(lambda: notices(postern, tok), timeout=15, what="a bounce")
    [f] = status_fields(dsn)
    assert f["Action"] == "failed" and f["Status"] == "4.4.7"


def test_queue_delete_returns_the_message_to_the_sender(postern, mailctl, remote):
    tok = token()
    remote.sink("127.0.0.2").tempfail(1000, at="rcpt")
    qid = remote.queue(ALICE, ["q@remote.test"], make_message(tok, sender=ALICE, to="q@remote.test"))
    wait_until(lambda: remote.recipient_rows(qid)[0][2], timeout=30, what="a first attempt")
    [(queue_id,)] = postern.sql("SELECT queue_id FROM outbound_queue WHERE id = %s", (qid,))
    mailctl("queue", "delete", queue_id)
    wait_until(lambda: qid not in remote.queued_ids(), timeout=30, what="the message to leave the queue")
    [dsn] = wait_until(lambda: notices(postern, tok), timeout=15, what="a bounce")
    [f] = status_fields(dsn)
    assert f["Action"] == "failed" and "administrator" in f["Diagnostic-Code"]


def test_metrics_count_results(remote):
    text = remote.metrics()
    assert 'postern_relay_recipients_total{result="delivered"}' in text
    assert 'postern_relay_replies_total{class="2xx"}' in text


def test_two_relayds_deliver_each_of_1000_messages_exactly_once(postern, remote):
    relayd2 = postern.add_relayd("relayd2", remote.env())
    wait_settled(relayd2)
    tokens = [token() for _ in range(1000)]
    postern.sql(
        "INSERT INTO outbound_queue (queue_id, sender, recipients, raw)"
        " SELECT t, %s, ARRAY['many@remote.test'], convert_to('Subject: ' || t || E'\\r\\n\\r\\nx\\r\\n', 'UTF8')"
        " FROM unnest(%s::text[]) AS t", (ALICE, tokens))
    remote.wake()
    sink = remote.sink("127.0.0.2")
    sink.wait_for(1000, timeout=300)
    wait_until(lambda: not remote.queued_ids(), timeout=60, what="the queue to be empty")
    time.sleep(1)  # anything delivered twice would arrive now
    subjects = [m.data.split(b"\r\n", 1)[0].decode() for m in sink.messages]
    assert len(subjects) == 1000 and len(set(subjects)) == 1000
    assert set(subjects) == {f"Subject: {t}" for t in tokens}
    # Both took part.
    for svc in (remote.relayd, relayd2):
        assert svc.since(svc.started_at).count('msg="delivered"') > 0
    postern.remove_service("relayd2")


def test_relayd_killed_mid_delivery_loses_nothing(postern, remote):
    tokens = [token() for _ in range(300)]
    sink = remote.sink("127.0.0.2")
    postern.sql(
        "INSERT INTO outbound_queue (queue_id, sender, recipients, raw)"
        " SELECT t, %s, ARRAY['k@remote.test'], convert_to('Subject: ' || t || E'\\r\\n\\r\\nx\\r\\n', 'UTF8')"
        " FROM unnest(%s::text[]) AS t", (ALICE, tokens))
    remote.wake()
    sink.wait_for(20, timeout=120)
    postern.stop_service("relayd", kill=True)
    got = len(sink.messages)
    assert got < 300, "everything went before the kill; the test proves nothing"
    postern.start_service("relayd")
    sink.wait_for(300, timeout=300)
    wait_until(lambda: not remote.queued_ids(), timeout=60, what="the queue to be empty")
    subjects = {m.data.split(b"\r\n", 1)[0].decode() for m in sink.messages}
    assert subjects == {f"Subject: {t}" for t in tokens}
