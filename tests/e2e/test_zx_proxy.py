"""PROXY protocol (v1 and v2) from a trusted load balancer: the real client address it
passes on is the one relay lists and Received headers see; from anyone else the header is
just a bad command. A second smtpd with PROXY_TRUSTED_NETWORKS=127.0.0.9/32 serves this
module, against the same PostgreSQL and NATS."""

import socket
import struct

import pytest

from support import ALICE, SMTPClient, dot_stuff, make_message, token, wait_until

pytestmark = pytest.mark.client_addresses

PROXY = "127.0.0.9"     # the trusted proxy's address
CLIENT = "192.0.2.55"   # the client address it reports


@pytest.fixture(scope="module")
def proxied(postern):
    """Its ports by variable name; stopped (clean exit, sanitizer-clean log checked) with
    the rest of the stack."""
    env = {"PROXY_TRUSTED_NETWORKS": f"{PROXY}/32, 2001:db8:ffff::/48"}
    return postern.add_smtpd("smtpd-proxy", env=env).ports


def v2_header(src, dst, sport, dport):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def deliver(c):
    tok = token()
    c.ehlo()
    c.expect("MAIL FROM:<someone@outside.example>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.data(dot_stuff(make_message(tok)))
    c.expect("QUIT", 221)
    return tok


def test_v1_header_from_the_trusted_proxy(postern, proxied):
    c = SMTPClient(proxied["SMTP_PORT"], source=PROXY)
    # The header and the first command in one packet, as a load balancer may send them.
    c.send(f"PROXY TCP4 {CLIENT} 127.0.0.1 40000 25\r\nNOOP\r\n".encode())
    c.greeting = c.expect_reply(220)
    c.expect_reply(250)  # the pipelined NOOP
    tok = deliver(c)
    [raw] = postern.find(ALICE, tok)
    assert f"[{CLIENT}]".encode() in raw.split(b"\r\n\r\n")[0]


def test_relay_list_applies_to_the_real_client(postern, proxied, mailctl):
    mailctl("relay", "mode", "select")
    mailctl("relay", "allow", f"{CLIENT}/32")

    def relays():
        c = SMTPClient(proxied["SMTP_PORT"], source=PROXY)
        c.send(f"PROXY TCP4 {CLIENT} 127.0.0.1 40000 25\r\n".encode())
        c.expect_reply(220)
        c.ehlo()
        c.expect("MAIL FROM:<someone@outside.example>", 250)
        return c.cmd("RCPT TO:<friend@elsewhere.example>").code == 250

    wait_until(relays, what="the proxied client to be allowed to relay")
    # The proxy itself is not in the relay list.
    c = SMTPClient.connect(proxied["SMTP_PORT"], source="127.0.0.1")
    c.ehlo()
    c.expect("MAIL FROM:<someone@outside.example>", 250)
    c.expect("RCPT TO:<friend@elsewhere.example>", 554, "5.7.1")


def test_v2_header_before_implicit_tls(postern, proxied):
    c = SMTPClient(proxied["SMTPS_PORT"], source=PROXY, tls_context=postern.tls_context())
    c.send(v2_header(CLIENT, "127.0.0.1", 40001, 465))
    c._wrap()
    c.greeting = c.expect_reply(220)
    c.ehlo()
    c.expect("NOOP", 250)


def test_untrusted_client_cannot_claim_an_address(postern, proxied):
    c = SMTPClient.connect(proxied["SMTP_PORT"], source="127.0.0.1")
    c.expect(f"PROXY TCP4 {CLIENT} 127.0.0.1 40000 25", 500, "5.5.1")


def test_garbage_instead_of_a_header_closes(proxied):
    c = SMTPClient(proxied["SMTP_PORT"], source=PROXY)
    c.send(b"EHLO not-a-proxy\r\n")
    assert c.closed_by_server(timeout=30)
