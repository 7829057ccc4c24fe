"""Limits and bad input: message size, line length, recipients per message, idle time, errors
per session; bare LF, NUL bytes and garbage get clear replies and never a crash."""

import random
import smtplib
import socket
import ssl

from support import ALICE, BOB, dot_stuff, make_message, token, wait_until

SENDER = "sender@outside.example"


def test_size_limit(postern, mailctl, smtp):
    mailctl("config", "set", "smtp.max_message_size", "4000")
    wait_until(lambda: postern.ehlo_size() == 4000, what="SIZE 4000 announced")

    c = smtp("mx")
    assert c.ehlo().keywords()["SIZE"] == ["4000"]
    c.expect(f"MAIL FROM:<{SENDER}> SIZE=10000", 552, "5.3.4")
    c.expect("NOOP", 250)

    # A client that does not declare the size finds out at the end of DATA.
    tok = token()
    big = make_message(tok, body=(b"0123456789abcdef" * 4 + b"\r\n") * 150)  # ~10 kB
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.data(dot_stuff(big), 552, "5.3.4")
    assert postern.find(ALICE, tok) == []

    # The session is still usable, and a small message goes through.
    c.expect("RSET", 250)
    c.expect("NOOP", 250)
    small = token()
    c.expect(f"MAIL FROM:<{SENDER}> SIZE=500", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.data(dot_stuff(make_message(small)))
    assert len(postern.find(ALICE, small)) == 1


def test_size_limit_with_smtplib(postern, mailctl):
    mailctl("config", "set", "smtp.max_message_size", "4000")
    wait_until(lambda: postern.ehlo_size() == 4000, what="SIZE 4000 announced")
    with postern.smtplib_client("mx") as s:
        s.ehlo()
        big = make_message(token(), body=(b"x" * 70 + b"\r\n") * 100)
        try:
            s.sendmail(SENDER, [ALICE], big)
            raise AssertionError("oversized message accepted")
        except smtplib.SMTPSenderRefused as e:  # smtplib sends SIZE= itself
            assert e.smtp_code == 552 and e.smtp_error.startswith(b"5.3.4"), e
        assert s.noop()[0] == 250


def test_command_line_over_512_bytes(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect("NOOP " + "x" * 600, 500, "5.5.2")
    c.expect("NOOP", 250)
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<" + "a" * 700 + "@example.test>", 500, "5.5.2")
    c.expect(f"RCPT TO:<{ALICE}>", 250)


def test_very_long_line_gets_one_reply(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect("NOOP " + "y" * 100000, 500, "5.5.2")
    c.expect("NOOP", 250)


def test_too_many_recipients(postern, mailctl, smtp, new_user):
    carol, dave = new_user(), new_user()
    mailctl("config", "set", "smtp.max_recipients", "3")

    def fourth_refused():
        with postern.connect("mx") as c:
            c.ehlo()
            c.expect(f"MAIL FROM:<{SENDER}>", 250)
            codes = [c.cmd(f"RCPT TO:<{r}>").code for r in (ALICE, BOB, carol, dave)]
            return codes[3] == 452

    wait_until(fourth_refused, what="the 4th recipient refused")
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.expect(f"RCPT TO:<{BOB}>", 250)
    c.expect(f"RCPT TO:<{carol}>", 250)
    c.expect(f"RCPT TO:<{dave}>", 452, "4.5.3")
    c.data(dot_stuff(make_message(tok)))
    assert sorted(a for a, _ in postern.messages_with(tok)) == sorted([ALICE, BOB, carol])


def test_bare_lf_in_a_command(smtp):
    c = smtp("mx")
    c.ehlo()
    c.send(b"NOOP\n")
    c.expect_reply(500, "5.5.2", context="NOOP<LF>")
    c.expect("NOOP", 250)


def test_nul_byte_in_a_command(smtp):
    c = smtp("mx")
    c.ehlo()
    c.expect(b"NO\x00OP", 500, "5.5.2")
    c.expect(b"MAIL FROM:<sender\x00@outside.example>", 500, "5.5.2")
    c.expect("NOOP", 250)


def test_bare_lf_inside_data_stores_nothing(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.expect("DATA", 354)
    c.send(f"Subject: {tok}\r\n\r\na line with a bare\nLF in it\r\n.\r\n")
    c.expect_reply(554, "5.6.0", context="end of DATA with a bare LF")
    assert postern.messages_with(tok) == []
    # The transaction is over; the session is not.
    c.expect("NOOP", 250)
    c.expect("DATA", (503, 554), "5.5.1")


def test_garbage_gets_5xx_and_others_are_served(postern, smtp):
    rng = random.Random(20240611)
    c = smtp("mx")
    c.ehlo()
    lines = 12
    for _ in range(lines):
        junk = bytes(rng.choice(range(1, 256)) for _ in range(rng.randint(1, 200)))
        c.send(junk.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
    codes = []
    try:
        for _ in range(lines):
            codes.append(c.reply().code)
    except (EOFError, ConnectionResetError):
        pass  # the server may hang up on a client that only sends errors
    assert codes, "no reply to garbage"
    assert all(code >= 500 or code == 421 for code in codes), codes

    other = smtp("mx")
    other.ehlo()
    tok = token()
    other.send_mail(SENDER, [ALICE], make_message(tok))
    assert len(postern.find(ALICE, tok)) == 1


def test_binary_blob_does_not_hurt_the_server(postern, smtp):
    rng = random.Random(7)
    blob = bytes(rng.randrange(256) for _ in range(64 * 1024))
    c = smtp("mx")
    try:
        c.send(blob)
        c.closed_by_server(timeout=5)
    except (OSError, AssertionError):
        pass  # replies, a hang-up or silence are all fine; a crash is not
    for name in ("mx", "submission", "smtps"):
        other = smtp(name)
        other.ehlo()
        other.expect("NOOP", 250)


def test_tls_garbage_on_the_implicit_tls_port(postern, smtp):
    with socket.create_connection(("127.0.0.1", postern.smtps), timeout=10) as s:
        s.sendall(b"EHLO this is not TLS\r\n" + bytes(range(256)) * 8)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    c = smtp("smtps")
    c.ehlo()
    c.expect("NOOP", 250)


def test_client_hanging_up_during_tls_handshake(postern, smtp):
    with socket.create_connection(("127.0.0.1", postern.smtps), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    c = smtp("smtps")
    c.ehlo()
    c.expect("NOOP", 250)


def test_errors_per_session_limit(postern, mailctl):
    mailctl("config", "set", "smtp.max_errors", "3")

    def hung_up_soon():
        """True when the session ends after at most 4 bad commands (3 allowed)."""
        with postern.connect("mx") as c:
            c.ehlo()
            for errors in range(1, 9):
                try:
                    r = c.cmd("XYZZY")
                except (EOFError, ConnectionResetError, ssl.SSLError):
                    return errors <= 4
                if r.code == 421:
                    return errors <= 4 and c.closed_by_server(timeout=30)
                assert r.code == 500, r
        return False

    wait_until(hung_up_soon, what="a session with too many errors to be closed")


def test_idle_timeout(postern, mailctl):
    mailctl("config", "set", "smtp.idle_timeout", "10")  # the smallest allowed

    def idle_client_dropped():
        with postern.connect("mx", timeout=40) as c:
            c.ehlo()
            r = c.reply()  # nothing sent: the next thing we hear is the timeout
            assert r.code == 421, r
            assert r.enh is None or r.enh.startswith("4."), r
            return c.closed_by_server(timeout=30)

    wait_until(idle_client_dropped, timeout=150, what="an idle client to be dropped")


def test_commands_per_session_limit(postern, mailctl):
    mailctl("config", "set", "smtp.max_commands", "10")  # the smallest allowed

    def cut_off_after_ten():
        """True when the 11th command of a session gets 421 and the session ends."""
        with postern.connect("mx") as c:
            c.ehlo()  # command 1
            for n in range(2, 11):
                r = c.cmd("NOOP")
                if r.code != 250:
                    return False  # the new limit is not in force yet
            r = c.cmd("NOOP")
            return r.code == 421 and r.enh == "4.7.0" and c.closed_by_server(timeout=30)

    wait_until(cut_off_after_ten, what="the 11th command of a session to be refused")
