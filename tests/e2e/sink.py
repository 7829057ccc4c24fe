"""A remote SMTP server under a test's control, for what relayd delivers to: Debian's
python3-aiosmtpd in a thread of its own.

    from sink import Sink
    with Sink("127.0.0.2", port, tls=(cert, key),
              rules={"bad@remote.test": "550 5.1.1 no such user"}) as sink:
        ...                                  # deliver something to 127.0.0.2:port
        sink.wait_for(1, timeout=10)
        m = sink.messages[0]                 # m.sender, m.rcpts, m.data, m.peer, m.tls

What the server offers in EHLO is aiosmtpd's: SIZE (data_size_limit), 8BITMIME, SMTPUTF8,
STARTTLS when tls is given (never required: require_starttls is False); PIPELINING, which
aiosmtpd does not announce though it reads pipelined commands in order (RFC 2920), is added
unless pipelining=False.

Replies under the test's control:
  rules        {recipient: "550 5.1.1 no such user"}: the reply to that RCPT TO (case-
               insensitive address); mail_rules the same for MAIL FROM.
  tempfail(n, at="rcpt"|"data", reply=...)  the next n transactions fail temporarily,
               at every RCPT TO or at the end of DATA (451 by default).
Every message accepted is recorded with the envelope, the exact bytes received after
un-dot-stuffing (aiosmtpd's envelope.original_content), the client's address and whether
TLS was on. Transactions refused at DATA end are recorded in sink.refused.
"""

import ssl
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class Received:
    sender: str
    rcpts: list
    data: bytes
    peer: tuple
    tls: bool
    helo: str
    mail_options: list = field(default_factory=list)


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        if self.sink.extra_ehlo:
            for kw in self.sink.extra_ehlo:
                responses.insert(len(responses) - 1, "250-" + kw)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.sink._mail_rule(address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.sink._begin_transaction(envelope)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink._rcpt_reply(envelope, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return self.sink._data_end(session, envelope)


class Sink:
    def __init__(self, host="127.0.0.1", port=2525, tls=None, rules=None, mail_rules=None,
                 pipelining=True, size=32 * 1024 * 1024, smtputf8=True, extra_ehlo=(),
                 hostname="sink.remote.test"):
        self.host, self.port = host, port
        self.rules = {k.lower(): v for k, v in (rules or {}).items()}
        self.mail_rules = {k.lower(): v for k, v in (mail_rules or {}).items()}
        self.pipelining = pipelining
        self.extra_ehlo = list(extra_ehlo)
        self.messages = []   # Received, in arrival order
        self.refused = []    # Received whose DATA end was answered with a failure
        self._cond = threading.Condition()
        self._tempfail = {"n": 0, "at": "rcpt", "reply": ""}
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
        self.controller = Controller(
            _Handler(self), hostname=host, port=port, server_hostname=hostname,
            tls_context=context, require_starttls=False, data_size_limit=size,
            enable_SMTPUTF8=smtputf8)

    # ---- test control -------------------------------------------------------------------

    def tempfail(self, n, at="rcpt", reply=None):
        """The next n transactions get a temporary failure at every RCPT TO (at="rcpt") or
        at the end of DATA (at="data")."""
        assert at in ("rcpt", "data")
        with self._cond:
            self._tempfail = {"n": n, "at": at,
                              "reply": reply or "451 4.3.0 temporary failure, try again"}

    def wait_for(self, count, timeout=10):
        """Waits until count messages were accepted; returns them (AssertionError on
        timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink {self.host}:{self.port}: {len(self.messages)} messages after "
                        f"{timeout}s, expected {count}")
                self._cond.wait(left)
            return list(self.messages)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- called from the server's thread ----------------------------------------------------

    def _mail_rule(self, address):
        return self.mail_rules.get(address.lower())

    def _begin_transaction(self, envelope):
        """A transaction starts at MAIL: it takes one of the pending temporary failures."""
        with self._cond:
            t = self._tempfail
            envelope.sink_tempfail = None
            if t["n"] > 0:
                t["n"] -= 1
                envelope.sink_tempfail = (t["at"], t["reply"])

    def _rcpt_reply(self, envelope, address):
        tf = getattr(envelope, "sink_tempfail", None)
        if tf and tf[0] == "rcpt":
            return tf[1]
        return self.rules.get(address.lower())

    def _data_end(self, session, envelope):
        received = Received(
            sender=envelope.mail_from, rcpts=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""), peer=tuple(session.peer[:2]),
            tls=session.ssl is not None, helo=session.host_name or "",
            mail_options=list(envelope.mail_options))
        tf = getattr(envelope, "sink_tempfail", None)
        with self._cond:
            if tf and tf[0] == "data":
                self.refused.append(received)
                return tf[1]
            self.messages.append(received)
            self._cond.notify_all()
        return "250 2.0.0 OK queued"

