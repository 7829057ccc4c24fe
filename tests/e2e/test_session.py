"""The SMTP session: greeting, EHLO/HELO, the small commands, command order, syntax errors,
STARTTLS and implicit TLS on each listener."""

import subprocess

import pytest

from support import ALICE, BOB, SMTP_HOSTNAME, check_reply

AUTH_MECHANISMS = {"PLAIN", "LOGIN", "SCRAM-SHA-256"}


def test_every_listener_greets_with_220(smtp):
    for name in ("mx", "submission", "smtps"):
        c = smtp(name)
        check_reply(c.greeting, 220, context=f"{name} greeting")


def test_greeting_and_ehlo_name_the_server(smtp):
    # RFC 5321 4.2 and 4.1.1.1: the greeting and the first EHLO line start with the domain.
    c = smtp("mx")
    assert c.greeting.lines[0].split()[0] == SMTP_HOSTNAME
    assert c.ehlo().lines[0].split()[0] == SMTP_HOSTNAME


def test_ehlo_on_mx_before_tls(smtp):
    c = smtp("mx")
    caps = c.ehlo().keywords()
    for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"):
        assert ext in caps, f"EHLO lacks {ext}: {caps}"
    assert caps.get("SIZE") and int(caps["SIZE"][0]) > 0, caps
    assert "AUTH" not in caps, "AUTH offered before TLS"


def test_ehlo_on_submission_before_and_after_starttls(smtp):
    c = smtp("submission")
    caps = c.ehlo().keywords()
    assert "STARTTLS" in caps
    assert "AUTH" not in caps, "AUTH offered before TLS"
    c.starttls()
    caps = c.ehlo().keywords()
    assert "STARTTLS" not in caps, "STARTTLS offered inside TLS"
    assert set(caps.get("AUTH", [])) == AUTH_MECHANISMS, caps
    for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"):
        assert ext in caps


def test_ehlo_on_implicit_tls(smtp):
    c = smtp("smtps")
    caps = c.ehlo().keywords()
    assert "STARTTLS" not in caps
    assert set(caps.get("AUTH", [])) == AUTH_MECHANISMS, caps


def test_helo_starts_a_session(smtp):
    c = smtp("mx")
    c.expect("HELO client.test", 250)
    c.expect(f"MAIL FROM:<{BOB}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)


def test_small_commands(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect("NOOP", 250)
    c.expect("RSET", 250)
    c.expect("HELP", 214)
    c.expect("XYZZY", 500, "5.5.1")
    c.expect("NOOP", 250)
    c.expect("QUIT", 221)
    assert c.closed_by_server(timeout=30)


def test_vrfy_reveals_nothing(smtp):
    c = smtp("mx")
    c.ehlo()
    known = c.expect(f"VRFY {ALICE}", 252)
    unknown = c.expect("VRFY nobody-here@example.test", 252)
    assert known.text == unknown.text


def test_replies_carry_enhanced_status_codes(smtp):
    # RFC 2034: once ENHANCEDSTATUSCODES is announced, replies carry a code of their class.
    c = smtp("mx")
    c.ehlo()
    for line in ("NOOP", "RSET", "XYZZY", f"MAIL FROM:<{BOB}>", f"RCPT TO:<{ALICE}>",
                 "RCPT TO:<nobody-here@example.test>", "RSET", "DATA", "QUIT"):
        r = c.cmd(line)
        assert r.enh and r.enh[0] == str(r.code)[0], f"{line}: {r!r}"


@pytest.mark.parametrize("script", [
    # (command, expected code) in order; the last one is the one out of order
    [("MAIL FROM:<bob@example.test>", 503)],
    [("EHLO client.test", 250), ("RCPT TO:<alice@example.test>", 503)],
    [("EHLO client.test", 250), ("DATA", 503)],
    # RFC 5321 3.3: DATA without (accepted) recipients may get 503 or 554.
    [("EHLO client.test", 250), ("MAIL FROM:<bob@example.test>", 250), ("DATA", (503, 554))],
    [("EHLO client.test", 250), ("MAIL FROM:<bob@example.test>", 250),
     ("MAIL FROM:<bob@example.test>", 503)],
    [("EHLO client.test", 250), ("MAIL FROM:<bob@example.test>", 250),
     ("RCPT TO:<alice@example.test>", 250), ("RSET", 250), ("DATA", (503, 554))],
], ids=["mail-before-ehlo", "rcpt-before-mail", "data-before-mail", "data-before-rcpt",
        "nested-mail", "data-after-rset"])
def test_commands_out_of_order(smtp, script):
    c = smtp("mx")
    for line, code in script[:-1]:
        c.expect(line, code)
    line, code = script[-1]
    c.expect(line, code, "5.5.1")
    c.expect("NOOP", 250)


@pytest.mark.parametrize("line", [
    "EHLO",
    "HELO",
    "MAIL FROM:<bob@example.test",
    "MAIL FROM bob@example.test",
    "MAIL TO:<bob@example.test>",
])
def test_syntax_errors_get_501(smtp, line):
    c = smtp("mx")
    if not line.startswith(("EHLO", "HELO")):
        c.ehlo()
    c.expect(line, 501)
    c.expect("NOOP", 250)


def test_rcpt_syntax_error_gets_501(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{BOB}>", 250)
    c.expect("RCPT TO:<alice@example.test", 501)
    c.expect("RCPT TO:alice", 501)
    c.expect(f"RCPT TO:<{ALICE}>", 250)


def test_starttls_with_a_parameter_is_refused(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect("STARTTLS now", 501)
    c.expect("NOOP", 250)


def test_starttls_twice_is_refused(smtp):
    c = smtp("mx")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.expect("STARTTLS", "5")
    c.expect("NOOP", 250)


def test_no_starttls_on_implicit_tls(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("STARTTLS", "5")


def test_starttls_discards_pipelined_plaintext(smtp):
    # Commands sent after STARTTLS in the same packet must not be answered inside TLS
    # (CVE-2011-0411 and friends).
    c = smtp("mx")
    c.ehlo()
    c.send(b"STARTTLS\r\nRSET\r\n")
    c.expect_reply(220, context="STARTTLS")
    c._wrap()
    # Were RSET carried over, its 250 would come before HELP's 214.
    c.expect("HELP", 214)
    c.ehlo()


def test_smtplib_starttls_and_transaction(postern):
    with postern.smtplib_client("mx") as s:
        s.ehlo()
        code, _ = s.starttls(context=postern.tls_context())
        assert code == 220
        s.ehlo()
        assert s.has_extn("size") and not s.has_extn("starttls")
        assert s.noop()[0] == 250


def s_client(postern, port, *extra, stdin="QUIT\n"):
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", str(postern.cert), "-verify_return_error", "-brief", "-crlf", *extra],
        input=stdin, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("name,extra", [
    ("mx", ["-starttls", "smtp"]),
    ("submission", ["-starttls", "smtp"]),
    ("smtps", []),
])
def test_openssl_s_client_negotiates_tls12_or_newer(postern, name, extra):
    rc, out = s_client(postern, postern.port(name), *extra)
    assert rc == 0, out
    assert "Verification: OK" in out, out
    assert "CN = localhost" in out, out
    assert ("Protocol version: TLSv1.3" in out or "Protocol version: TLSv1.2" in out), out


@pytest.mark.parametrize("name,extra", [
    ("mx", ["-starttls", "smtp"]),
    ("smtps", []),
])
def test_tls_below_1_2_is_refused(postern, name, extra):
    rc, out = s_client(postern, postern.port(name), *extra, "-tls1_1",
                       "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0, out
    assert "Protocol version: TLSv1.1" not in out, out


def test_server_keeps_serving_after_client_vanishes(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{BOB}>", 250)
    c.send(b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: half a mess")
    c.sock.close()
    c.sock = None
    d = smtp("mx")
    d.ehlo()
    d.expect("NOOP", 250)
