"""The end-to-end harness: one private PostgreSQL + nats-server (deploy/localstack.sh), the
schema applied by `mailctl migrate`, a self-signed certificate, smtpd on three free ports
(and the limiter and notifier, when they are built; pop3d on two free ports, postern.pop3
and postern.pop3s, when it is built; imapd on two more, postern.imap and postern.imaps, also
postern.port("imap") and postern.port("imaps"), when it is built), for the whole session.
Binaries come
from $POSTERN_BIN (default build/bin). Set POSTERN_E2E_KEEP=1 to keep the session's
directory (logs, data) afterwards; it is always kept when something went wrong.

The bus has users (deploy/nats-auth.sh): every program the harness starts logs in as itself
(Service.start gives it its own NATS_USER and NATS_PASSWORD_FILE, whatever environment it
was built with), mailctl as mailctl (postern.env), and the harness's own NATS clients
(support.py's helpers, the nats fixture) as "test", a user allowed everything that only the
harness's nats-server has. A service refused anything by the server fails the session.

Fixtures:
  postern   the running stack (ports, env, cert, inbox/queue lookups, pg_stop/pg_start)
  mailctl   mailctl(*args, input=None, check=True) -> CompletedProcess
  sql       sql(query, params=None) -> list of rows (bytea as bytes)
  pb        the postern_pb2 module generated from proto/postern.proto
  accounts  domain example.test with alice@ and bob@ (known passwords)
  smtp      smtp("mx"|"submission"|"smtps", source=None) -> a connected SMTPClient
  nats      nats(subject, MsgType) -> a NatsSubscriber (closed after the test)
  new_user  new_user() -> a fresh address with its own empty INBOX
  smtpd2    a second smtpd process on its own free ports, sharing PostgreSQL and NATS
            (started on first use, then kept for the session; a Frontend like
            postern.frontend())
  limiter_control  stop()/kill()/start() the limiter; restarted after the test if down
  service_control  stop(name, kill=False)/start(name) for any service, restarted after the test
and, for every test, settings are brought back to the baseline first if anything changed
them (relay mode none, no relay networks, no system settings but the BASELINE ones).
Configuration reaches smtpd over NATS, so the reset waits until smtpd shows it. When a
test changed the limiter's state through mailctl (hamr, harvest, alert-address), the reset
also lifts every block, re-enables disabled accounts, deletes the exempt networks, the alert
addresses, the domain- and user-level HAMR settings and the per-service harvesting settings,
and waits until the limiter has reloaded (postern.limiter_sync()).

Against a compose stack (tests/deploy/e2e_docker.sh): with POSTERN_E2E_COMPOSE set to the
compose project, the suite runs against that running stack's published ports instead of
starting programs of its own (ComposeStack): PostgreSQL and NATS published on loopback for
the harness's own clients (tests/deploy/compose.e2e.yml), mailctl from $POSTERN_BIN, the
services stopped, killed and started through compose, their logs read with `docker logs`.
Tests marked client_addresses (they connect from several 127.0.0.x addresses, while a
published port shows every client as the bridge network's gateway) and own_processes (they
start smtpd, notifier or limiter processes with settings of their own) are left out there,
and counted.
"""

import importlib
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

import support
from support import (ALICE, ALICE_PW, BOB, BOB_PW, DOMAIN, SMTP_HOSTNAME, NatsSubscriber,
                     SMTPClient, client_tls_context, free_ports, nats_request, wait_until)

ROOT = Path(__file__).resolve().parents[2]
LOCALSTACK = ROOT / "deploy" / "localstack.sh"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# What every test may assume unless it changes it (through mailctl): failed logins are not
# slowed down, and the limiter's HAMR and harvesting (tested on their own) stay out of the
# way. Keys mailctl does not know (yet) are left out.
BASELINE_SETTINGS = {"auth.failure_delay_ms": "0", "hamr.enabled": "off", "harvest.enabled": "off"}
# Without a limiter binary, authenticated mail must not wait for an answer that never comes.
BASELINE_WITHOUT_LIMITER = {"limiter.send_on_timeout": "allow"}
# The settings the tests may change, if `mailctl config show --json` cannot be read. Other rows
# in `settings`, such as internal.secret, are never the tests' to touch.
KNOWN_SETTINGS = ("relay.mode", "auth.sender_must_match", "auth.allow_plaintext",
                  "auth.failure_delay_ms", "smtp.max_message_size", "smtp.max_recipients",
                  "smtp.idle_timeout", "smtp.max_errors")
POP3_HOSTNAME = "pop3.test.example"
IMAP_HOSTNAME = "imap.test.example"
# Services started beside smtpd when $POSTERN_BIN has them, in this order.
HELPER_SERVICES = ("limiter", "notifier")
# mailctl commands that change what the limiter holds, and their read-only subcommands.
LIMITER_COMMANDS = ("hamr", "harvest", "alert-address")
READ_ONLY_SUBCOMMANDS = {"show", "status", "blocks", "list"}
# A system setting the limiter logs in its "settings" line and that no test relies on:
# limiter_sync() sets it to a sentinel value and puts it back.
LIMITER_SENTINEL_KEY = "hamr.max_recipients"
LIMITER_SETTINGS_RE = re.compile(r'msg="settings" (.*)$')


def postern_bin():
    return Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()


def config_loaded(svc):
    """True once a front end has logged its first configuration load."""
    out = svc.since(svc.started_at)
    return 'msg="configuration loaded"' in out or 'msg="OPEN RELAY' in out


def sanitizer_findings(text):
    return [m for m in SANITIZER_MARKS if m in text]


# The programs that log in to NATS as a bus user of their own (deploy/nats-auth.sh).
BUS_USERS = ("smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd", "mailctl", "webd")


def as_bus_user(env, user):
    """env with the NATS credentials of user instead of mailctl's, which postern.env (and so
    client_env()) gives: every password file of the harness's stack lies in one folder."""
    env = dict(env)
    if env.get("NATS_PASSWORD_FILE") and user in BUS_USERS:
        env["NATS_USER"] = user
        env["NATS_PASSWORD_FILE"] = str(Path(env["NATS_PASSWORD_FILE"]).parent
                                        / f"{user}.password")
        env.pop("NATS_PASSWORD", None)
    return env


class Service:
    """One Postern program run by the harness, its output in DIR/<name>.log."""

    def __init__(self, name, exe, env, log, ready):
        self.name, self.exe, self.env, self.log, self.ready = name, exe, env, log, ready
        self.proc = None
        self.started_at = 0

    def start(self, wait=True):
        """Starts the program and (wait) waits until it is ready."""
        self.started_at = self.size()  # where this run's output begins in the log
        # Whoever built the environment, the program logs in to NATS as itself.
        env = as_bus_user(self.env, Path(self.exe).name)
        with open(self.log, "ab") as log:
            log.write(f"--- harness: starting {self.exe} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen([str(self.exe)], env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd=str(self.log.parent))
        if wait:
            self.wait_ready()

    def wait_ready(self, steady_s=0):
        """Returns once ready() has held for steady_s seconds (0: once it holds)."""
        deadline = time.monotonic() + 60
        since = None  # when ready() began to hold
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} stopped at start ({self.exit_text()});"
                                   f" log {self.log}:\n{self.tail()}")
            try:
                ok = self.ready()
            except Exception:  # noqa: BLE001 - not ready yet
                ok = False
            now = time.monotonic()
            since = (since or now) if ok else None
            if ok and now - since >= steady_s:
                return
            if now > deadline:
                raise RuntimeError(f"{self.name} not {'steadily ' if steady_s else ''}ready"
                                   f" after 60s; log {self.log}:\n{self.tail()}")
            time.sleep(0.3 if steady_s else 0.1)

    def exit_text(self):
        return f"exit status {self.proc.returncode if self.proc else '?'}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, wait for a clean exit; returns the list of problems found."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"{self.name} did not exit within 60s of SIGTERM (killed)")
        if self.proc.returncode != 0 and not problems:
            problems.append(f"{self.name} exited with status {self.proc.returncode} after SIGTERM")
        self.proc = None
        return problems

    def kill(self):
        """SIGKILL, as a crash would; the exit status is expected and not a problem."""
        if self.proc is None:
            return
        with open(self.log, "ab") as log:
            log.write(f"--- harness: killing {self.name} (SIGKILL) ---\n".encode())
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def size(self):
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, offset):
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=60):
        return "\n".join(self.text().splitlines()[-n:])


class Frontend:
    """One smtpd process as clients see it: its three ports."""

    def __init__(self, stack, name, mx, submission, smtps):
        self.stack, self.name = stack, name
        self.mx, self.submission, self.smtps = mx, submission, smtps

    def __repr__(self):
        return f"<Frontend {self.name} mx={self.mx}>"

    @property
    def service(self):
        return self.stack.services[self.name]

    def port(self, name):
        return {"mx": self.mx, "submission": self.submission, "smtps": self.smtps}[name]

    def listening(self):
        for port in (self.mx, self.submission, self.smtps):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        return True

    def connect(self, name="mx", source=None, timeout=30):
        return SMTPClient.connect(self.port(name), implicit_tls=(name == "smtps"), source=source,
                                  tls_context=self.stack.tls_context(), timeout=timeout)

    def smtplib_client(self, name="mx", source=None, timeout=30):
        """A real smtplib client; STARTTLS is left to the test, implicit TLS is done."""
        src = (source, 0) if source else None
        if name == "smtps":
            return smtplib.SMTP_SSL("127.0.0.1", self.smtps, local_hostname="client.test",
                                    source_address=src, timeout=timeout,
                                    context=self.stack.tls_context())
        return smtplib.SMTP("127.0.0.1", self.port(name), local_hostname="client.test",
                            source_address=src, timeout=timeout)

    def ehlo_size(self):
        with self.connect("mx") as c:
            caps = c.ehlo().keywords()
        return int(caps["SIZE"][0]) if caps.get("SIZE") else None


class Stack:
    """The running system. One per session."""

    in_containers = False  # the services run in a compose project
    def __init__(self, tmp, binpath):
        self.dir = tmp
        self.bin = binpath
        self.pg_port, self.nats_port, self.mx, self.submission, self.smtps = free_ports(5)
        # used when pop3d and imapd are built; picked together, so they differ
        self.pop3, self.pop3s, self.imap, self.imaps = free_ports(4)
        self.web = free_ports(1)[0]  # webd's HTTPS port
        self.client_address = "127.0.0.1"  # how the services see the harness's clients
        self.env = {}
        self.cert = tmp / "cert.pem"
        self.key = tmp / "key.pem"
        self.services = {}  # name -> Service, in start order
        self.crashes = []
        self.default_size = None
        self.baseline_settings = dict(BASELINE_SETTINGS)
        self.known_settings = set(KNOWN_SETTINGS)
        self.dirty = True  # the baseline has not been applied yet
        self._sentinel = itertools.count(1)
        # smtpd processes by service name; more are added by add_smtpd().
        self.frontends = {"smtpd": Frontend(self, "smtpd", self.mx, self.submission, self.smtps)}
        self.limiter_dirty = True  # the limiter's state may differ from the baseline (mailctl)
        self._limiter_sentinel = itertools.count(1)

    # --- infrastructure ------------------------------------------------------------------
    def localstack(self, *args):
        # The harness's nats-server has one more user, "test", allowed everything: the
        # harness's own clients (support.NATS_LOGIN) log in as it.
        env = dict(os.environ, POSTERN_NATS_TEST_USER="1")
        r = subprocess.run(["sh", str(LOCALSTACK), *args], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=180, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"localstack.sh {' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}{r.stderr}")
        return r.stdout

    def start_servers(self):
        self.localstack("start", str(self.dir), str(self.pg_port), str(self.nats_port))
        for line in (self.dir / "postern.env").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.env[k] = v
        assert "DATABASE_URL" in self.env and "NATS_URL" in self.env, self.env
        support.NATS_LOGIN = self.nats_login("test")

    def nats_login(self, user):
        """(user, password) of a bus user of this stack's nats-server (deploy/nats-auth.sh;
        "test" is the harness's own)."""
        return user, (self.dir / "nats-auth" / f"{user}.password").read_text().strip()

    def close(self):
        """Stops PostgreSQL and NATS; the problems found."""
        try:
            self.localstack("stop", str(self.dir))
        except RuntimeError as e:
            return [str(e)]
        return []

    def pg_stop(self):
        self.localstack("pg-stop", str(self.dir))

    def pg_start(self):
        self.localstack("pg-start", str(self.dir))

    def make_cert(self):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    def tls_context(self):
        return client_tls_context(self.cert)

    def client_env(self):
        env = dict(os.environ)
        env.update(self.env)
        return env

    def smtpd_env(self):
        env = self.client_env()
        env.update({
            "TLS_CERT": str(self.cert),
            "TLS_KEY": str(self.key),
            "SMTP_PORT": str(self.mx),
            "SUBMISSION_PORT": str(self.submission),
            "SMTPS_PORT": str(self.smtps),
            "LISTEN_ADDRESS": "127.0.0.1",
            "SMTP_HOSTNAME": SMTP_HOSTNAME,
        })
        return env

    def smtpd_listening(self):
        for port in (self.mx, self.submission, self.smtps):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        return True

    def pop3d_env(self):
        env = self.client_env()
        env.update({
            "TLS_CERT": str(self.cert),
            "TLS_KEY": str(self.key),
            "POP3_PORT": str(self.pop3),
            "POP3S_PORT": str(self.pop3s),
            "LISTEN_ADDRESS": "127.0.0.1",
            "POP3_HOSTNAME": POP3_HOSTNAME,
        })
        return env

    def pop3d_listening(self):
        for port in (self.pop3, self.pop3s):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        return True

    @property
    def has_pop3d(self):
        return "pop3d" in self.services

    def imapd_env(self):
        env = self.client_env()
        env.update({
            "TLS_CERT": str(self.cert),
            "TLS_KEY": str(self.key),
            "IMAP_PORT": str(self.imap),
            "IMAPS_PORT": str(self.imaps),
            "LISTEN_ADDRESS": "127.0.0.1",
            "IMAP_HOSTNAME": IMAP_HOSTNAME,
        })
        return env

    def imapd_listening(self):
        for port in (self.imap, self.imaps):
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        return True

    @property
    def has_imapd(self):
        return "imapd" in self.services

    def webd_env(self):
        env = self.client_env()
        env.update({
            "TLS_CERT": str(self.cert),
            "TLS_KEY": str(self.key),
            "WEB_PORT": str(self.web),
            "LISTEN_ADDRESS": "127.0.0.1",
        })
        return env

    def webd_listening(self):
        with socket.create_connection(("127.0.0.1", self.web), timeout=2):
            pass
        return True

    @property
    def has_webd(self):
        return "webd" in self.services

    @property
    def web_url(self):
        return f"https://127.0.0.1:{self.web}"

    def limiter_answering(self):
        # A read-only request every limiter answers: the first page of the active blocks
        # (paged: the whole list in one reply is refused past about 15,000 blocks).
        first_page = self.pb.BlockListRequest(paged=True).SerializeToString()
        return nats_request(self.env["NATS_URL"], "postern.limiter.blocks", first_page,
                            timeout=2) is not None

    def configure_services(self):
        if not (self.bin / "smtpd").exists():
            raise RuntimeError(f"{self.bin / 'smtpd'} does not exist: build it first (make)")
        ready = {"limiter": self.limiter_answering}
        for name in HELPER_SERVICES:
            exe = self.bin / name
            if exe.exists():
                self.services[name] = Service(name, exe, self.client_env(), self.dir / f"{name}.log",
                                              ready.get(name, lambda: True))
        self.services["smtpd"] = Service("smtpd", self.bin / "smtpd", self.smtpd_env(),
                                         self.dir / "smtpd.log", self.smtpd_listening)
        if (self.bin / "pop3d").exists():
            self.services["pop3d"] = Service("pop3d", self.bin / "pop3d", self.pop3d_env(),
                                             self.dir / "pop3d.log", self.pop3d_listening)
        if (self.bin / "imapd").exists():
            self.services["imapd"] = Service("imapd", self.bin / "imapd", self.imapd_env(),
                                             self.dir / "imapd.log", self.imapd_listening)
        if (self.bin / "webd").exists():
            self.services["webd"] = Service("webd", self.bin / "webd", self.webd_env(),
                                            self.dir / "webd.log", self.webd_listening)
        if "limiter" not in self.services:
            self.baseline_settings.update(BASELINE_WITHOUT_LIMITER)

    def learn_settings(self):
        """The settings this mailctl knows; the baseline keeps only those."""
        r = self.mailctl("--json", "config", "show", check=False)
        try:
            keys = {item["key"] for item in json.loads(r.stdout)["settings"]}
        except (ValueError, KeyError, TypeError):
            keys = set()
        if keys:
            self.known_settings = keys
        self.baseline_settings = {k: v for k, v in self.baseline_settings.items()
                                  if k in self.known_settings}

    def start_services(self):
        for svc in self.services.values():
            if not svc.alive():
                svc.stop()
                svc.start()

    def stop_services(self):
        problems = []
        for svc in reversed(list(self.services.values())):
            problems += svc.stop()
        return problems

    @property
    def log(self):
        return self.services["smtpd"].log

    def log_offsets(self):
        return {name: svc.size() for name, svc in self.services.items()}

    def logs_since(self, offsets):
        return {name: svc.since(offsets.get(name, 0)) for name, svc in self.services.items()}

    def log_tail(self, n=60):
        return self.services["smtpd"].tail(n)

    # --- clients ---------------------------------------------------------------------------
    def port(self, name):
        """The port of a listener: mx, submission, smtps (smtpd), pop3, pop3s (pop3d), imap,
        imaps (imapd)."""
        return {"mx": self.mx, "submission": self.submission, "smtps": self.smtps,
                "pop3": self.pop3, "pop3s": self.pop3s, "imap": self.imap,
                "imaps": self.imaps}[name]

    def connect(self, name="mx", source=None, timeout=30):
        return SMTPClient.connect(self.port(name), implicit_tls=(name == "smtps"), source=source,
                                  tls_context=self.tls_context(), timeout=timeout)

    def smtplib_client(self, name="mx", source=None, timeout=30):
        """A real smtplib client; STARTTLS is left to the test, implicit TLS is done."""
        src = (source, 0) if source else None
        if name == "smtps":
            return smtplib.SMTP_SSL("127.0.0.1", self.smtps, local_hostname="client.test",
                                    source_address=src, timeout=timeout, context=self.tls_context())
        return smtplib.SMTP("127.0.0.1", self.port(name), local_hostname="client.test",
                            source_address=src, timeout=timeout)

    def mailctl(self, *args, input=None, check=True):
        exe = self.bin / "mailctl"
        args = [str(a) for a in args]
        words = [a for a in args if not a.startswith("--")]
        if words[:1] in (["config"], ["relay"]) and words[1:2] not in (["show"], ["list"]):
            self.dirty = True
        if words[:1] and words[0] in LIMITER_COMMANDS and \
                not set(words[1:3]) & READ_ONLY_SUBCOMMANDS:
            self.dirty = self.limiter_dirty = True
        if words[:1] == ["config"] and words[1:2] in (["set"], ["unset"]) and words[2:3] and \
                words[2].split(".")[0] in ("hamr", "harvest", "limiter", "notifier"):
            self.limiter_dirty = True
        r = subprocess.run([str(exe), *args], input=input, capture_output=True, text=True,
                           env=self.client_env(), timeout=120,
                           stdin=None if input is not None else subprocess.DEVNULL)
        found = sanitizer_findings(r.stderr)
        assert not found, f"mailctl {' '.join(args)}: sanitizer report:\n{r.stderr}"
        if check and r.returncode != 0:
            raise AssertionError(f"mailctl {' '.join(args)} exited {r.returncode}:\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def sql(self, query, params=None):
        conn = psycopg2.connect(self.env["DATABASE_URL"], connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, params)
                if cur.description is None:
                    return []
                return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        for row in cur.fetchall()]
        finally:
            conn.close()

    # --- the store ---------------------------------------------------------------------------
    def inbox(self, address):
        """[(uid, size, raw)] in the user's INBOX, by UID."""
        return self.sql(
            "SELECT m.uid, m.size, m.raw FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN users u ON u.id = b.user_id WHERE u.address = %s AND b.name = 'INBOX'"
            " ORDER BY m.uid", (address,))

    def find(self, address, tok):
        """The raw messages in address's INBOX that contain tok."""
        return [raw for _, _, raw in self.inbox(address) if tok.encode() in raw]

    def messages_with(self, tok):
        """Every stored copy (any mailbox) containing tok: [(address, raw)]."""
        return self.sql(
            "SELECT u.address, m.raw FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN users u ON u.id = b.user_id WHERE position(%s::bytea in m.raw) > 0",
            (tok.encode(),))

    def queued(self, tok):
        """Outbound queue entries containing tok: [(queue_id, sender, recipients, raw)]."""
        return self.sql(
            "SELECT queue_id, sender, recipients, raw FROM outbound_queue"
            " WHERE position(%s::bytea in raw) > 0 ORDER BY id", (tok.encode(),))

    def queue_count(self):
        return self.sql("SELECT count(*) FROM outbound_queue")[0][0]

    # --- settings ------------------------------------------------------------------------------
    def ehlo_size(self):
        """The SIZE smtpd announces to a new session right now."""
        with self.connect("mx") as c:
            caps = c.ehlo().keywords()
        return int(caps["SIZE"][0]) if caps.get("SIZE") else None

    def relay_refused_from(self, source):
        """True when an unauthenticated client at source may not relay."""
        with self.connect("mx", source=source) as c:
            c.ehlo()
            c.expect("MAIL FROM:<probe@probe.example>", 250)
            r = c.cmd("RCPT TO:<probe@relay-probe.example>")
            c.cmd("RSET")
        return r.code >= 500

    def reset_settings(self):
        """Back to the baseline, then wait until smtpd has reloaded. smtpd reloads on
        postern.config.changed; a sentinel SIZE, seen first set and then gone, proves that a
        reload after the last change has happened."""
        limiter_dirty = self.limiter_dirty
        if limiter_dirty:
            self.reset_limiter_state()
        sentinel = 7_000_000 + next(self._sentinel)
        self.mailctl("config", "set", "smtp.max_message_size", sentinel)
        wait_until(lambda: self.ehlo_size() == sentinel, timeout=30, what=f"SIZE {sentinel}")
        for fe in self.extra_frontends():
            wait_until(lambda: fe.ehlo_size() == sentinel, timeout=30,
                       what=f"SIZE {sentinel} at {fe.name}")
        skip = set(self.baseline_settings) | {"relay.mode", "smtp.max_message_size"}
        for (key,) in self.sql("SELECT key FROM settings WHERE scope = 'system' AND key = ANY(%s)"
                               " ORDER BY key", (sorted(self.known_settings),)):
            if key not in skip:
                self.mailctl("config", "unset", key)
        self.mailctl("relay", "mode", "none")
        for (net,) in self.sql("SELECT network::text FROM relay_networks"):
            self.mailctl("relay", "deny", net)
        for key, value in self.baseline_settings.items():
            self.mailctl("config", "set", key, value)
        self.mailctl("config", "unset", "smtp.max_message_size")
        wait_until(lambda: self.ehlo_size() == self.default_size, timeout=30,
                   what=f"SIZE back to {self.default_size}")
        wait_until(lambda: self.relay_refused_from("127.0.0.2"), timeout=30,
                   what="relaying refused to 127.0.0.2")
        for fe in self.extra_frontends():
            wait_until(lambda: fe.ehlo_size() == self.default_size, timeout=30,
                       what=f"SIZE back to {self.default_size} at {fe.name}")
        if limiter_dirty:
            seen = self.limiter_sync()
            if seen is not None:
                for key, value in self.baseline_settings.items():
                    if key in seen:
                        assert seen[key] == value, f"limiter still has {key}={seen[key]}: {seen}"
        self.dirty = False
        self.limiter_dirty = False

    # --- the limiter's state ----------------------------------------------------------------
    def reset_limiter_state(self):
        """No blocks, no disabled accounts, no exempt networks, no alert addresses, no HAMR
        settings below the system level, no per-service harvesting settings."""
        if not self.sql("SELECT to_regclass('blocks') IS NOT NULL")[0][0]:
            return
        for (net,) in self.sql("SELECT network::text FROM blocks WHERE until > now()"):
            self.mailctl("harvest", "unblock", net, check=False)
        for (net,) in self.sql("SELECT network::text FROM harvest_exempt"):
            self.mailctl("harvest", "exempt", "del", net)
        for (address,) in self.sql("SELECT address FROM alert_addresses"):
            self.mailctl("alert-address", "del", address)
        for (address,) in self.sql("SELECT u.address FROM send_disabled d"
                                   " JOIN users u ON u.id = d.user_id"):
            self.mailctl("hamr", "enable", "--user", address)
        if self.sql("SELECT 1 FROM settings WHERE scope = 'user' AND key LIKE 'hamr.%'"):
            self.mailctl("hamr", "reset", "--system")
        for (domain,) in self.sql("SELECT DISTINCT d.name FROM settings s JOIN domains d"
                                  " ON s.scope = 'domain' AND d.id = s.scope_id"
                                  " WHERE s.key LIKE 'hamr.%'"):
            self.mailctl("hamr", "unset", "--domain", domain, "--all")
        for (service,) in self.sql("SELECT DISTINCT split_part(key, '.', 2) FROM settings"
                                   " WHERE scope = 'system'"
                                   " AND key ~ '^harvest[.](smtp|pop3|imap|web)[.]'"):
            self.mailctl("harvest", "unset", "--service", service, "--all")

    def limiter_settings_lines(self, offset):
        """The limiter's "settings" log lines after offset, as dicts."""
        out = []
        for line in self.services["limiter"].since(offset).splitlines():
            m = LIMITER_SETTINGS_RE.search(line)
            if m:
                out.append(dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv))
        return out

    def limiter_sync(self, timeout=60):
        """Returns once the limiter has reloaded everything committed before the call (system
        settings, exempt networks, blocks, disabled accounts), with the settings it logged
        last (a dict), or None without a running limiter. A system setting the limiter logs
        is set to a sentinel and then put back; the limiter logs both, and its reload cycles
        run one after the other, so the second line comes after a whole cycle that started
        after the call."""
        svc = self.services.get("limiter")
        if svc is None or not svc.alive():
            return None
        dirty = self.dirty, self.limiter_dirty
        before = self.sql("SELECT value FROM settings WHERE scope = 'system' AND key = %s",
                          (LIMITER_SENTINEL_KEY,))
        sentinel = str(9_000_000 + next(self._limiter_sentinel))
        offset = svc.size()
        self.mailctl("config", "set", LIMITER_SENTINEL_KEY, sentinel)

        def seen(value, after):
            lines = self.limiter_settings_lines(after)
            for i, d in enumerate(lines):
                if d.get(LIMITER_SENTINEL_KEY) == value:
                    return i + 1
            return None

        first = wait_until(lambda: seen(sentinel, offset), timeout=timeout,
                           what=f"the limiter to log {LIMITER_SENTINEL_KEY}={sentinel}")
        if before:
            self.mailctl("config", "set", LIMITER_SENTINEL_KEY, before[0][0])
        else:
            self.mailctl("config", "unset", LIMITER_SENTINEL_KEY)
        self.dirty, self.limiter_dirty = dirty

        def back():
            lines = self.limiter_settings_lines(offset)[first:]
            return lines[-1] if lines and lines[-1].get(LIMITER_SENTINEL_KEY) != sentinel else None

        return wait_until(back, timeout=timeout,
                          what=f"the limiter to log {LIMITER_SENTINEL_KEY} back from {sentinel}")

    def limiter_loaded(self, timeout=60):
        """Waits until the running limiter has read its state (blocks, disabled accounts) from
        PostgreSQL once since it started."""
        svc = self.services["limiter"]
        wait_until(lambda: 'msg="disabled accounts loaded"' in svc.since(svc.started_at),
                   timeout=timeout, what="the limiter to load its state from PostgreSQL")

    def stop_limiter(self, kill=False):
        self.stop_service("limiter", kill)

    def start_limiter(self, wait=True):
        self.start_service("limiter", wait)

    def stop_service(self, name, kill=False):
        """Stops one service (SIGTERM, a clean exit expected; or SIGKILL) and checks what it
        wrote since it started for sanitizer reports."""
        svc = self.services[name]
        started = svc.started_at
        if kill:
            svc.kill()
            problems = []
        else:
            problems = svc.stop()
        found = sanitizer_findings(svc.since(started))
        if found:
            problems.append(f"sanitizer reports in {svc.log}: {', '.join(found)}")
        assert not problems, "\n".join(problems) + "\n" + svc.tail()

    def start_service(self, name, wait=True):
        svc = self.services[name]
        if not svc.alive():
            svc.stop()
            svc.start(wait)

    # --- relayd processes -------------------------------------------------------------------
    def add_relayd(self, name, env=None, ready=None):
        """Starts a relayd process named name (sharing PostgreSQL and NATS) with env added to
        its environment; ready() tells when it is up (default: its "routes loaded" log line).
        It is stopped, and its log checked, with the other services, or by remove_service()."""
        if not (self.bin / "relayd").exists():
            pytest.skip("no relayd binary in $POSTERN_BIN")
        full = self.client_env()
        full.update({"SMTP_HOSTNAME": SMTP_HOSTNAME})
        full.update(env or {})
        svc = Service(name, self.bin / "relayd", full, self.dir / f"{name}.log", None)
        svc.ready = ready or (lambda svc=svc: 'msg="routes loaded"' in svc.since(svc.started_at))
        self.services[name] = svc
        svc.start()
        return svc

    def remove_service(self, name):
        """Stops a service added by a test (SIGTERM; fails unless it exits cleanly without a
        sanitizer report) and forgets it."""
        if name not in self.services:
            return
        try:
            self.stop_service(name)
        finally:
            del self.services[name]

    # --- more smtpd processes --------------------------------------------------------------
    def frontend(self, name="smtpd"):
        return self.frontends[name]

    def extra_frontends(self):
        return [fe for name, fe in self.frontends.items()
                if name != "smtpd" and name in self.services and self.services[name].alive()]

    def add_smtpd(self, name, env=None, extra_ports=()):
        """Starts another smtpd on free ports, sharing PostgreSQL and NATS, with env added
        to its environment and a free port for each name in extra_ports (HEALTH_PORT, ...),
        found in the returned Frontend's .ports. It is stopped, and its log checked, with
        the other services."""
        if name in self.frontends:
            return self.frontends[name]
        names = ("SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", *extra_ports)
        for attempt in range(3):
            ports = dict(zip(names, free_ports(len(names))))
            fe = Frontend(self, name, ports["SMTP_PORT"], ports["SUBMISSION_PORT"],
                          ports["SMTPS_PORT"])
            fe.ports = ports
            full = self.smtpd_env()
            full.update(env or {})
            full.update({k: str(v) for k, v in ports.items()})
            # Ready once it listens and has its configuration (else a first MAIL gets 4xx).
            svc = Service(name, self.bin / "smtpd", full, self.dir / f"{name}.log", None)
            svc.ready = lambda svc=svc, fe=fe: fe.listening() and config_loaded(svc)
            try:
                svc.start()
                break
            except RuntimeError:
                # Another program took a port between the pick and the bind: pick again.
                out = svc.since(svc.started_at)
                if attempt == 2 or not ('msg="cannot listen"' in out
                                        or 'msg="health endpoint not started"' in out):
                    raise
        self.services[name] = svc
        self.frontends[name] = fe
        return fe


# --- the suite against a compose stack ----------------------------------------------------

COMPOSE_PROJECT = os.environ.get("POSTERN_E2E_COMPOSE", "")
# What a compose stack cannot give a test, and why: the markers left out there.
COMPOSE_LEFT_OUT = {
    "client_addresses": "connects from several 127.0.0.x addresses; through a published port "
                        "every client is the bridge network's gateway",
    "own_processes": "starts smtpd, notifier or limiter processes with settings of its own",
}
# Fixtures that start processes of their own: their tests are own_processes.
OWN_PROCESS_FIXTURES = {"smtpd2", "health_smtpd", "proxied", "draining_smtpd", "queue_metrics"}


def compose_cmd(*args, check=True, timeout=180):
    cmd = os.environ.get("POSTERN_E2E_COMPOSE_CMD", "docker-compose").split()
    files = []
    for f in os.environ.get("POSTERN_E2E_COMPOSE_FILES", "docker-compose.yml").split(":"):
        files += ["-f", str(ROOT / f)]
    r = subprocess.run([*cmd, "-p", COMPOSE_PROJECT, *files, *args], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=timeout, cwd=str(ROOT))
    if check and r.returncode != 0:
        raise RuntimeError(f"compose {' '.join(args)} failed ({r.returncode}):\n"
                           f"{r.stdout}{r.stderr}")
    return r.stdout


def docker(*args, check=True, timeout=60):
    r = subprocess.run(["docker", *args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def greets(port, prefix, implicit_tls=False):
    """True when a server answers on port with a greeting line that starts with prefix (a
    published port accepts connections even while nothing listens behind it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = raw
        if implicit_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw)
        sock.settimeout(5)
        line = sock.makefile("rb").readline()
        return line.startswith(prefix)


class ComposeService(Service):
    """One service of the compose stack through the Docker engine: its log is the
    container's output (offsets are times, for `docker logs --since`), stop, kill and start
    go through compose, and a restart the engine did on its own (restart policy) counts as
    the crash it was."""

    def __init__(self, name, ready):
        self.name, self.ready = name, ready
        self.proc = None  # no process of ours
        # A service with replicas (the limiter): the first container stands for them in
        # logs and state; stop, kill and start reach every one (through compose).
        ids = compose_cmd("ps", "-q", name).split()
        self.id = ids[0] if ids else ""
        if not self.id:
            raise RuntimeError(f"compose service {name} has no container")
        self.log = f"docker logs {self.id[:12]} ({name})"
        self.started_at = 0
        self.restarts = self.state()["RestartCount"]

    def state(self):
        out = docker("inspect", "-f", "{{json .State}} {{.RestartCount}}", self.id).stdout
        state, count = out.rsplit(" ", 1)
        state = json.loads(state)
        state["RestartCount"] = int(count)
        return state

    def alive(self):
        st = self.state()
        return st["Running"] and st["RestartCount"] == self.restarts

    def start(self, wait=True):
        self.started_at = self.size()
        compose_cmd("start", self.name)
        self.restarts = self.state()["RestartCount"]
        if wait:
            # The ones behind the balancer must greet steadily: its health checks
            # (deploy/docker/haproxy/haproxy.cfg: fall 2 every 2 s, rise 2 every 1 s) can still
            # take a front end out just after it greets again (failures counted while it was
            # stopped), and close every connection until they bring it back.
            self.wait_ready(6 if self.name in ("smtpd", "pop3d", "imapd") else 0)

    def exit_text(self):
        st = self.state()
        return f"{st['Status']}, exit status {st['ExitCode']}, {st['RestartCount']} restarts"

    def stop(self):
        """SIGTERM through compose (its stop grace period); the problems found."""
        st = self.state()
        if not st["Running"]:
            return []
        compose_cmd("stop", "-t", "60", self.name, timeout=120)
        code = self.state()["ExitCode"]
        return [] if code == 0 else [f"{self.name} exited with status {code} after SIGTERM"]

    def kill(self):
        compose_cmd("kill", "-s", "SIGKILL", self.name)

    def size(self):
        return time.time()

    def since(self, offset):
        r = subprocess.run(["docker", "logs", "--since", f"{offset:.6f}", self.id],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=60)
        return r.stdout.decode("utf-8", "replace")

    def text(self):
        return self.since(0)


class ComposeStack(Stack):
    """The stack of a compose project started by tests/deploy/e2e_docker.sh, reached on the
    host ports it published."""

    in_containers = True
    def __init__(self, tmp, binpath):
        super().__init__(tmp, binpath)
        port = lambda name: int(os.environ[name])  # noqa: E731
        self.mx, self.submission, self.smtps = (port("SMTP_HOST_PORT"),
                                                port("SUBMISSION_HOST_PORT"),
                                                port("SMTPS_HOST_PORT"))
        self.pop3, self.pop3s = port("POP3_HOST_PORT"), port("POP3S_HOST_PORT")
        # imapd's host ports (tests/deploy/e2e_docker.sh publishes them); without them the
        # suite leaves a running imapd alone (has_imapd is false).
        self.imap_published = "IMAP_HOST_PORT" in os.environ
        if self.imap_published:
            self.imap, self.imaps = port("IMAP_HOST_PORT"), port("IMAPS_HOST_PORT")
        self.pg_port, self.nats_port = port("PG_HOST_PORT"), port("NATS_HOST_PORT")
        self.frontends = {"smtpd": Frontend(self, "smtpd", self.mx, self.submission, self.smtps)}
        network = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                         compose_cmd("ps", "-q", "smtpd").strip()).stdout
        gateways = [n.get("Gateway") for n in json.loads(network).values() if n.get("Gateway")]
        # How smtpd sees the harness's clients: the gateway of the bridge network.
        self.client_address = gateways[0] if gateways else "127.0.0.1"

    def start_servers(self):
        password = os.environ.get("POSTGRES_PASSWORD", "postern")
        # The bus requires TLS and a login: the CA and the harness's user "test" (made by
        # nats-secrets with NATS_TEST_USER=1, tests/deploy/compose.e2e.yml) from the first
        # node, mailctl's password from the mailctl service's own volume.
        node = compose_cmd("ps", "-q", "nats").split()[0]
        ca = self.dir / "nats-ca.pem"
        docker("cp", f"{node}:/etc/nats/conf/ca.pem", str(ca))
        test_pw = self.dir / "nats-test.password"
        docker("cp", f"{node}:/etc/nats/conf/test.password", str(test_pw))
        mailctl_pw = self.dir / "nats-mailctl.password"
        mailctl_pw.write_text(compose_cmd("run", "--rm", "-T", "--no-deps", "--entrypoint", "cat",
                                          "mailctl", "/etc/postern/nats/password"))
        os.chmod(mailctl_pw, 0o600)
        self.env = {
            "DATABASE_URL": f"postgresql://postern:{password}@127.0.0.1:{self.pg_port}/postern",
            # localhost: a name in the nodes' certificate
            "NATS_URL": f"tls://localhost:{self.nats_port}",
            "NATS_TLS_CA": str(ca),
            "NATS_USER": "mailctl",
            "NATS_PASSWORD_FILE": str(mailctl_pw),
        }
        support.NATS_TLS_CA = str(ca)
        support.NATS_LOGIN = ("test", test_pw.read_text().strip())

    def nats_login(self, user):
        if user == "mailctl":
            return user, Path(self.env["NATS_PASSWORD_FILE"]).read_text().strip()
        if user == "test":
            return support.NATS_LOGIN
        # The services' passwords stay in their own volumes.
        return user, compose_cmd("run", "--rm", "-T", "--no-deps", "--entrypoint", "cat",
                                 "-v", f"{COMPOSE_PROJECT}_nats-user-{user}:/x:ro",
                                 "mailctl", "/x/password").strip()

    def pg_stop(self):
        compose_cmd("stop", "postgres")

    def pg_start(self):
        compose_cmd("start", "postgres")
        wait_until(lambda: self.sql("SELECT 1") == [(1,)], timeout=60,
                   what="PostgreSQL to answer again")

    def make_cert(self):
        docker("cp", f"{self.services['smtpd'].id}:/etc/postern/tls/cert.pem", str(self.cert))

    def configure_services(self):
        if not (self.bin / "mailctl").exists():
            raise RuntimeError(f"{self.bin / 'mailctl'} does not exist: build it first (make)")
        running = set(compose_cmd("ps", "--services", "--filter", "status=running").split())
        ready = {
            "limiter": self.limiter_answering,
            "smtpd": lambda: all(greets(p, b"220", p == self.smtps)
                                 for p in (self.mx, self.submission, self.smtps)),
            "pop3d": lambda: all(greets(p, b"+OK", p == self.pop3s)
                                 for p in (self.pop3, self.pop3s)),
            "imapd": lambda: all(greets(p, b"* OK", p == self.imaps)
                                 for p in (self.imap, self.imaps)),
        }
        for name in ("limiter", "notifier", "smtpd", "pop3d", "imapd"):
            if name == "imapd" and not self.imap_published:
                continue
            if name in running:
                self.services[name] = ComposeService(name, ready.get(name, lambda: True))
        if "smtpd" not in self.services:
            raise RuntimeError(f"no running smtpd in compose project {COMPOSE_PROJECT}")

    def add_smtpd(self, name, env=None, extra_ports=()):
        raise RuntimeError("a compose stack runs no smtpd of the suite's own (own_processes)")

    def close(self):
        return []


def pytest_configure(config):
    for marker, why in COMPOSE_LEFT_OUT.items():
        config.addinivalue_line("markers", f"{marker}: {why}")


def pytest_collection_modifyitems(config, items):
    if not COMPOSE_PROJECT:
        return
    for item in items:
        if OWN_PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("own_processes")
    kept, left = [], {m: 0 for m in COMPOSE_LEFT_OUT}
    for item in items:
        marks = [m for m in COMPOSE_LEFT_OUT if item.get_closest_marker(m)]
        if marks:
            left[marks[0]] += 1
        else:
            kept.append(item)
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
    config._postern_left_out = left


def pytest_terminal_summary(terminalreporter, config):
    left = getattr(config, "_postern_left_out", None)
    if left:
        for marker, n in left.items():
            if n:
                terminalreporter.write_line(
                    f"against compose project {COMPOSE_PROJECT}: {n} tests left out ({marker}: "
                    f"{COMPOSE_LEFT_OUT[marker]})")


_STACK = None


@pytest.fixture(scope="session")
def pb():
    """postern_pb2, generated from proto/postern.proto for this session."""
    out = Path(tempfile.mkdtemp(prefix="postern-pb-"))
    subprocess.run(["protoc", f"--proto_path={ROOT / 'proto'}", f"--python_out={out}",
                    str(ROOT / "proto" / "postern.proto")], check=True, timeout=60)
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("postern_pb2")
    finally:
        sys.path.remove(str(out))
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def postern(pb):
    global _STACK
    binpath = postern_bin()
    tmp = Path(tempfile.mkdtemp(prefix="postern-e2e-"))
    # PostgreSQL runs as `postgres` when we are root: it must reach and own its files.
    os.chmod(tmp, 0o755)
    if os.getuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    stack = (ComposeStack if COMPOSE_PROJECT else Stack)(tmp, binpath)
    stack.pb = pb
    problems = []
    try:
        stack.start_servers()
        stack.configure_services()
        stack.mailctl("migrate")
        stack.learn_settings()
        stack.make_cert()
        stack.start_services()
        _STACK = stack
        stack.default_size = stack.ehlo_size()
        assert stack.default_size, "smtpd announces no SIZE"
        yield stack
    finally:
        _STACK = None
        problems += stack.stop_services()
        for svc in stack.services.values():
            text = svc.text()
            found = sanitizer_findings(text)
            if found:
                problems.append(f"sanitizer reports in {svc.log}: {', '.join(found)}")
            # A right a service uses and the bus's permission table does not give it.
            denied = [ln for ln in text.splitlines() if "Permissions Violation" in ln]
            if denied:
                problems.append(f"NATS refused {svc.name} (helm/postern/files/"
                                f"nats-permissions.txt):\n    " + "\n    ".join(denied[:5]))
        problems += stack.crashes
        problems += stack.close()
        if problems or os.environ.get("POSTERN_E2E_KEEP"):
            sys.stderr.write(f"\npostern e2e: kept {tmp} (service logs, pg.log, nats.log)\n")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        pytest.fail("end-to-end session problems:\n  " + "\n  ".join(problems)
                    + f"\nsmtpd log tail:\n{stack.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def accounts(postern):
    """Domain example.test with alice@ and bob@, created once per session."""
    postern.mailctl("domain", "add", DOMAIN)
    postern.mailctl("user", "add", ALICE, "--password-stdin", input=ALICE_PW + "\n")
    postern.mailctl("user", "add", BOB, "--password-stdin", input=BOB_PW + "\n")

    class Accounts:
        domain = DOMAIN
        alice, alice_pw = ALICE, ALICE_PW
        bob, bob_pw = BOB, BOB_PW

    return Accounts


@pytest.fixture(autouse=True)
def baseline(request, postern, accounts):
    """Every test starts from the baseline settings and running services; a test during
    which a service dies fails, and the next one gets a fresh process."""
    postern.start_services()
    if postern.dirty:
        postern.reset_settings()
    request.node.postern_log_offsets = postern.log_offsets()
    yield
    dead = [svc for svc in postern.services.values() if not svc.alive()]
    if dead:
        msgs = [f"{svc.name} stopped ({svc.exit_text()}) during {request.node.nodeid}"
                for svc in dead]
        postern.crashes.extend(msgs)
        logs = postern.logs_since(request.node.postern_log_offsets)
        pytest.fail("\n".join(msgs) + "\n" + "\n".join(logs[svc.name] for svc in dead),
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    offsets = getattr(item, "postern_log_offsets", None)
    if rep.failed and _STACK is not None and offsets is not None:
        for name, text in _STACK.logs_since(offsets).items():
            if text:
                rep.sections.append((f"{name} log during this test", text[-20000:]))


@pytest.fixture(scope="session")
def mailctl(postern):
    return postern.mailctl


@pytest.fixture(scope="session")
def sql(postern):
    return postern.sql


@pytest.fixture
def smtp(postern):
    """smtp("mx"|"submission"|"smtps", source=None): a connected SMTPClient (greeting read,
    implicit TLS done for smtps), closed after the test."""
    clients = []

    def connect(name="mx", source=None, timeout=30):
        c = postern.connect(name, source=source, timeout=timeout)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


@pytest.fixture
def nats(postern):
    """nats(subject, MsgType): a subscriber collecting decoded events, subscribed on return."""
    subs = []

    def subscribe(subject, msg_type):
        s = NatsSubscriber(postern.env["NATS_URL"], subject, msg_type)
        subs.append(s)
        return s

    yield subscribe
    for s in subs:
        s.close()


_user_seq = itertools.count(1)


@pytest.fixture
def new_user(postern):
    """new_user(password=...) -> a fresh address in example.test, known to smtpd."""

    def create(password="Fresh-pw-3"):
        address = f"u{next(_user_seq)}-{int(time.time() * 1000) % 100000000}@{DOMAIN}"
        postern.mailctl("user", "add", address, "--password-stdin", input=password + "\n")

        def accepted():
            with postern.connect("mx") as c:
                c.ehlo()
                c.expect("MAIL FROM:<probe@probe.example>", 250)
                return c.cmd(f"RCPT TO:<{address}>").code == 250

        wait_until(accepted, what=f"smtpd to accept RCPT {address}")
        return address

    return create


@pytest.fixture(scope="session")
def smtpd2(postern):
    """A second smtpd process on its own free ports, sharing PostgreSQL and NATS with the
    first: a Frontend (connect, smtplib_client, port). Started on first use; stopped, and its
    log checked for sanitizer reports, with the other services at the end of the session."""
    return postern.add_smtpd("smtpd2")


@pytest.fixture
def limiter_control(postern):
    """The limiter, to stop (SIGTERM, clean exit checked), kill (SIGKILL) and start again;
    running again after the test whatever happened."""
    if "limiter" not in postern.services:
        pytest.skip("no limiter binary in $POSTERN_BIN")

    class LimiterControl:
        service = postern.services["limiter"]

        @staticmethod
        def stop():
            postern.stop_limiter(kill=False)

        @staticmethod
        def kill():
            postern.stop_limiter(kill=True)

        @staticmethod
        def start(wait=True):
            """wait: until it answers requests (else only until it has logged its start)."""
            postern.start_limiter(wait)
            if not wait:
                svc = postern.services["limiter"]
                wait_until(lambda: 'msg="started"' in svc.since(svc.started_at), timeout=60,
                           what="the limiter to start")

    try:
        yield LimiterControl
    finally:
        postern.start_limiter()


@pytest.fixture
def service_control(postern):
    """stop(name, kill=False) / start(name) for any service of the stack (a clean exit and no
    sanitizer report expected from stop); every stopped service runs again after the test."""
    touched = []

    class ServiceControl:
        @staticmethod
        def stop(name, kill=False):
            touched.append(name)
            postern.stop_service(name, kill)

        @staticmethod
        def start(name):
            postern.start_service(name)

    try:
        yield ServiceControl
    finally:
        for name in touched:
            postern.start_service(name)


_drain_seq = itertools.count(1)


@pytest.fixture
def draining_frontend(postern):
    """draining_frontend(service, drain_timeout) -> (port, Service): a front end of the test's
    own ("smtpd", "pop3d" or "imapd"), sharing PostgreSQL and NATS, listening only on its
    plain port (SMTP_PORT, POP3_PORT or IMAP_PORT; the other listeners off), with
    DRAIN_TIMEOUT set. Afterwards it is stopped if still running (exit 0, no sanitizer report:
    postern.stop_service) and taken out of the stack."""
    plain = {"smtpd": ("SMTP_PORT", ("SUBMISSION_PORT", "SMTPS_PORT"), postern.smtpd_env),
             "pop3d": ("POP3_PORT", ("POP3S_PORT",), postern.pop3d_env),
             "imapd": ("IMAP_PORT", ("IMAPS_PORT",), postern.imapd_env)}
    started = []

    def start(service, drain_timeout):
        if COMPOSE_PROJECT:
            pytest.skip("a compose stack runs no front end of the suite's own (own_processes)")
        if not (postern.bin / service).exists():
            pytest.skip(f"{service} is not built in {postern.bin}")
        port_env, off, base_env = plain[service]
        name = f"{service}-drain-{next(_drain_seq)}"
        for attempt in range(3):
            [port] = free_ports(1)
            env = base_env()
            env.update({port_env: str(port), "DRAIN_TIMEOUT": str(drain_timeout)})
            env.update({k: "0" for k in off})

            def listening(port=port):
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    return True

            svc = Service(name, postern.bin / service, env, postern.dir / f"{name}.log", None)
            svc.ready = lambda svc=svc, listening=listening: listening() and config_loaded(svc)
            try:
                svc.start()
                break
            except RuntimeError:
                # Another program took the port between the pick and the bind: pick again.
                if attempt == 2 or 'msg="cannot listen"' not in svc.since(svc.started_at):
                    raise
        postern.services[name] = svc
        started.append(name)
        return port, svc

    yield start
    for name in started:
        try:
            postern.stop_service(name)
        finally:
            postern.services.pop(name, None)
