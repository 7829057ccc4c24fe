"""SMTP AUTH: PLAIN, LOGIN and SCRAM-SHA-256 with real clients (smtplib, swaks, msmtp) over
STARTTLS on the submission port and over implicit TLS; AUTH only inside TLS unless allowed;
an unknown user and a wrong password look the same."""

import smtplib
import subprocess
import time

import pytest

from support import (ALICE, ALICE_PW, BOB, b64, make_message, plain_response, token,
                     wait_until)

UNKNOWN = "nobody-here@example.test"


def smtplib_session(postern, port):
    """A real smtplib client inside TLS on the submission or implicit-TLS port."""
    s = postern.smtplib_client(port)
    s.ehlo()
    if port == "submission":
        s.starttls(context=postern.tls_context())
        s.ehlo()
    return s


def check_delivered(postern, tok, address=BOB):
    assert len(postern.find(address, tok)) == 1


@pytest.mark.parametrize("port", ["submission", "smtps"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_auth_and_send(postern, port, mechanism):
    tok = token()
    with smtplib_session(postern, port) as s:
        s.user, s.password = ALICE, ALICE_PW
        authobject = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mechanism]
        code, _ = s.auth(mechanism, authobject)
        assert code == 235
        assert s.sendmail(ALICE, [BOB], make_message(tok, sender=ALICE)) == {}
    check_delivered(postern, tok)


@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_smtplib_login_without_initial_response(postern, port):
    with smtplib_session(postern, port) as s:
        s.user, s.password = ALICE, ALICE_PW
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235
        code, _ = s.mail(ALICE)
        assert code == 250


def test_smtplib_login_picks_a_mechanism(postern):
    with smtplib_session(postern, "submission") as s:
        code, _ = s.login(ALICE, ALICE_PW)
        assert code == 235


def test_plain_conversation_without_initial_response(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN", 334)
    c.expect(plain_response(ALICE, ALICE_PW), 235)


def test_login_conversation(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH LOGIN", 334)
    c.expect(b64(ALICE), 334)
    c.expect(b64(ALICE_PW), 235)


def msmtp(postern, tmp_path, port, user, password, tok, starttls):
    """Sends one message with msmtp (GNU SASL's SCRAM-SHA-256); the password sits in a
    private configuration file, not on a command line."""
    rc = tmp_path / "msmtprc"
    rc.write_text(
        "account default\n"
        "host 127.0.0.1\n"
        f"port {postern.port(port)}\n"
        "tls on\n"
        f"tls_starttls {'on' if starttls else 'off'}\n"
        f"tls_trust_file {postern.cert}\n"
        "auth scram-sha-256\n"
        f"user {user}\n"
        f'password "{password}"\n'
        f"from {user}\n"
        "domain client.test\n")
    rc.chmod(0o600)
    return subprocess.run(["msmtp", "-C", str(rc), "--", BOB],
                          input=make_message(tok, sender=user).decode(), capture_output=True,
                          text=True, env=postern.client_env(), timeout=120)


@pytest.mark.parametrize("port,starttls", [("submission", True), ("smtps", False)])
def test_msmtp_scram_sha_256(postern, tmp_path, port, starttls):
    tok = token()
    r = msmtp(postern, tmp_path, port, ALICE, ALICE_PW, tok, starttls)
    assert r.returncode == 0, r.stderr
    check_delivered(postern, tok)


@pytest.mark.parametrize("user,password", [(ALICE, "wrong password"), (UNKNOWN, "whatever")],
                         ids=["wrong-password", "unknown-user"])
def test_msmtp_scram_sha_256_bad_credentials(postern, tmp_path, user, password):
    r = msmtp(postern, tmp_path, "smtps", user, password, token(), starttls=False)
    assert r.returncode != 0
    assert "535 5.7.8" in r.stderr, r.stderr


def swaks(postern, port, mechanism, tok, password=ALICE_PW):
    tls = "--tls" if port == "submission" else "--tlsc"
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(postern.port(port)), tls,
         "--auth", mechanism, "--auth-user", ALICE, "--auth-password", password,
         "--from", ALICE, "--to", BOB, "--ehlo", "client.test", "--timeout", "60",
         "--header", f"Subject: {tok}", "--body", "Sent by swaks."],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.parametrize("port", ["submission", "smtps"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_and_send(postern, port, mechanism):
    tok = token()
    r = swaks(postern, port, mechanism, tok)
    assert r.returncode == 0, r.stdout + r.stderr
    check_delivered(postern, tok)


def test_swaks_bad_password(postern):
    r = swaks(postern, "submission", "PLAIN", token(), password="wrong password")
    assert r.returncode != 0
    assert "535 5.7.8" in r.stdout, r.stdout


@pytest.mark.parametrize("port", ["mx", "submission"])
def test_auth_not_offered_nor_accepted_before_tls(smtp, port):
    c = smtp(port)
    caps = c.ehlo().keywords()
    assert "AUTH" not in caps
    r = c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), (538, 503))
    if r.code == 538:
        assert r.enh == "5.7.11", r
    c.expect("NOOP", 250)


def test_smtplib_refuses_to_log_in_where_auth_is_not_offered(postern):
    with postern.smtplib_client("submission") as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.login(ALICE, ALICE_PW)


def failed_auth(postern, user, password):
    """(reply, seconds) of one failed AUTH PLAIN on the implicit-TLS port."""
    with postern.connect("smtps") as c:
        c.ehlo()
        start = time.monotonic()
        r = c.cmd("AUTH PLAIN " + plain_response(user, password))
        return r, time.monotonic() - start


def test_wrong_password_and_unknown_user_get_the_same_reply(postern):
    wrong, _ = failed_auth(postern, ALICE, "wrong password")
    unknown, _ = failed_auth(postern, UNKNOWN, "wrong password")
    assert (wrong.code, wrong.enh) == (535, "5.7.8"), wrong
    assert (unknown.code, unknown.enh) == (535, "5.7.8"), unknown
    assert wrong.text == unknown.text


def test_failure_delay_applies_to_unknown_users_too(postern, mailctl):
    # Only lower bounds: a slow machine makes things slower, never faster.
    mailctl("config", "set", "auth.failure_delay_ms", "300")
    wait_until(lambda: failed_auth(postern, ALICE, "wrong password")[1] >= 0.3,
               what="failed logins to be delayed")
    wrong, wrong_time = failed_auth(postern, ALICE, "wrong password")
    unknown, unknown_time = failed_auth(postern, UNKNOWN, "wrong password")
    assert (wrong.code, wrong.enh) == (535, "5.7.8"), wrong
    assert (unknown.code, unknown.enh) == (535, "5.7.8"), unknown
    assert wrong.text == unknown.text
    assert wrong_time >= 0.3 and unknown_time >= 0.3


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_bad_password_and_unknown_user(postern, mechanism):
    replies = []
    for user in (ALICE, UNKNOWN):
        with smtplib_session(postern, "submission") as s:
            s.user, s.password = user, "wrong password"
            authobject = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mechanism]
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                s.auth(mechanism, authobject)
            replies.append((e.value.smtp_code, e.value.smtp_error))
    assert replies[0][0] == 535 and replies[0][1].startswith(b"5.7.8")
    assert replies[0] == replies[1]


def test_session_goes_on_after_a_failed_auth(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, "wrong password"), 535, "5.7.8")
    c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    c.expect(f"MAIL FROM:<{ALICE}>", 250)


def test_second_auth_is_refused(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 503)


def test_unknown_mechanism_is_refused(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH CRAM-MD5", 504)
    c.expect("AUTH X-NONSENSE", 504)
    c.expect("NOOP", 250)


def test_cancelled_exchange(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH LOGIN", 334)
    c.expect("*", 501)
    c.expect("AUTH PLAIN", 334)
    c.expect("*", 501)
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)


def test_invalid_base64_is_refused(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN !!!not-base64!!!", 501)
    c.expect("AUTH LOGIN", 334)
    c.expect("%%%", 501)
    c.expect("NOOP", 250)


def test_malformed_plain_response_is_refused(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + b64("no separators at all"), "5")
    c.expect("AUTH PLAIN " + b64(f"\0{ALICE}"), "5")
    c.expect("NOOP", 250)


def test_plain_cannot_act_for_another_user(smtp):
    # alice's password must not buy bob's identity through the authorization id.
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW, authzid=BOB), "5")
    c.expect(f"MAIL FROM:<{BOB}>", 530, "5.7.0")


def test_plain_with_own_authzid_works(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW, authzid=ALICE), 235)


def test_address_case_does_not_matter_for_login(smtp):
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response("Alice@Example.Test", ALICE_PW), 235)


def test_plaintext_auth_when_allowed(postern, mailctl):
    mailctl("config", "set", "auth.allow_plaintext", "on")

    def offered():
        with postern.connect("submission") as c:
            return "AUTH" in c.ehlo().keywords()

    wait_until(offered, what="AUTH offered before TLS")
    tok = token()
    with postern.smtplib_client("submission") as s:
        s.ehlo()
        code, _ = s.login(ALICE, ALICE_PW)
        assert code == 235
        assert s.sendmail(ALICE, [BOB], make_message(tok, sender=ALICE)) == {}
    check_delivered(postern, tok)


def test_changed_password_takes_effect(postern, mailctl, new_user, smtp):
    carol = new_user(password="first-password")
    mailctl("user", "passwd", carol, "--password-stdin", input="second-password\n")

    def new_password_works():
        with postern.connect("smtps") as c:
            c.ehlo()
            return c.cmd("AUTH PLAIN " + plain_response(carol, "second-password")).code == 235

    wait_until(new_password_works, what="the new password to work")
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(carol, "first-password"), 535, "5.7.8")
