"""One reply, one write. Clients exist that read a reply with a single receive and take what
came as all of it: a multi-line reply (EHLO, CAPA, CAPABILITY, LIST) that leaves in pieces
is read half, and the rest is taken as the answer to the next command. On loopback one write
of a few KiB arrives whole, so a single recv() here sees the whole reply exactly when the
server wrote it at once (under TLS: one record). Replies to a pipelined batch (RFC 2920
section 3.2) are read the same way: all of them in one receive."""

import socket
import ssl

import pytest

from support import ALICE, ALICE_PW, BOB, token

ROUNDS = 20  # pieces sent back to back usually arrive together: ask often


def naive(port, tls_context=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_context is not None:
        s = tls_context.wrap_socket(s, server_hostname="localhost")
    return s


def one_read(s):
    data = s.recv(65536)
    assert data, "connection closed"
    return data.decode("utf-8", "replace")


def smtp_complete(text):
    """Whether text ends with the last line of an SMTP reply ("250 ...", not "250-...")."""
    lines = text.split("\r\n")
    return text.endswith("\r\n") and len(lines) >= 2 and lines[-2][3:4] == " "


def test_ehlo_reply_in_one_read(postern):
    for _ in range(ROUNDS):
        with naive(postern.port("mx")) as s:
            assert one_read(s).startswith("220 ")
            s.sendall(b"EHLO naive.test\r\n")
            reply = one_read(s)
            assert smtp_complete(reply), f"EHLO reply in pieces; the first read got {reply!r}"
            assert "PIPELINING" in reply and "STARTTLS" in reply, reply
            s.sendall(b"QUIT\r\n")
            assert one_read(s).startswith("221 ")


def test_ehlo_reply_in_one_record_under_tls(postern):
    ctx = postern.tls_context()
    for _ in range(ROUNDS):
        with naive(postern.port("smtps"), ctx) as s:
            assert one_read(s).startswith("220 ")
            s.sendall(b"EHLO naive.test\r\n")
            reply = one_read(s)  # one TLS record at most
            assert smtp_complete(reply), f"EHLO reply in pieces; the first read got {reply!r}"
            assert "AUTH " in reply, reply


def test_replies_to_a_pipelined_batch_in_one_read(postern):
    """MAIL, RCPT (one unknown), RCPT, DATA in one send: four replies, one read; then the
    message, its end and QUIT in one send: 250 and 221, one read."""
    for _ in range(ROUNDS // 4):
        with naive(postern.port("mx")) as s:
            one_read(s)
            s.sendall(b"EHLO naive.test\r\n")
            assert smtp_complete(one_read(s))
            s.sendall(f"MAIL FROM:<{BOB}>\r\nRCPT TO:<nobody-{token()}@example.test>\r\n"
                      f"RCPT TO:<{ALICE}>\r\nDATA\r\n".encode())
            replies = one_read(s).split("\r\n")[:-1]
            assert [r[:3] for r in replies] == ["250", "550", "250", "354"], replies
            s.sendall(f"Subject: {token()}\r\n\r\nHello.\r\n.\r\nQUIT\r\n".encode())
            replies = one_read(s).split("\r\n")[:-1]
            assert [r[:3] for r in replies] == ["250", "221"], replies


def test_pop3_capa_in_one_read(postern):
    if not postern.has_pop3d:
        pytest.skip(f"no pop3d in {postern.bin}")
    for _ in range(ROUNDS):
        with naive(postern.port("pop3")) as s:
            assert one_read(s).startswith("+OK")
            s.sendall(b"CAPA\r\n")
            reply = one_read(s)
            assert reply.startswith("+OK") and reply.endswith("\r\n.\r\n"), \
                f"CAPA reply in pieces; the first read got {reply!r}"


def test_imap_capability_and_list_in_one_read(postern):
    if not postern.has_imapd:
        pytest.skip(f"no imapd in {postern.bin}")
    for _ in range(ROUNDS // 2):
        with naive(postern.port("imaps"), postern.tls_context()) as s:
            assert one_read(s).startswith("* OK")
            s.sendall(b"a1 CAPABILITY\r\n")
            reply = one_read(s)
            assert reply.startswith("* CAPABILITY") and "\r\na1 OK" in reply \
                and reply.endswith("\r\n"), f"CAPABILITY in pieces; the first read got {reply!r}"
            s.sendall(f'a2 LOGIN "{ALICE}" "{ALICE_PW}"\r\n'.encode())
            assert "a2 OK" in one_read(s)
            s.sendall(b'a3 LIST "" "*"\r\n')
            reply = one_read(s)
            assert reply.startswith("* LIST") and "\r\na3 OK" in reply \
                and reply.endswith("\r\n"), f"LIST in pieces; the first read got {reply!r}"


def test_starttls_go_ahead_is_plaintext_and_alone(postern):
    """The 220 to STARTTLS leaves before the handshake, unencrypted; the EHLO inside TLS
    comes whole."""
    ctx = postern.tls_context()
    for _ in range(ROUNDS // 4):
        raw = socket.create_connection(("127.0.0.1", postern.port("submission")), timeout=10)
        with raw:
            one_read(raw)
            raw.sendall(b"EHLO naive.test\r\n")
            assert smtp_complete(one_read(raw))
            raw.sendall(b"STARTTLS\r\n")
            assert one_read(raw).startswith("220 ")
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"EHLO naive.test\r\n")
                reply = one_read(s)
                assert smtp_complete(reply) and "AUTH " in reply, reply
