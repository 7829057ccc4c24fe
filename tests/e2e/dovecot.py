"""A private Dovecot IMAP server for differential tests and benchmarks.

Debian's dovecot-imapd runs from a configuration in a temporary folder: it listens on a
free loopback port, authenticates one plaintext test user from a passwd-file, keeps that
user's mail in a maildir under the same folder, and touches no system service (its own
base_dir, state_dir and log file; ssl = no; disable_plaintext_auth = no).

    from dovecot import Dovecot, dovecot_available
    d = Dovecot(user="tester", password="secret")   # or Dovecot() for the defaults
                                                    # extra_conf="...": appended to the config
    d.start()                                       # raises DovecotUnavailable if not installed
    uid = d.append(raw_bytes)                       # APPEND to INBOX byte for byte; the UID
    d.add_user("other", "other-pw")                 # one more user, with an empty INBOX
                                                    # (add_users([(user, pw), ...]) for many)
    with d.connect() as imap:                       # a logged-in imaplib.IMAP4, INBOX selected
        imap.uid("FETCH", str(uid), "(BODYSTRUCTURE)")
    d.stop()                                        # also on garbage collection and at exit

Attributes: port (the IMAP port), host ("127.0.0.1"), user, password, dir (the temporary
folder), maildir (the user's maildir). Also usable as a context manager (start/stop).
As root, Dovecot's own users run its login and internal processes and the user's mail
processes run as nobody (Dovecot refuses root for mail); otherwise the caller runs all.
"""

import atexit
import imaplib
import os
import pwd
import grp
import re
import shutil
import socket
import subprocess
import tempfile
import time

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
IMAP_BIN = "/usr/lib/dovecot/imap"


class DovecotUnavailable(Exception):
    """Dovecot (dovecot-core + dovecot-imapd) is not installed."""


def dovecot_available():
    """True when the dovecot binary and its IMAP process are installed."""
    return os.access(DOVECOT, os.X_OK) and os.access(IMAP_BIN, os.X_OK)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dovecot:
    def __init__(self, user="tester", password="tester-pw-1", mailbox_format="maildir",
                 extra_conf=""):
        self.user = user
        self.password = password
        self.host = "127.0.0.1"
        self.port = None
        self.dir = None
        self.maildir = None
        self.mailbox_format = mailbox_format
        # Appended to the generated configuration (e.g. a namespace block).
        self.extra_conf = extra_conf
        self._conf = None
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout=10.0):
        """Writes the configuration, starts Dovecot and waits until it greets."""
        if self._started:
            return self
        if not dovecot_available():
            raise DovecotUnavailable("dovecot-imapd is not installed (%s, %s)" % (DOVECOT, IMAP_BIN))
        self.dir = tempfile.mkdtemp(prefix="postern-dovecot.")
        os.chmod(self.dir, 0o755)
        self.port = _free_port()
        if os.getuid() == 0:
            mail_uid, mail_gid = pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid
            login_user, internal_user, chroot = "dovenull", "dovecot", "login"
        else:
            mail_uid, mail_gid = os.getuid(), os.getgid()
            login_user = internal_user = pwd.getpwuid(os.getuid()).pw_name
            chroot = ""
        d = os.path.join(self.dir, "dovecot")
        home = os.path.join(self.dir, "mail", self.user)
        self.maildir = os.path.join(home, "Maildir")
        os.makedirs(d)
        os.makedirs(home)
        os.chmod(os.path.join(self.dir, "mail"), 0o755)
        os.chown(home, mail_uid, mail_gid)
        self._conf = os.path.join(d, "dovecot.conf")
        with open(self._conf, "w") as f:
            f.write(f"""base_dir = {d}/run
state_dir = {d}/state
instance_name = postern-test-{self.port}
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {mail_uid}
mail_location = {self.mailbox_format}:~/Maildir
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  chroot = {chroot}
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{self.extra_conf}
""")
        passwd = os.path.join(d, "passwd")
        self._passwd, self._mail_ids = passwd, (mail_uid, mail_gid)
        with open(passwd, "w") as f:
            f.write(f"{self.user}:{{PLAIN}}{self.password}:{mail_uid}:{mail_gid}::{home}::\n")
        os.chmod(passwd, 0o640)
        if os.getuid() == 0:
            os.chown(passwd, 0, grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_gid)
        subprocess.run([DOVECOT, "-c", self._conf], check=True)
        self._started = True
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), 1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise RuntimeError("dovecot did not start:\n" + log)
            time.sleep(0.05)
        return self

    def stop(self):
        """Stops Dovecot and removes its folder (kept when POSTERN_DOVECOT_KEEP is set)."""
        if self._started:
            self._started = False
            subprocess.run([DOVECOT, "-c", self._conf, "stop"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Dovecot's master exits asynchronously; wait for its pid file to go.
            pidfile = os.path.join(os.path.dirname(self._conf), "run", "master.pid")
            deadline = time.monotonic() + 5
            while os.path.exists(pidfile) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.dir and not os.environ.get("POSTERN_DOVECOT_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log(self):
        """Dovecot's log so far ('' when there is none)."""
        try:
            with open(os.path.join(self.dir, "dovecot", "dovecot.log"), errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def add_users(self, users):
        """Adds users, [(user, password), ...], each with an empty maildir of its own, to the
        running server; log in as them with LOGIN. Dovecot reads its passwd-file again when
        the file changed, but looks at most once a second: this waits for the next second."""
        with open(self._passwd, "a") as f:
            for user, password in users:
                home = os.path.join(self.dir, "mail", user)
                os.makedirs(home)
                os.chown(home, *self._mail_ids)
                f.write(f"{user}:{{PLAIN}}{password}:{self._mail_ids[0]}:{self._mail_ids[1]}"
                        f"::{home}::\n")
        time.sleep(1.02 - time.time() % 1)

    def add_user(self, user, password):
        """add_users for one user."""
        self.add_users([(user, password)])

    # ---- client side -----------------------------------------------------------------
    def connect(self, mailbox="INBOX"):
        """A logged-in imaplib.IMAP4 with mailbox selected (None: nothing selected)."""
        imap = imaplib.IMAP4(self.host, self.port)
        imap.login(self.user, self.password)
        if mailbox is not None:
            typ, data = imap.select(mailbox)
            if typ != "OK":
                raise RuntimeError("SELECT %s: %r" % (mailbox, data))
        return imap

    def append(self, raw, mailbox="INBOX", flags=None):
        """APPENDs raw (bytes) byte for byte (imaplib.append would turn every bare LF into
        CRLF) and returns the new message's UID from the APPENDUID response code."""
        imap = self.connect(mailbox=None)
        try:
            imap.literal = bytes(raw)
            args = [mailbox] + ([flags] if flags else [])
            typ, data = imap._simple_command("APPEND", *args)
            if typ != "OK":
                raise RuntimeError("APPEND: %r" % (data,))
            m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(m.group(1)) if m else None
        finally:
            imap.logout()
