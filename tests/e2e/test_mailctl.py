"""mailctl, the administrator's tool: listings (human and --json), clear refusals of bad
input, idempotent migrations, an audit record for every change, and changes that reach
smtpd without a restart."""

import json

import pytest

from support import ALICE, BOB, DOMAIN, wait_until


def test_migrate_twice_changes_nothing(mailctl):
    mailctl("migrate")
    mailctl("migrate")


def test_domain_list(mailctl):
    assert DOMAIN in mailctl("domain", "list").stdout
    listed = json.loads(mailctl("--json", "domain", "list").stdout)
    assert DOMAIN in json.dumps(listed)


def test_user_list(mailctl):
    out = mailctl("user", "list").stdout
    assert ALICE in out and BOB in out
    listed = json.loads(mailctl("--json", "user", "list").stdout)
    assert ALICE in json.dumps(listed) and BOB in json.dumps(listed)


def test_secrets_are_not_passwords(sql):
    # One salted PBKDF2-SHA-256 secret (RFC 5803 form) per user, never the password.
    [(secret,)] = sql("SELECT secret FROM users WHERE address = %s", (ALICE,))
    assert secret.startswith("SCRAM-SHA-256$"), secret
    assert "Alice-pw" not in secret


@pytest.mark.parametrize("args", [
    ["domain", "add", "Not A Domain"],
    ["domain", "add", ""],
    ["user", "add", "no-at-sign", "--password-stdin"],
    ["user", "add", "someone@not-hosted.example", "--password-stdin"],
    ["user", "add", ALICE, "--password-stdin"],
    ["relay", "mode", "sometimes"],
    ["relay", "allow", "not-a-network"],
    ["relay", "allow", "300.1.2.3/32"],
    ["relay", "allow", "10.0.0.0/33"],
    ["config", "set", "auth.sender_must_match", "maybe"],
    ["config", "set", "smtp.max_message_size", "-5"],
    ["config", "set", "no.such.key", "1"],
    ["no-such-command"],
])
def test_bad_input_is_refused_clearly(mailctl, sql, args):
    before = sql("SELECT count(*) FROM audit_log")[0][0]
    r = mailctl(*args, input="Some-pw-9\n", check=False)
    assert r.returncode != 0, f"mailctl {args} succeeded: {r.stdout}"
    assert r.stderr.strip(), f"mailctl {args} failed without saying why"
    assert sql("SELECT count(*) FROM audit_log")[0][0] == before


def test_relay_list_takes_ipv4_and_ipv6(mailctl, sql):
    mailctl("relay", "allow", "192.0.2.0/24")
    mailctl("relay", "allow", "2001:db8::/32")
    mailctl("relay", "allow", "198.51.100.7")
    out = mailctl("relay", "list").stdout
    for net in ("192.0.2.0/24", "2001:db8::/32", "198.51.100.7"):
        assert net in out, out
    listed = json.dumps(json.loads(mailctl("--json", "relay", "list").stdout))
    assert "2001:db8::/32" in listed
    nets = {n for (n,) in sql("SELECT network::text FROM relay_networks")}
    assert {"192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"} <= nets
    mailctl("relay", "deny", "2001:db8::/32")
    assert "2001:db8::/32" not in mailctl("relay", "list").stdout


def test_config_show(mailctl):
    mailctl("config", "set", "smtp.max_recipients", "42")
    assert "42" in mailctl("config", "show").stdout
    assert "42" in json.dumps(json.loads(mailctl("--json", "config", "show").stdout))


def test_changes_are_audited(mailctl, sql, new_user):
    before = sql("SELECT coalesce(max(id), 0) FROM audit_log")[0][0]
    address = new_user()
    mailctl("relay", "mode", "none")
    mailctl("config", "set", "smtp.max_recipients", "50")
    rows = sql("SELECT action, detail FROM audit_log WHERE id > %s ORDER BY id", (before,))
    assert len(rows) >= 3, rows
    assert any(address in f"{a} {d}" for a, d in rows), rows
    assert any("smtp.max_recipients" in f"{a} {d}" for a, d in rows), rows


def test_deleted_user_no_longer_receives(postern, mailctl, new_user):
    address = new_user()
    mailctl("user", "del", address)

    def refused():
        with postern.connect("mx") as c:
            c.ehlo()
            c.expect("MAIL FROM:<sender@outside.example>", 250)
            return c.cmd(f"RCPT TO:<{address}>").code == 550

    wait_until(refused, what=f"RCPT {address} refused")
    assert address not in mailctl("user", "list").stdout


def test_new_domain_is_local_at_once(postern, mailctl):
    mailctl("domain", "add", "second.example")
    mailctl("user", "add", "carol@second.example", "--password-stdin", input="Carol-pw-4\n")

    def accepted():
        with postern.connect("mx") as c:
            c.ehlo()
            c.expect("MAIL FROM:<sender@outside.example>", 250)
            return c.cmd("RCPT TO:<carol@SECOND.example>").code == 250

    wait_until(accepted, what="the new domain to be local")
