"""Local delivery: mail for hosted users lands in their INBOX exactly as sent, with only a
Return-Path and a Received header in front, and "250 2.0.0" means it is committed."""

from support import (ALICE, BOB, OUTSIDE, SMTP_HOSTNAME, dot_stuff, make_message, queue_id_of,
                     split_added_headers, token)

SENDER = "sender@outside.example"


def tricky_body(tok):
    """Headers and a body with everything transparency and 8BITMIME must carry."""
    return (b"From: Sender <sender@outside.example>\r\n"
            b"To: Alice <alice@example.test>\r\n"
            b"Subject: " + tok.encode() + b"\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n"
            b".leading dot\r\n"
            b"..two leading dots\r\n"
            b".\r\n"
            b". \r\n"
            b"caf\xc3\xa9, na\xc3\xafve, \xe2\x82\xac and raw \xff\xfe\x80 bytes\r\n"
            b"trailing spaces   \r\n"
            b"\ttab first\r\n"
            b"\r\n"
            b"From the start of a line\r\n"
            b"last line\r\n")


def test_local_delivery_is_byte_for_byte(postern, smtp):
    tok = token()
    body = tricky_body(tok)
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}> BODY=8BITMIME", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    reply = c.data(dot_stuff(body), 250, "2.0.0")
    queue_id = queue_id_of(reply)

    # No waiting: "250" is only sent after the commit.
    [raw] = postern.find(ALICE, tok)
    return_path, received, rest = split_added_headers(raw)
    assert return_path == f"Return-Path: <{SENDER}>\r\n".encode()
    assert SMTP_HOSTNAME.encode() in received
    assert queue_id.encode() in received
    assert rest == body


def test_stored_size_is_the_stored_length(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.send_mail(SENDER, [ALICE], make_message(tok))
    [(size, raw)] = [(size, raw) for _, size, raw in postern.inbox(ALICE) if tok.encode() in raw]
    assert size == len(raw)


def test_smtplib_sendmail_arrives_intact(postern):
    tok = token()
    body = tricky_body(tok)
    with postern.smtplib_client("mx") as s:
        s.ehlo()
        refused = s.sendmail(SENDER, [ALICE], body, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    [raw] = postern.find(ALICE, tok)
    assert split_added_headers(raw)[2] == body


def test_null_sender_is_accepted(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect("MAIL FROM:<>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.data(dot_stuff(make_message(tok, sender="mailer-daemon@outside.example")))
    [raw] = postern.find(ALICE, tok)
    assert raw.startswith(b"Return-Path: <>\r\n")


def test_uids_count_up_per_mailbox(postern, smtp, new_user):
    carol = new_user()
    c = smtp("mx")
    c.ehlo()
    for _ in range(3):
        c.send_mail(SENDER, [carol], make_message(token(), to=carol))
    assert [uid for uid, _, _ in postern.inbox(carol)] == [1, 2, 3]
    [(uidvalidity, uidnext)] = postern.sql(
        "SELECT b.uidvalidity, b.uidnext FROM mailboxes b JOIN users u ON u.id = b.user_id"
        " WHERE u.address = %s AND b.name = 'INBOX'", (carol,))
    assert uidvalidity > 0 and uidnext == 4


def test_every_recipient_gets_a_copy(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.send_mail(SENDER, [ALICE, BOB], make_message(tok))
    assert sorted(addr for addr, _ in postern.messages_with(tok)) == [ALICE, BOB]


def test_unknown_local_user_is_refused(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<nobody-here@example.test>", 550, "5.1.1")
    c.expect(f"RCPT TO:<{BOB}>", 250)
    c.data(dot_stuff(make_message(tok, to=BOB)))
    assert [addr for addr, _ in postern.messages_with(tok)] == [BOB]


def test_recipient_matching_ignores_case(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<ALICE@EXAMPLE.TEST>", 250)
    c.data(dot_stuff(make_message(tok)))
    assert len(postern.find(ALICE, tok)) == 1


def test_domain_case_does_not_matter(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect("RCPT TO:<bob@Example.TEST>", 250)
    c.data(dot_stuff(make_message(tok, to=BOB)))
    assert len(postern.find(BOB, tok)) == 1


def test_data_reply_names_a_fresh_queue_id(smtp):
    c = smtp("mx")
    c.ehlo()
    first = c.send_mail(SENDER, [ALICE], make_message(token()))
    second = c.send_mail(SENDER, [ALICE], make_message(token()))
    assert first != second


def test_pipelined_transaction(postern, smtp):
    tok = token()
    c = smtp("mx")
    assert "PIPELINING" in c.ehlo().keywords()
    c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n")
    c.expect_reply(250, context="MAIL")
    c.expect_reply(250, context="RCPT alice")
    c.expect_reply(250, context="RCPT bob")
    c.expect_reply(354, context="DATA")
    c.send(dot_stuff(make_message(tok)) + b".\r\n")
    c.expect_reply(250, "2.0.0", context="end of DATA")
    assert sorted(addr for addr, _ in postern.messages_with(tok)) == [ALICE, BOB]


def test_pipelined_transaction_with_a_refused_recipient(postern, smtp):
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.send(f"RSET\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<nobody-here@example.test>\r\n"
           f"RCPT TO:<{ALICE}>\r\nDATA\r\n")
    c.expect_reply(250, context="RSET")
    c.expect_reply(250, context="MAIL")
    c.expect_reply(550, "5.1.1", context="RCPT nobody")
    c.expect_reply(250, context="RCPT alice")
    c.expect_reply(354, context="DATA")
    c.send(dot_stuff(make_message(tok)) + b".\r\n")
    c.expect_reply(250, "2.0.0", context="end of DATA")
    assert [addr for addr, _ in postern.messages_with(tok)] == [ALICE]


def test_pipelined_data_without_valid_recipients_is_refused(postern, smtp):
    c = smtp("mx")
    c.ehlo()
    c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<nobody-here@example.test>\r\nDATA\r\n")
    c.expect_reply(250, context="MAIL")
    c.expect_reply(550, "5.1.1", context="RCPT nobody")
    c.expect_reply("5", context="DATA without recipients")
    c.expect("RSET", 250)


def test_several_transactions_in_one_session(postern, smtp):
    toks = [token() for _ in range(3)]
    c = smtp("mx")
    c.ehlo()
    for tok in toks:
        c.send_mail(SENDER, [BOB], make_message(tok, to=BOB))
    for tok in toks:
        assert len(postern.find(BOB, tok)) == 1


def test_large_message_arrives_intact(postern, smtp):
    tok = token()
    lines = [b"Subject: " + tok.encode(), b""]
    for i in range(6000):
        lines.append((b"." if i % 7 == 0 else b"") + b"%05d " % i + b"x" * 70)
    body = b"\r\n".join(lines) + b"\r\n"
    c = smtp("mx")
    c.ehlo()
    c.send_mail(SENDER, [ALICE], body)
    [raw] = postern.find(ALICE, tok)
    assert split_added_headers(raw)[2] == body


def test_mail_for_a_hosted_domain_is_never_relayed(postern, smtp):
    # Local recipients need no relaying, and nothing goes to the outbound queue.
    tok = token()
    c = smtp("mx")
    c.ehlo()
    c.send_mail(OUTSIDE, [ALICE], make_message(tok, sender=OUTSIDE))
    assert postern.queued(tok) == []
