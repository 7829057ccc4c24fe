"""Relay control: modes none (default), select (relay list) and anyone; authenticated clients
relay in every mode; authenticated senders use only their own addresses; the classic relay
tricks are refused."""

import pytest

from support import (ALICE, ALICE_PW, BOB, OUTSIDE, dot_stuff, make_message, plain_response,
                     queue_id_of, token, wait_until)

SENDER = "sender@outside.example"
SECOND = "second@third.example"


def relay_allowed_from(postern, source):
    return not postern.relay_refused_from(source)


def test_default_mode_refuses_relay(postern, smtp):
    before = postern.queue_count()
    for source in ("127.0.0.1", "127.0.0.2"):
        c = smtp("mx", source=source)
        c.ehlo()
        c.expect(f"MAIL FROM:<{SENDER}>", 250)
        c.expect(f"RCPT TO:<{OUTSIDE}>", 554, "5.7.1")
        c.expect(f"RCPT TO:<{ALICE}>", 250)
    assert postern.queue_count() == before


@pytest.mark.client_addresses
def test_select_mode_relays_for_listed_networks_only(postern, mailctl, smtp):
    mailctl("relay", "mode", "select")
    mailctl("relay", "allow", "127.0.0.2/32")
    wait_until(lambda: relay_allowed_from(postern, "127.0.0.2"), what="127.0.0.2 may relay")

    tok = token()
    with postern.smtplib_client("mx", source="127.0.0.2") as s:
        s.ehlo()
        assert s.sendmail(SENDER, [OUTSIDE, SECOND], make_message(tok, sender=SENDER, to=OUTSIDE)) == {}
    [(_, sender, recipients, raw)] = postern.queued(tok)
    assert sender == SENDER
    assert sorted(recipients) == sorted([OUTSIDE, SECOND])
    assert raw.endswith(make_message(tok, sender=SENDER, to=OUTSIDE))

    # The loopback address itself is not trusted.
    before = postern.queue_count()
    c = smtp("mx", source="127.0.0.1")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{OUTSIDE}>", 554, "5.7.1")
    assert postern.queue_count() == before


@pytest.mark.client_addresses
def test_select_mode_relay_list_is_a_cidr(postern, mailctl):
    mailctl("relay", "mode", "select")
    mailctl("relay", "allow", "127.0.0.0/30")  # .0 - .3
    wait_until(lambda: relay_allowed_from(postern, "127.0.0.2"), what="127.0.0.2 may relay")
    assert relay_allowed_from(postern, "127.0.0.1")
    assert not relay_allowed_from(postern, "127.0.0.5")


def test_deny_removes_a_network(postern, mailctl):
    client = postern.client_address
    mailctl("relay", "mode", "select")
    mailctl("relay", "allow", f"{client}/32")
    wait_until(lambda: relay_allowed_from(postern, None), what=f"{client} may relay")
    mailctl("relay", "deny", f"{client}/32")
    wait_until(lambda: postern.relay_refused_from(None), what=f"{client} refused again")


def test_anyone_mode_relays_for_everybody(postern, mailctl):
    mailctl("relay", "mode", "anyone")
    wait_until(lambda: relay_allowed_from(postern, "127.0.0.1"), what="open relay")
    tok = token()
    with postern.smtplib_client("mx") as s:
        s.ehlo()
        assert s.sendmail(SENDER, [OUTSIDE], make_message(tok, sender=SENDER, to=OUTSIDE)) == {}
    [(_, sender, recipients, _)] = postern.queued(tok)
    assert (sender, recipients) == (SENDER, [OUTSIDE])


def relay_authenticated(postern, tok):
    """Alice submits to a local and an outside recipient; returns the DATA reply's queue id."""
    with postern.connect("submission") as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
        c.expect(f"MAIL FROM:<{ALICE}>", 250)
        c.expect(f"RCPT TO:<{OUTSIDE}>", 250)
        c.expect(f"RCPT TO:<{BOB}>", 250)
        return queue_id_of(c.data(dot_stuff(make_message(tok, sender=ALICE, to=OUTSIDE))))


@pytest.mark.parametrize("mode", ["none", pytest.param("select", marks=pytest.mark.client_addresses),
                                  "anyone"])
def test_authenticated_clients_relay_in_every_mode(postern, mailctl, mode):
    if mode != "none":
        mailctl("relay", "mode", mode)
        if mode == "select":
            # Something observable, to know smtpd has the new mode.
            mailctl("relay", "allow", "127.0.0.2/32")
            wait_until(lambda: relay_allowed_from(postern, "127.0.0.2"), what="select mode")
        else:
            wait_until(lambda: relay_allowed_from(postern, "127.0.0.1"), what="anyone mode")
    tok = token()
    queue_id = relay_authenticated(postern, tok)
    [(qid, sender, recipients, _)] = postern.queued(tok)
    assert (qid, sender, recipients) == (queue_id, ALICE, [OUTSIDE])
    # The local recipient got the message directly, not through the queue.
    assert [addr for addr, _ in postern.messages_with(tok)] == [BOB]


def authenticated_session(postern):
    c = postern.connect("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    return c


def test_authenticated_sender_must_own_the_address(postern):
    with authenticated_session(postern) as c:
        c.expect(f"MAIL FROM:<{BOB}>", 553, "5.7.1")
        c.expect(f"MAIL FROM:<{OUTSIDE}>", 553, "5.7.1")
        c.expect(f"MAIL FROM:<{ALICE}>", 250)


def test_sender_check_can_be_turned_off(postern, mailctl):
    mailctl("config", "set", "auth.sender_must_match", "off")

    def bob_allowed():
        with authenticated_session(postern) as c:
            return c.cmd(f"MAIL FROM:<{BOB}>").code == 250

    wait_until(bob_allowed, what="MAIL FROM another user's address accepted")
    tok = token()
    with authenticated_session(postern) as c:
        c.send_mail(BOB, [OUTSIDE], make_message(tok, sender=BOB, to=OUTSIDE))
    [(_, sender, recipients, _)] = postern.queued(tok)
    assert (sender, recipients) == (BOB, [OUTSIDE])


def test_submission_refuses_mail_before_auth(smtp):
    c = smtp("submission")
    c.ehlo()
    c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")
    c.starttls()
    c.ehlo()
    c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    c.expect(f"MAIL FROM:<{ALICE}>", 250)


def test_implicit_tls_refuses_mail_before_auth(smtp):
    # Port 465 is message submission too (RFC 8314).
    c = smtp("smtps")
    c.ehlo()
    c.expect(f"MAIL FROM:<{ALICE}>", 530, "5.7.0")


RELAY_TRICKS = [
    "<user%other.example@example.test>",
    "<bob%other.example@example.test>",
    "<other.example!user@example.test>",
    "<@example.test:user@other.example>",
    "<@other.example:user@example.test>",
    '<"user@other.example"@example.test>',
    '<"user%other.example"@example.test>',
    "<user@other.example.>",
    "<user@other.example..>",
    "<USER@OTHER.EXAMPLE>",
    "<user@Other.Example>",
    "<user@[192.0.2.1]>",
    "<user@[127.0.0.1]>",
    "<user@[IPv6:2001:db8::1]>",
    "<alice@example.test@other.example>",
    "<user@other.example@example.test>",
    "<alice@example.test>extra",
    "<user@other.example> <alice@example.test>",
    "user@other.example",
    "<user@other.example",
    "<user@example.test.other.example>",
    "<user@other.example\\@example.test>",
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_tricks_are_refused(postern, smtp, rcpt):
    before = postern.queue_count()
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:{rcpt}", "5")
    # The session goes on and a local recipient still works; only bob gets the message.
    c.expect(f"RCPT TO:<{BOB}>", 250)
    c.data(dot_stuff(make_message(tok, sender=SENDER, to=BOB)))
    assert postern.queue_count() == before
    assert postern.queued(tok) == []
    assert [addr for addr, _ in postern.messages_with(tok)] == [BOB]
