"""Events on NATS: every authentication outcome (postern.event.auth, AuthEvent) and every
accepted message (postern.event.message, MessageEvent), as documented in proto/postern.proto."""

import pytest

from support import (ALICE, ALICE_PW, BOB, OUTSIDE, b64, dot_stuff, make_message,
                     plain_response, queue_id_of, token, wait_until)

AUTH_SUBJECT = "postern.event.auth"
MESSAGE_SUBJECT = "postern.event.message"
UNKNOWN = "nobody-here@example.test"


def check_common(ev, pb, postern):
    assert ev.service == pb.SERVICE_SMTP
    assert ev.client_addr == postern.client_address
    assert ev.time_ms > 0
    assert ev.instance


def test_successful_plain_auth(postern, pb, nats, smtp):
    sub = nats(AUTH_SUBJECT, pb.AuthEvent)
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    ev = sub.wait_for(lambda e: e.user == ALICE and e.result == pb.AUTH_OK)
    check_common(ev, pb, postern)
    assert ev.mechanism == "PLAIN"
    assert ev.tls is True


def test_successful_login_auth_after_starttls(postern, pb, nats, smtp):
    sub = nats(AUTH_SUBJECT, pb.AuthEvent)
    c = smtp("submission")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.expect("AUTH LOGIN", 334)
    c.expect(b64(ALICE), 334)
    c.expect(b64(ALICE_PW), 235)
    ev = sub.wait_for(lambda e: e.user == ALICE and e.mechanism == "LOGIN")
    check_common(ev, pb, postern)
    assert ev.result == pb.AUTH_OK
    assert ev.tls is True


@pytest.mark.parametrize("user,password", [(ALICE, "wrong password 1"), (UNKNOWN, "wrong password 2")],
                         ids=["wrong-password", "unknown-user"])
def test_failed_auth(postern, pb, nats, smtp, user, password):
    sub = nats(AUTH_SUBJECT, pb.AuthEvent)
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(user, password), 535, "5.7.8")
    ev = sub.wait_for(lambda e: e.user == user and e.result == pb.AUTH_BAD_CREDENTIALS)
    check_common(ev, pb, postern)
    assert ev.mechanism == "PLAIN"
    assert ev.tls is True
    # The event says who failed, never with what.
    assert password.encode() not in ev.SerializeToString()


def test_identity_is_lowercased(postern, pb, nats, smtp):
    sub = nats(AUTH_SUBJECT, pb.AuthEvent)
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response("BOB@Example.TEST", "not his password"), 535)
    sub.wait_for(lambda e: e.user == "bob@example.test" and e.result == pb.AUTH_BAD_CREDENTIALS)


def test_plaintext_auth_says_tls_false(postern, pb, nats, mailctl):
    mailctl("config", "set", "auth.allow_plaintext", "on")

    def offered():
        with postern.connect("submission") as c:
            return "AUTH" in c.ehlo().keywords()

    wait_until(offered, what="AUTH offered before TLS")
    sub = nats(AUTH_SUBJECT, pb.AuthEvent)
    with postern.connect("submission") as c:
        c.ehlo()
        c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    ev = sub.wait_for(lambda e: e.user == ALICE and e.result == pb.AUTH_OK)
    assert ev.tls is False


def test_unauthenticated_message(postern, pb, nats, smtp):
    sub = nats(MESSAGE_SUBJECT, pb.MessageEvent)
    tok = token()
    c = smtp("mx")
    c.ehlo()
    queue_id = c.send_mail("sender@outside.example", [ALICE, BOB], make_message(tok))
    ev = sub.wait_for(lambda e: e.queue_id == queue_id)
    check_common(ev, pb, postern)
    assert ev.sender == "sender@outside.example"
    assert ev.rcpt_count == 2
    assert ev.relay_rcpt_count == 0
    assert ev.authenticated is False
    assert ev.user == ""
    [(_, size, raw)] = [m for m in postern.inbox(ALICE) if tok.encode() in m[2]]
    assert ev.size == size == len(raw)


def test_authenticated_message(postern, pb, nats, smtp):
    sub = nats(MESSAGE_SUBJECT, pb.MessageEvent)
    tok = token()
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    c.expect(f"MAIL FROM:<{ALICE}>", 250)
    c.expect(f"RCPT TO:<{BOB}>", 250)
    c.expect(f"RCPT TO:<{OUTSIDE}>", 250)
    queue_id = queue_id_of(c.data(dot_stuff(make_message(tok, sender=ALICE))))
    ev = sub.wait_for(lambda e: e.queue_id == queue_id)
    check_common(ev, pb, postern)
    assert ev.user == ALICE
    assert ev.authenticated is True
    assert ev.sender == ALICE
    assert ev.rcpt_count == 2
    assert ev.relay_rcpt_count == 1
    assert ev.size > len(make_message(tok, sender=ALICE))


def test_null_sender_message(postern, pb, nats, smtp):
    sub = nats(MESSAGE_SUBJECT, pb.MessageEvent)
    c = smtp("mx")
    c.ehlo()
    c.expect("MAIL FROM:<>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    queue_id = queue_id_of(c.data(dot_stuff(make_message(token(), sender="daemon@outside.example"))))
    ev = sub.wait_for(lambda e: e.queue_id == queue_id)
    assert ev.sender == ""
    assert ev.rcpt_count == 1


QUEUE_SUBJECT = "postern.queue.added"


def test_relayed_message_is_announced_to_the_queue(postern, pb, nats, smtp):
    """A message with a recipient outside the hosted domains is announced on
    postern.queue.added (QueueAdded) once PostgreSQL has committed it, with the id of the 250
    reply, so that relayd starts on it at once; a message for local recipients only is not."""
    sub = nats(QUEUE_SUBJECT, pb.QueueAdded)
    c = smtp("smtps")
    c.ehlo()
    c.expect("AUTH PLAIN " + plain_response(ALICE, ALICE_PW), 235)
    c.expect(f"MAIL FROM:<{ALICE}>", 250)
    c.expect(f"RCPT TO:<{BOB}>", 250)
    local_id = queue_id_of(c.data(dot_stuff(make_message(token(), sender=ALICE))))
    c.expect(f"MAIL FROM:<{ALICE}>", 250)
    c.expect(f"RCPT TO:<{BOB}>", 250)
    c.expect(f"RCPT TO:<{OUTSIDE}>", 250)
    relayed_id = queue_id_of(c.data(dot_stuff(make_message(token(), sender=ALICE))))
    sub.wait_for(lambda e: e.queue_id == relayed_id)
    # smtpd publishes in the order it stores: the local-only message would have come first.
    assert [e.queue_id for e in sub.events if e.queue_id == local_id] == []
