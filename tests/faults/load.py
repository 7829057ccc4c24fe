"""The mixed load the fault matrix runs while it breaks things: real clients (smtplib,
poplib, imaplib), one thread per kind, each running one whole session after another until
told to stop, and recording what every session got.

Kinds:
  mx          an MX delivery (port 25 style, no authentication) to the local user MX_USER
  submission  STARTTLS, AUTH PLAIN, one message to a remote address that relayd takes to
              the sink (the test's own SMTP server)
  pop3        POP3 over TLS: login, STAT, RETR 1, QUIT on POP_USER's maildrop
  imap        IMAP over TLS: login, SELECT INBOX, FETCH 1:* (FLAGS), FETCH 1 BODY.PEEK[],
              LOGOUT on POP_USER's mailbox

Each session ends in one outcome:
  ok       every reply was the expected success (for a message: its end of DATA got 250,
           and its token is then "acknowledged": it must be stored, or reach the sink)
  temp     a temporary refusal: an SMTP 4xx, POP3 -ERR [SYS/TEMP] or [IN-USE], IMAP NO
           [UNAVAILABLE] or [INUSE]
  closed   the connection was refused, reset or closed (including a BYE)
  perm     anything else: a 5xx, a POP3 -ERR without a temporary response code, an IMAP
           NO/BAD without one. The fault matrix allows none.
  timeout  no reply within CLIENT_TIMEOUT seconds. Allowed nowhere either.
"""

import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass

CLIENT_TIMEOUT = 30
KINDS = ("mx", "submission", "pop3", "imap")
TOKEN_RE = re.compile(rb"flt-[0-9a-f]{32}")


@dataclass
class Op:
    kind: str
    start: float
    end: float
    outcome: str
    detail: str = ""
    token: str = ""  # set when a message was acknowledged


class Refused(Exception):
    """A reply that ends the session: outcome and the reply's text."""

    def __init__(self, outcome, detail):
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


def smtp_check(code, text, want):
    """Goes on when code is the one wanted; otherwise ends the session as temp (4xx) or perm."""
    if code == want:
        return
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    raise Refused("temp" if 400 <= code < 500 else "perm", f"{code} {text}")


def pop3_check(reply):
    """POP3 has no reply classes: RFC 2449 response codes say what is temporary (RFC 3206)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    if text.startswith("+OK"):
        return
    if text == "-ERR EOF":  # what poplib raises when the server closed the connection
        raise Refused("closed", text)
    temp = text.startswith("-ERR [SYS/TEMP]") or text.startswith("-ERR [IN-USE]")
    raise Refused("temp" if temp else "perm", text)


def imap_refused(e):
    text = str(e)
    # abort: the connection broke or the server said BYE; a BYE instead of the greeting
    # comes as a plain error carrying that line
    if isinstance(e, imaplib.IMAP4.abort) or "* BYE" in text or text.startswith("BYE"):
        return Refused("closed", text)
    temp = "[UNAVAILABLE]" in text or "[INUSE]" in text
    return Refused("temp" if temp else "perm", text)


def message(tok, sender, to):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {tok}\r\n"
            f"Message-ID: <{tok}@faults.test>\r\n\r\nA message under faults.\r\n").encode()


def new_token():
    return "flt-" + uuid.uuid4().hex


class Load:
    """The load: start(), then stop() for the list of Ops since start."""

    def __init__(self, target):
        # target: host, ports (dict by listener name), tls_context(), mx_user, sub_user,
        # sub_password, remote_domain, pop_user, pop_password
        self.t = target
        self.ops = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.seq = 0

    # --- one session of each kind ---------------------------------------------------------
    def mx(self):
        t = self.t
        tok = new_token()
        s = smtplib.SMTP(t.host, t.ports["mx"], local_hostname="client.faults.test",
                         timeout=CLIENT_TIMEOUT)
        try:
            smtp_check(*s.ehlo(), 250)
            smtp_check(*s.mail("sender@outside.faults.test"), 250)
            smtp_check(*s.rcpt(t.mx_user), 250)
            smtp_check(*s.data(message(tok, "sender@outside.faults.test", t.mx_user)), 250)
        finally:
            quit_quietly(s)
        return tok

    def submission(self):
        t = self.t
        tok = new_token()
        with self.lock:
            self.seq += 1
            to = f"r{self.seq}@{t.remote_domain}"
        s = smtplib.SMTP(t.host, t.ports["submission"], local_hostname="client.faults.test",
                         timeout=CLIENT_TIMEOUT)
        try:
            smtp_check(*s.ehlo(), 250)
            smtp_check(*s.starttls(context=t.tls_context()), 220)
            smtp_check(*s.ehlo(), 250)
            s.user, s.password = t.sub_user, t.sub_password
            try:
                code, text = s.auth("PLAIN", s.auth_plain)
            except smtplib.SMTPAuthenticationError as e:
                code, text = e.smtp_code, e.smtp_error
            smtp_check(code, text, 235)
            smtp_check(*s.mail(t.sub_user), 250)
            smtp_check(*s.rcpt(to), 250)
            smtp_check(*s.data(message(tok, t.sub_user, to)), 250)
        finally:
            quit_quietly(s)
        return tok

    def pop3(self):
        t = self.t
        p = poplib.POP3_SSL(t.host, t.ports["pop3s"], context=t.tls_context(),
                            timeout=CLIENT_TIMEOUT)
        try:
            pop3_check(p.getwelcome())
            try:
                pop3_check(p.user(t.pop_user))
                pop3_check(p.pass_(t.pop_password))
                count, _ = p.stat()
                if count:
                    pop3_check(p.retr(1)[0])
                pop3_check(p.quit())
            except poplib.error_proto as e:
                pop3_check(e.args[0] if e.args else b"-ERR")
        finally:
            p.close()
        return ""

    def imap(self):
        t = self.t
        try:
            m = imaplib.IMAP4_SSL(t.host, t.ports["imaps"], ssl_context=t.tls_context(),
                                  timeout=CLIENT_TIMEOUT)
        except imaplib.IMAP4.error as e:
            raise imap_refused(e) from None
        try:
            m.login(t.pop_user, t.pop_password)
            typ, data = m.select("INBOX", readonly=True)
            if typ != "OK":
                raise imap_refused(imaplib.IMAP4.error(data))
            if int(data[0]) > 0:
                for what in ("(FLAGS)", "(BODY.PEEK[])"):
                    typ, data = m.fetch("1:*" if what == "(FLAGS)" else "1", what)
                    if typ != "OK":
                        raise imap_refused(imaplib.IMAP4.error(data))
            m.logout()
        except imaplib.IMAP4.error as e:
            raise imap_refused(e) from None
        finally:
            try:
                m.shutdown()
            except OSError:
                pass
        return ""

    # --- the threads ------------------------------------------------------------------------
    def run_one(self, kind):
        start = time.monotonic()
        outcome, detail, tok = "ok", "", ""
        try:
            tok = getattr(self, kind)()
        except Refused as e:
            outcome, detail = e.outcome, e.detail
        except smtplib.SMTPConnectError as e:  # the greeting was not 220
            outcome = "temp" if 400 <= e.smtp_code < 500 else "perm"
            detail = f"{e.smtp_code} {e.smtp_error!r}"
        except smtplib.SMTPResponseException as e:
            outcome = "temp" if 400 <= e.smtp_code < 500 else "perm"
            detail = f"{e.smtp_code} {e.smtp_error!r}"
        except (socket.timeout, TimeoutError) as e:
            outcome, detail = "timeout", repr(e)
        except smtplib.SMTPServerDisconnected as e:
            outcome = "timeout" if "timed out" in str(e) else "closed"
            detail = str(e)
        except (OSError, EOFError, ssl.SSLError, poplib.error_proto, smtplib.SMTPException) as e:
            outcome, detail = "closed", repr(e)
        op = Op(kind, start, time.monotonic(), outcome, detail, tok if outcome == "ok" else "")
        with self.lock:
            self.ops.append(op)
        return op

    def loop(self, kind):
        while not self.stopping.is_set():
            op = self.run_one(kind)
            if op.outcome != "ok":
                # a refused or broken session is retried at once, as a client would
                # after a short pause
                self.stopping.wait(0.2)

    def start(self, kinds=KINDS):
        for kind in kinds:
            th = threading.Thread(target=self.loop, args=(kind,), name=f"load-{kind}",
                                  daemon=True)
            th.start()
            self.threads.append(th)

    def stop(self):
        self.stopping.set()
        for th in self.threads:
            th.join(CLIENT_TIMEOUT * 3)
        with self.lock:
            return list(self.ops)

    def snapshot(self):
        with self.lock:
            return list(self.ops)


def quit_quietly(s):
    try:
        s.quit()
    except (smtplib.SMTPException, OSError):
        s.close()
