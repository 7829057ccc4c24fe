"""nats-server stopped and started again: what was announced while a service was cut off
from the bus never reaches it, so on reconnecting it reloads what such announcements would have
told it. A domain and a user added while the bus is down (mailctl writes PostgreSQL and warns
that the change could not be announced) are known to an smtpd that reloads its configuration
only every hour as soon as it is back on the bus (while the bus is down it answers every
client with a temporary failure). Late in the run (zy): the bus goes away for
every service."""

import random

import pytest

from support import wait_until

PW = "Reconnect-pw-1!"


@pytest.mark.own_processes
def test_change_made_while_the_bus_was_down_is_loaded_on_reconnect(postern):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")
    fe = postern.add_smtpd("smtpd-reconnect", env={"CONFIG_REFRESH": "3600"})
    domain = f"reconnect{random.randrange(10**6)}.test"
    user = f"bob@{domain}"

    def rcpt():
        with fe.connect("mx") as c:
            c.ehlo()
            c.expect("MAIL FROM:<someone@example.org>", 250)
            reply = c.cmd(f"RCPT TO:<{user}>")
            c.cmd("QUIT")
            return reply

    assert rcpt().code // 100 == 5            # not a domain of ours yet
    postern.localstack("nats-stop", str(postern.dir))
    try:
        r = postern.mailctl("domain", "add", domain)
        assert "could not be announced" in r.stderr, r.stderr
        postern.mailctl("user", "add", user, "--password-stdin", input=PW + "\n")
    finally:
        postern.localstack("nats-start", str(postern.dir))
    wait_until(postern.limiter_answering, timeout=60, what="the limiter to answer again")
    wait_until(lambda: rcpt().code == 250, timeout=30,
               what=f"smtpd to know {domain} once back on the bus")
    assert 'msg="bus connected"' in fe.service.since(fe.service.started_at)
