"""mailctl's side of relayd: the outbound queue (queue list|show|retry|delete), the transports
(transport set|del|list), the TLS policies (relay tls-policy) and the relay.* settings.

Messages are queued with SQL as postern_deliver queues them (the trigger of migration 10 fills
outbound_recipients); each test removes what it queued, and the transports and policies it
set. No relayd runs here, so the queue stays as the tests leave it."""

import json
import re
import uuid

import psycopg2
import pytest

from support import ALICE, DOMAIN

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
LEASE_OWNER = "relayd-e2e-test"


@pytest.fixture
def queue(sql):
    """queue(sender, recipients, next_in=None, lease_s=None, body=...) -> queue id of a new
    outbound message (due now unless next_in seconds; leased to LEASE_OWNER for lease_s
    seconds); every message queued is deleted after the test."""
    made = []

    def add(sender, recipients, next_in=None, lease_s=None, subject="queued for a test",
            body="SECRET-BODY-LINE"):
        qid = "E2E" + uuid.uuid4().hex[:9].upper()
        raw = (f"From: <{sender or 'mailer-daemon@' + DOMAIN}>\r\n"
               f"To: {', '.join(recipients)}\r\n"
               f"Subject: {subject} {qid}\r\n"
               f"Message-ID: <{qid}@{DOMAIN}>\r\n"
               f"\r\n{body}\r\n").encode()
        sql("INSERT INTO outbound_queue (queue_id, sender, recipients, raw)"
            " VALUES (%s, %s, %s, %s)", (qid, sender, recipients, psycopg2.Binary(raw)))
        made.append(qid)
        if next_in is not None:
            sql("UPDATE outbound_queue SET next_attempt = now() + make_interval(secs => %s)"
                " WHERE queue_id = %s", (next_in, qid))
        if lease_s is not None:
            sql("UPDATE outbound_queue SET lease_owner = %s,"
                " lease_until = now() + make_interval(secs => %s), attempts = attempts + 1,"
                " last_attempt = now() WHERE queue_id = %s", (LEASE_OWNER, lease_s, qid))
        return qid

    add.raw = lambda qid: sql("SELECT raw FROM outbound_queue WHERE queue_id = %s", (qid,))[0][0]
    yield add
    if made:
        sql("DELETE FROM outbound_queue WHERE queue_id = ANY(%s)", (made,))


def audit_since(sql, before):
    return sql("SELECT action, detail FROM audit_log WHERE id > %s ORDER BY id", (before,))


def audit_mark(sql):
    return sql("SELECT coalesce(max(id), 0) FROM audit_log")[0][0]


def line_of(out, qid):
    lines = [ln for ln in out.splitlines() if qid in ln]
    assert len(lines) == 1, out
    return lines[0]


def messages(mailctl, *args):
    return {m["queue_id"]: m for m in json.loads(mailctl("--json", "queue", *args).stdout)["messages"]}


def due(sql, qid):
    return sql("SELECT next_attempt <= now() FROM outbound_queue WHERE queue_id = %s", (qid,))[0][0]


# --- queue list, queue show ------------------------------------------------------------------

def test_empty_queue_says_so(postern, mailctl, sql):
    sql("DELETE FROM outbound_queue")  # what earlier tests left (no relayd runs here)
    assert "empty" in mailctl("queue", "list").stdout
    assert json.loads(mailctl("--json", "queue", "list").stdout) == {"messages": []}


def test_list_shows_each_message(mailctl, sql, queue):
    a = queue(ALICE, ["one@far.example", "two@far.example", "three@near.example",
                      "four@near.example"], next_in=3600)
    sql("UPDATE outbound_recipients r SET state = 'delivered', last_reply = '250 2.0.0 ok'"
        " FROM outbound_queue q WHERE q.id = r.message_id AND q.queue_id = %s"
        " AND r.recipient = 'three@near.example'", (a,))
    sql("UPDATE outbound_recipients r SET state = 'bounced', last_reply = '550 5.1.1 no such user'"
        " FROM outbound_queue q WHERE q.id = r.message_id AND q.queue_id = %s"
        " AND r.recipient = 'four@near.example'", (a,))
    sql("UPDATE outbound_queue SET attempts = 2, last_error = %s WHERE queue_id = %s",
        ("451 4.7.1 greylisted \x1b[31mred", a))
    b = queue("", ["postmaster@far.example"])
    c = queue(ALICE, ["held@far.example"], lease_s=600)

    out = mailctl("queue", "list").stdout
    la = line_of(out, a)
    assert ALICE in la and "one@far.example, two@far.example" in la, la
    assert "1 delivered" in la and "1 bounced" in la, la
    assert "three@near.example" not in la and "four@near.example" not in la, la
    assert re.search(r"\s2\s", la) and re.search(RFC3339, la), la
    assert "451 4.7.1 greylisted" in la and "\x1b" not in la, la
    lb = line_of(out, b)
    assert "<>" in lb and re.search(r"\snow\s", lb), lb
    lc = line_of(out, c)
    assert re.search(rf"in progress \(lease held by {LEASE_OWNER} until {RFC3339}\)", lc), lc
    assert re.search(r"\d+ messages? in the outbound queue", out), out

    listed = messages(mailctl, "list")
    ma, mb, mc = listed[a], listed[b], listed[c]
    assert ma["sender"] == ALICE and ma["pending_recipients"] == ["one@far.example",
                                                                  "two@far.example"]
    assert (ma["pending"], ma["delivered"], ma["bounced"], ma["attempts"]) == (2, 1, 1, 2)
    assert ma["due"] is False and re.fullmatch(RFC3339, ma["next_attempt"])
    assert ma["lease_owner"] is None and ma["last_reply"].startswith("451 4.7.1")
    assert ma["age_seconds"] >= 0 and re.fullmatch(RFC3339, ma["created_at"])
    assert mb["sender"] == "" and mb["due"] is True and mb["last_reply"] is None
    assert mc["lease_owner"] == LEASE_OWNER and re.fullmatch(RFC3339, mc["lease_until"])


def test_show_tells_everything_but_the_body(mailctl, sql, queue):
    qid = queue(ALICE, ["x@far.example", "y@far.example"], next_in=600)
    sql("UPDATE outbound_recipients r SET state = 'delivered', last_reply = '250 2.0.0 queued',"
        " remote = 'mx.far.example[192.0.2.1]:25' FROM outbound_queue q"
        " WHERE q.id = r.message_id AND q.queue_id = %s AND r.recipient = 'x@far.example'",
        (qid,))
    sql("UPDATE outbound_recipients r SET last_reply = '451 4.3.0 later',"
        " remote = 'mx.far.example[192.0.2.1]:25' FROM outbound_queue q"
        " WHERE q.id = r.message_id AND q.queue_id = %s AND r.recipient = 'y@far.example'",
        (qid,))
    sql("UPDATE outbound_queue SET attempts = 1, last_attempt = now(), warned_at = now(),"
        " last_error = '451 4.3.0 later' WHERE queue_id = %s", (qid,))
    size = len(queue.raw(qid))

    out = mailctl("queue", "show", qid).stdout
    assert re.search(rf"queue id:\s+{qid}", out), out
    assert re.search(rf"sender:\s+{re.escape(ALICE)}", out), out
    assert re.search(rf"created:\s+{RFC3339}", out), out
    assert re.search(rf"size:\s+{size} bytes", out), out
    assert re.search(rf"attempts:\s+1 \(last {RFC3339}\)", out), out
    assert re.search(rf"next try:\s+{RFC3339}", out), out
    assert re.search(r"lease:\s+none", out) and re.search(r"warned:\s+delay notice sent", out)
    assert re.search(r"x@far\.example\s+delivered\s+mx\.far\.example\[192\.0\.2\.1\]:25", out), out
    assert re.search(r"y@far\.example\s+pending\s+mx\.far\.example.*451 4\.3\.0 later", out), out
    assert f"Subject: queued for a test {qid}" in out and f"Message-ID: <{qid}@" in out, out
    assert "SECRET-BODY-LINE" not in out, out

    [m] = json.loads(mailctl("--json", "queue", "show", qid).stdout)["messages"]
    assert m["queue_id"] == qid and m["sender"] == ALICE and m["size"] == size
    assert m["attempts"] == 1 and m["due"] is False and m["lease_live"] is False
    assert re.fullmatch(RFC3339, m["warned_at"]) and m["cancelled_by"] is None
    states = {r["recipient"]: (r["state"], r["remote"], r["last_reply"]) for r in m["recipients"]}
    assert states == {"x@far.example": ("delivered", "mx.far.example[192.0.2.1]:25",
                                        "250 2.0.0 queued"),
                      "y@far.example": ("pending", "mx.far.example[192.0.2.1]:25",
                                        "451 4.3.0 later")}
    assert m["headers"].startswith("From: ") and f"Subject: queued for a test {qid}" in m["headers"]
    assert "SECRET-BODY-LINE" not in m["headers"] and m["headers_truncated"] is False


def test_show_of_a_leased_message_names_the_holder(mailctl, queue):
    qid = queue("", ["z@far.example"], lease_s=300)
    out = mailctl("queue", "show", qid).stdout
    assert re.search(rf"next try:\s+in progress \(lease held by {LEASE_OWNER} until {RFC3339}\)",
                     out), out
    assert re.search(rf"lease:\s+held by {LEASE_OWNER}", out), out
    assert "<>" in out


# --- queue retry ---------------------------------------------------------------------------------

def test_retry_makes_a_message_due_and_wakes_relayd(mailctl, sql, nats, pb, queue):
    qid = queue(ALICE, ["later@far.example"], next_in=7200)
    assert not due(sql, qid)
    before = audit_mark(sql)
    sub = nats("postern.config.changed", pb.ConfigChanged)
    r = mailctl("queue", "retry", qid)
    assert qid in r.stdout and "due now" in r.stdout, r.stdout
    assert due(sql, qid)
    sub.wait_for(lambda ev: ev.what == "queue")
    assert any(a == "queue retry" and qid in d for a, d in audit_since(sql, before))


def test_retry_json_and_a_due_message_keeps_its_place(mailctl, sql, queue):
    qid = queue(ALICE, ["early@far.example"])
    sql("UPDATE outbound_queue SET next_attempt = now() - interval '1 hour' WHERE queue_id = %s",
        (qid,))
    out = json.loads(mailctl("--json", "queue", "retry", qid).stdout)
    assert out["ok"] is True and out["action"] == "queue retry" and out["queue_id"] == qid
    assert out["retried"] == 1 and out["in_progress"] == []
    # least(next_attempt, now()): a message due for an hour is not moved behind newer ones.
    assert sql("SELECT next_attempt < now() - interval '30 minutes' FROM outbound_queue"
               " WHERE queue_id = %s", (qid,))[0][0]


def test_retry_leaves_a_live_lease_alone(mailctl, sql, queue):
    qid = queue(ALICE, ["busy@far.example"], next_in=3600, lease_s=600)
    [(next_before,)] = sql("SELECT next_attempt FROM outbound_queue WHERE queue_id = %s", (qid,))
    before = audit_mark(sql)
    r = mailctl("queue", "retry", qid)
    assert "being delivered right now" in r.stdout and LEASE_OWNER in r.stdout, r.stdout
    assert sql("SELECT next_attempt FROM outbound_queue WHERE queue_id = %s",
               (qid,))[0][0] == next_before
    assert audit_since(sql, before) == []


def test_retry_all(mailctl, sql, queue):
    a = queue(ALICE, ["a@far.example"], next_in=3600)
    b = queue("", ["b@far.example"], next_in=7200)
    c = queue(ALICE, ["c@far.example"], next_in=3600, lease_s=600)
    before = audit_mark(sql)
    out = json.loads(mailctl("--json", "queue", "retry", "--all").stdout)
    assert out["all"] is True and out["queue_id"] is None and out["retried"] >= 2
    assert [p["lease_owner"] for p in out["in_progress"] if p["queue_id"] == c] == [LEASE_OWNER]
    assert due(sql, a) and due(sql, b) and not due(sql, c)
    assert [a for a, _ in audit_since(sql, before)] == ["queue retry"]


# --- queue delete --------------------------------------------------------------------------------

def test_delete_returns_the_message_to_its_sender(mailctl, sql, nats, pb, queue):
    qid = queue(ALICE, ["gone@far.example", "also@far.example"], next_in=3600)
    before = audit_mark(sql)
    sub = nats("postern.config.changed", pb.ConfigChanged)
    r = mailctl("queue", "delete", qid)
    assert "relayd will return it to the sender" in r.stdout and ALICE in r.stdout, r.stdout
    # Cancelled by whoever did it: the audit row's actor (the login running mailctl, or
    # web:NAME from ADDRESS for the console).
    [(actor,)] = sql("SELECT actor FROM audit_log WHERE action = 'queue delete'"
                     " ORDER BY id DESC LIMIT 1")
    assert sql("SELECT cancelled_by, next_attempt <= now() FROM outbound_queue"
               " WHERE queue_id = %s", (qid,)) == [(actor, True)]
    sub.wait_for(lambda ev: ev.what == "queue")
    assert any(a == "queue delete" and qid in d for a, d in audit_since(sql, before))
    assert f"cancelled by {actor}" in line_of(mailctl("queue", "list").stdout, qid)
    # A second delete changes nothing and says so.
    again = json.loads(mailctl("--json", "queue", "delete", qid).stdout)
    assert again["changed"] is False
    assert len(audit_since(sql, before)) == 1


def test_delete_silent_removes_it_without_a_notice(mailctl, sql, queue):
    qid = queue(ALICE, ["quiet@far.example"])
    [(mid,)] = sql("SELECT id FROM outbound_queue WHERE queue_id = %s", (qid,))
    before = audit_mark(sql)
    out = json.loads(mailctl("--json", "queue", "delete", qid, "--silent").stdout)
    assert out["silent"] is True and out["changed"] is True and out["returned_to_sender"] is False
    assert sql("SELECT count(*) FROM outbound_queue WHERE queue_id = %s", (qid,)) == [(0,)]
    assert sql("SELECT count(*) FROM outbound_recipients WHERE message_id = %s", (mid,)) == [(0,)]
    assert any(a == "queue delete" and qid in d and "silent" in d
               for a, d in audit_since(sql, before))


def test_delete_of_a_leased_message(mailctl, sql, queue):
    held = queue(ALICE, ["held@far.example"], lease_s=600)
    r = mailctl("queue", "delete", held)
    assert "relayd will return it to the sender" in r.stdout, r.stdout
    assert "being delivered right now" in r.stdout and LEASE_OWNER in r.stdout, r.stdout
    assert sql("SELECT cancelled_by FROM outbound_queue WHERE queue_id = %s", (held,)) == sql(
        "SELECT actor FROM audit_log WHERE action = 'queue delete' ORDER BY id DESC LIMIT 1")
    r = mailctl("queue", "delete", "--silent", held)
    assert "deleted anyway" in r.stdout and LEASE_OWNER in r.stdout, r.stdout
    assert sql("SELECT count(*) FROM outbound_queue WHERE queue_id = %s", (held,)) == [(0,)]


def test_delete_of_a_bounce_returns_nothing(mailctl, queue):
    qid = queue("", ["someone@far.example"])
    r = mailctl("queue", "delete", qid)
    assert "null sender" in r.stdout and "return it to the sender" not in r.stdout, r.stdout


@pytest.mark.parametrize("args, why", [
    (["queue", "show", "NOSUCHID42"], "no message with queue id NOSUCHID42"),
    (["queue", "retry", "NOSUCHID42"], "no message with queue id NOSUCHID42"),
    (["queue", "delete", "NOSUCHID42"], "no message with queue id NOSUCHID42"),
    (["queue", "delete", "NOSUCHID42", "--silent"], "no message with queue id NOSUCHID42"),
    (["queue", "show", "has space"], "invalid queue id"),
    (["queue", "retry", "x" * 65], "invalid queue id"),
    (["queue", "delete", "bad\x01id"], "invalid queue id"),
    (["queue", "retry"], "missing argument"),
    (["queue", "retry", "ABC", "--all"], "not both"),
    (["queue", "delete", "ABC", "DEF"], "one queue id at a time"),
    (["queue", "delete", "ABC", "--all"], "unknown option --all"),
    (["queue", "show"], "missing argument"),
])
def test_bad_queue_commands_are_refused(mailctl, sql, args, why):
    before = audit_mark(sql)
    r = mailctl(*args, check=False)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert why in r.stderr, r.stderr
    assert audit_since(sql, before) == []


# --- transports ------------------------------------------------------------------------------

@pytest.fixture
def clean_relay_tables(sql):
    yield
    sql("DELETE FROM relay_transports WHERE domain LIKE '%%.e2e.example' OR domain = '*'")
    sql("DELETE FROM relay_tls_policy WHERE domain LIKE '%%.e2e.example' OR domain = '*'")


def test_transport_set_list_del(mailctl, sql, nats, pb, clean_relay_tables):
    before = audit_mark(sql)
    sub = nats("postern.config.changed", pb.ConfigChanged)
    r = mailctl("transport", "set", "Smart.E2E.example", "SMTP.Relay.example:2525")
    assert "smart.e2e.example" in r.stdout and "smtp.relay.example:2525" in r.stdout, r.stdout
    sub.wait_for(lambda ev: ev.what == "transport")
    mailctl("transport", "set", "v6.e2e.example", "[2001:DB8:0::25]:25")
    mailctl("transport", "set", "v4.e2e.example", "127.0.0.1:10025")
    mailctl("transport", "set", "*", "smarthost.example:587")
    # (a compose stack has a transport of its own for example.org: only this test's rows)
    assert sql("SELECT domain, host, port FROM relay_transports"
               " WHERE domain LIKE '%%.e2e.example' OR domain = '*' ORDER BY domain") == [
        ("*", "smarthost.example", 587), ("smart.e2e.example", "smtp.relay.example", 2525),
        ("v4.e2e.example", "127.0.0.1", 10025), ("v6.e2e.example", "2001:db8::25", 25)]

    out = mailctl("transport", "list").stdout
    assert "[2001:db8::25]:25" in out and "127.0.0.1:10025" in out, out
    assert out.strip().splitlines()[-1].startswith("*"), out
    listed = [t for t in json.loads(mailctl("--json", "transport", "list").stdout)["transports"]
              if t["domain"].endswith(".e2e.example") or t["domain"] == "*"]
    assert {"domain": "v6.e2e.example", "host": "2001:db8::25", "port": 25} == {
        k: v for k, v in listed[2].items() if k in ("domain", "host", "port")}

    again = json.loads(mailctl("--json", "transport", "set", "v4.e2e.example",
                               "127.0.0.1:10025").stdout)
    assert again["changed"] is False
    moved = json.loads(mailctl("--json", "transport", "set", "v4.e2e.example",
                               "127.0.0.2:10025").stdout)
    assert moved["changed"] is True and moved["previous"] == "127.0.0.1:10025"

    mailctl("transport", "del", "V6.e2e.example")
    mailctl("transport", "del", "*")
    assert "v6.e2e.example" not in mailctl("transport", "list").stdout
    r = mailctl("transport", "del", "v6.e2e.example", check=False)
    assert r.returncode == 1 and "no transport for v6.e2e.example" in r.stderr, r.stderr
    actions = [a for a, _ in audit_since(sql, before)]
    assert actions.count("transport set") == 5 and actions.count("transport del") == 2, actions


@pytest.mark.parametrize("domain, dest, why", [
    ("x.e2e.example", "relay.example:0", "invalid port"),
    ("x.e2e.example", "relay.example:65536", "invalid port"),
    ("x.e2e.example", "relay.example:smtp", "invalid port"),
    ("x.e2e.example", "relay.example", "missing port"),
    ("x.e2e.example", "relay.example:", "missing port"),
    ("x.e2e.example", ":25", "missing host"),
    ("x.e2e.example", "bad_host.example:25", "invalid host name"),
    ("x.e2e.example", "300.1.2.3:25", "not an IPv4 address"),
    ("x.e2e.example", "2001:db8::1:25", "in brackets"),
    ("x.e2e.example", "[2001:db8::zz]:25", "not an IPv6 address"),
    ("x.e2e.example", "[2001:db8::1]", "missing port"),
    ("x.e2e.example", "[2001:db8::1:25", "missing ']'"),
    (DOMAIN, "relay.example:25", f"{DOMAIN} is hosted here"),
    (DOMAIN.upper(), "relay.example:25", f"{DOMAIN} is hosted here"),
    ("not a domain", "relay.example:25", "invalid domain name"),
    ("**", "relay.example:25", "invalid domain name"),
])
def test_bad_transports_are_refused(mailctl, sql, domain, dest, why):
    before = audit_mark(sql)
    r = mailctl("transport", "set", domain, dest, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert why in r.stderr, r.stderr
    assert audit_since(sql, before) == []
    assert sql("SELECT count(*) FROM relay_transports WHERE domain = lower(%s)", (domain,)) == [(0,)]


# --- TLS policies --------------------------------------------------------------------------------

def test_tls_policy_set_list_unset(mailctl, sql, nats, pb, clean_relay_tables):
    before = audit_mark(sql)
    sub = nats("postern.config.changed", pb.ConfigChanged)
    r = mailctl("relay", "tls-policy", "Bank.E2E.example", "VERIFY")
    assert "bank.e2e.example" in r.stdout and "verify" in r.stdout, r.stdout
    sub.wait_for(lambda ev: ev.what == "tls-policy")
    mailctl("relay", "tls-policy", "*", "encrypt")
    assert sql("SELECT domain, policy FROM relay_tls_policy"
               " WHERE domain LIKE '%%.e2e.example' OR domain = '*' ORDER BY domain") == [
        ("*", "encrypt"), ("bank.e2e.example", "verify")]

    out = mailctl("relay", "tls-policy").stdout
    assert re.search(r"bank\.e2e\.example\s+verify", out), out
    assert "without a policy of its own: encrypt" in out, out
    listed = json.loads(mailctl("--json", "relay", "tls-policy").stdout)
    assert listed["default"] == "encrypt"
    assert {p["domain"]: p["policy"] for p in listed["tls_policies"]} == {
        "*": "encrypt", "bank.e2e.example": "verify"}

    same = json.loads(mailctl("--json", "relay", "tls-policy", "bank.e2e.example", "verify").stdout)
    assert same["changed"] is False
    mailctl("relay", "tls-policy", "*", "--unset")
    gone = json.loads(mailctl("--json", "relay", "tls-policy", "*", "--unset").stdout)
    assert gone["changed"] is False
    listed = json.loads(mailctl("--json", "relay", "tls-policy").stdout)
    assert listed["default"] == "may" and len(listed["tls_policies"]) == 1
    actions = [a for a, _ in audit_since(sql, before)]
    assert actions == ["relay tls-policy"] * 3, actions


@pytest.mark.parametrize("args, why", [
    (["x.e2e.example", "sometimes"], "unknown TLS policy 'sometimes'"),
    (["x.e2e.example"], "missing policy"),
    (["x.e2e.example", "verify", "--unset"], "not both"),
    (["--unset"], "--unset needs a domain"),
    (["x.e2e.example", "verify", "extra"], "too many arguments"),
    ([DOMAIN, "verify"], f"{DOMAIN} is hosted here"),
    (["bad_domain", "verify"], "invalid domain name"),
])
def test_bad_tls_policies_are_refused(mailctl, sql, args, why):
    before = audit_mark(sql)
    r = mailctl("relay", "tls-policy", *args, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert why in r.stderr, r.stderr
    assert audit_since(sql, before) == []


# --- settings ------------------------------------------------------------------------------------

RELAY_DEFAULTS = {
    "relay.max_lifetime": "432000", "relay.delay_warning": "14400", "relay.retry_min": "300",
    "relay.retry_max": "14400", "relay.lease": "300", "relay.destination_concurrency": "4",
    "relay.concurrency": "50", "relay.allow_private": "off",
}


def test_relay_settings_are_known(mailctl):
    shown = {s["key"]: s for s in json.loads(mailctl("--json", "config", "show").stdout)["settings"]}
    for key, default in RELAY_DEFAULTS.items():
        assert shown[key]["default"] == default and shown[key]["value"] == default, shown[key]
    text = mailctl("config", "show").stdout
    assert all(key in text for key in RELAY_DEFAULTS), text
    assert all(key in mailctl("--help").stdout for key in RELAY_DEFAULTS)


@pytest.mark.parametrize("key, bad, good", [
    ("relay.max_lifetime", "59", "60"),
    ("relay.delay_warning", "-1", "0"),
    ("relay.retry_min", "0", "1"),
    ("relay.lease", "4", "3600"),
    ("relay.lease", "3601", "5"),
    ("relay.destination_concurrency", "101", "100"),
    ("relay.concurrency", "10001", "1"),
    ("relay.allow_private", "yes", "on"),
])
def test_relay_settings_are_checked(mailctl, key, bad, good):
    r = mailctl("config", "set", key, "--", bad, check=False)
    assert r.returncode == 1 and f"invalid value for {key}" in r.stderr, r.stderr
    mailctl("config", "set", key, good)
    mailctl("config", "unset", key)
