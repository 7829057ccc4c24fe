#!/usr/bin/python3
"""smtpd's memory under many concurrent sessions, each sending a message at the size limit.

Starts a private PostgreSQL and nats-server (deploy/localstack.sh) and one smtpd from
$POSTERN_BIN (default build/bin), sets smtp.max_message_size, then opens SESSIONS sessions
at once, each sending one message and staying open, and prints smtpd's resident size
(VmRSS) before, at its peak (VmHWM), with every session open after its reply, and after the
sessions have gone.

  /usr/bin/python3 bench/memory_sessions.py                 500 sessions, 1 MiB limit
  SESSIONS=200 LIMIT=4194304 MODE=at /usr/bin/python3 bench/memory_sessions.py

MODE=over (default): each message is 64 KiB over the limit and refused with 552 (nothing is
stored: the case where a session used to keep its whole buffer). MODE=at: each message is
just under the limit and stored (250). MEMORY_BUDGET, if set, is passed to smtpd.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()
SESSIONS = int(os.environ.get("SESSIONS", "500"))
LIMIT = int(os.environ.get("LIMIT", str(1 << 20)))
MODE = os.environ.get("MODE", "over")
MiB = 1 << 20
LINE = b"x" * 76 + b"\r\n"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


class Session:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""
        self.expect(220)

    def reply(self):
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("connection closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            if line[3:4] != b"-":
                return int(line[:3]), line.decode(errors="replace").rstrip()

    def expect(self, code, cmd=None):
        if cmd is not None:
            self.sock.sendall(cmd.encode() + b"\r\n")
        got, line = self.reply()
        if got != code:
            raise AssertionError(f"{cmd!r}: expected {code}, got {line!r}")

    def transaction(self, size, code):
        self.expect(250, "EHLO bench.client")
        self.expect(250, "MAIL FROM:<sender@outside.example>")
        self.expect(250, "RCPT TO:<user@bench.test>")
        self.expect(354, "DATA")
        head = b"Subject: memory bench\r\n\r\n"
        body = LINE * ((size - len(head) - 2) // len(LINE))
        self.sock.sendall(head + body + b".\r\n")
        self.expect(code)


def main():
    for prog in ("smtpd", "mailctl"):
        if not (BIN / prog).exists():
            sys.exit(f"memory_sessions: {BIN / prog} is missing: build first (make)")
    d = Path(tempfile.mkdtemp(prefix="postern-memory-bench."))
    os.chmod(d, 0o755)
    pg, nats, smtp, sub, smtps = free_ports(5)
    smtpd = None
    try:
        subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "start", str(d), str(pg),
                        str(nats)], check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ)
        for line in (d / "postern.env").read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
        mailctl = str(BIN / "mailctl")
        run = lambda *a, **kw: subprocess.run([mailctl, *a], env=env, check=True,  # noqa: E731
                                              stdout=subprocess.DEVNULL, **kw)
        run("migrate")
        run("domain", "add", "bench.test")
        run("user", "add", "user@bench.test", "--password-stdin", input=b"Bench-pw-1\n")
        run("config", "set", "smtp.max_message_size", str(LIMIT))
        env.update({"SMTP_PORT": str(smtp), "SUBMISSION_PORT": str(sub), "SMTPS_PORT": "0",
                    "LISTEN_ADDRESS": "127.0.0.1", "SMTP_HOSTNAME": "mx.bench.test"})
        log = open(d / "smtpd.log", "wb")
        smtpd = subprocess.Popen([str(BIN / "smtpd")], env=env, stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while b'msg="configuration loaded"' not in (d / "smtpd.log").read_bytes():
            if time.monotonic() > deadline or smtpd.poll() is not None:
                sys.exit("memory_sessions: smtpd did not start:\n"
                         + (d / "smtpd.log").read_text()[-2000:])
            time.sleep(0.1)

        size, code = (LIMIT + 64 * 1024, 552) if MODE == "over" else (LIMIT - 4096, 250)
        warm = Session(smtp)
        warm.transaction(size, code)
        warm.sock.close()
        time.sleep(0.5)
        before = status(smtpd.pid, "VmRSS")

        sessions = [Session(smtp) for _ in range(SESSIONS)]
        errors = []

        def go(s):
            try:
                s.transaction(size, code)
            except Exception as e:  # noqa: BLE001 - counted below
                errors.append(e)

        started = time.monotonic()
        threads = [threading.Thread(target=go, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - started
        time.sleep(0.5)
        open_rss = status(smtpd.pid, "VmRSS")
        peak = status(smtpd.pid, "VmHWM")
        for s in sessions:
            s.sock.close()
        time.sleep(1.0)
        after = status(smtpd.pid, "VmRSS")
        print(f"memory_sessions: {BIN / 'smtpd'}")
        print(f"  {SESSIONS} sessions, smtp.max_message_size {LIMIT} bytes, MODE={MODE}: "
              f"messages of {size} bytes, reply {code}; {len(errors)} failed; "
              f"{seconds:.1f} s")
        print(f"  smtpd VmRSS before           {before / MiB:8.1f} MiB")
        print(f"  smtpd VmHWM (peak)           {peak / MiB:8.1f} MiB  "
              f"({(peak - before) / SESSIONS / 1024:.0f} KiB a session over before)")
        print(f"  smtpd VmRSS, sessions open   {open_rss / MiB:8.1f} MiB  "
              f"({(open_rss - before) / SESSIONS / 1024:.0f} KiB a session over before)")
        print(f"  smtpd VmRSS, sessions gone   {after / MiB:8.1f} MiB")
        if errors:
            print(f"  first failure: {errors[0]!r}")
        return 1 if errors else 0
    finally:
        if smtpd is not None:
            smtpd.terminate()
            try:
                smtpd.wait(30)
            except subprocess.TimeoutExpired:
                smtpd.kill()
        subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "stop", str(d)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
