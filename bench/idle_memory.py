#!/usr/bin/python3
"""Resident memory per idle client connection of smtpd, pop3d and imapd.

The goal it checks: an idle connection costs under 8 KiB of resident memory on every front
end, measured with 10,000 connections. Starts a private PostgreSQL and nats-server
(deploy/localstack.sh), the limiter, then each front end from $POSTERN_BIN (default
build/bin) in turn, alone, on free ports, and for each:

  plain  a fresh process; one warm-up connection; VmRSS; IDLE_N connections to the plain
         port (smtp, pop3, imap), each left idle once it has read the greeting; a moment;
         VmRSS again: (open - before) / IDLE_N is the cost of one idle connection; then the
         connections close and VmRSS is read once more (what the process keeps).
  tls    the same with IDLE_TLS_N connections to the implicit-TLS port (smtps, pop3s,
         imaps), each idle after the handshake and the greeting, in another fresh process
         (so that it cannot reuse what the plain round freed). Reported beside the plain
         figure; the 8 KiB goal is for plain connections.
  floor  build/bench/tls_session_memory (bench/tls_session_memory.c): the heap OpenSSL
         itself keeps for one idle TLS session made from the front ends' TLS context, over
         IDLE_TLS_N sessions in one process without sockets: the part of the TLS figure
         that is OpenSSL's SSL object, which an open session cannot give back.

  /usr/bin/python3 bench/idle_memory.py                       10,000 plain, 1,000 TLS
  IDLE_N=2000 IDLE_TLS_N=200 SERVICES="smtpd imapd" /usr/bin/python3 bench/idle_memory.py
  IDLE_LINE=4000 ...   each connection first sends one command line of 4,000 bytes (NOOP
                       with a long argument, refused or not) and reads the reply, then idles:
                       what a connection keeps after it has been used

VmRSS is /proc/PID/status's: the kernel's socket buffers are not in it. The services run
with MEMORY_BUDGET=0 (no refusals however large they grow), smtp.idle_timeout at its
maximum (3600 s; pop3 and imap allow 600 and 1800 s by default, far longer than a round),
and the client's RLIMIT_NOFILE (raised to the hard limit, and the hard limit raised as root
when it is under IDLE_N + 1000). Prints a table and writes it, with the machine, the
versions and the command, to bench/results/idle_memory.txt. About half a minute with the
defaults.
"""

import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()
N = int(os.environ.get("IDLE_N", "10000"))
TLS_N = int(os.environ.get("IDLE_TLS_N", "1000"))
LINE = int(os.environ.get("IDLE_LINE", "0"))  # a command line of this many bytes first
SERVICES = os.environ.get("SERVICES", "smtpd pop3d imapd").split()
THREADS = int(os.environ.get("IDLE_THREADS", "32"))
SETTLE_S = 1.0  # after the last connection opened or closed, before VmRSS is read
GOAL = 8 * 1024
RESULTS = ROOT / "bench" / "results" / "idle_memory.txt"

# Per front end: its ports' variables (plain, implicit TLS, others switched off), the
# host name variable, and how its greeting starts.
FRONT_ENDS = {
    "smtpd": {"plain": "SMTP_PORT", "tls": "SMTPS_PORT", "off": ["SUBMISSION_PORT"],
              "hostname": "SMTP_HOSTNAME", "greeting": b"220 ",
              "command": b"NOOP "},
    "pop3d": {"plain": "POP3_PORT", "tls": "POP3S_PORT", "off": [],
              "hostname": "POP3_HOSTNAME", "greeting": b"+OK",
              "command": b"NOOP "},
    "imapd": {"plain": "IMAP_PORT", "tls": "IMAPS_PORT", "off": [],
              "hostname": "IMAP_HOSTNAME", "greeting": b"* OK",
              "command": b"a1 NOOP "},
}


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


def raise_nofile(need):
    """The soft limit up to the hard one; the hard one up to need when it is lower (root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        if os.geteuid() != 0:
            sys.exit(f"idle_memory: RLIMIT_NOFILE hard limit {hard} < {need} needed; raise it "
                     "(ulimit -Hn) or run as root")
        hard = need
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def nofile_for_child():
    """preexec_fn: the services may hold as many descriptors as the client opens."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Client:
    """Opens idle connections to one port: plain, or implicit TLS through ctx."""

    def __init__(self, port, greeting, command, ctx=None):
        self.port, self.greeting, self.command, self.ctx = port, greeting, command, ctx

    def open_one(self, _=None):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        try:
            if self.ctx:
                sock = self.ctx.wrap_socket(sock)  # the handshake happens here
            got = b""
            while b"\n" not in got:
                chunk = sock.recv(4096)
                if not chunk:
                    raise EOFError(f"closed before the greeting ({got!r})")
                got += chunk
            if not got.startswith(self.greeting):
                raise AssertionError(f"unexpected greeting {got[:80]!r}")
            if LINE > 0:
                # One long command first (refused or not), its reply read: the connection
                # has been used before it idles.
                sock.sendall(self.command + b"x" * LINE + b"\r\n")
                got = b""
                while not got.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise EOFError("closed after the long line")
                    got += chunk
            return sock
        except BaseException:
            sock.close()
            raise

    def open_many(self, n):
        """n connections, each greeted; returns (sockets, failures, first error, seconds)."""
        socks, errors = [], []
        started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            for fut in [pool.submit(self.open_one) for _ in range(n)]:
                try:
                    socks.append(fut.result())
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(e)
        return socks, len(errors), (errors[0] if errors else None), time.monotonic() - started


class Stack:
    """PostgreSQL, NATS and the limiter under a private directory; front ends on demand."""

    def __init__(self, d):
        self.d = d
        self.procs = []
        self.env = dict(os.environ)
        self.ports = {}

    def start(self):
        pg, nats = free_ports(2)
        subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "start", str(self.d),
                        str(pg), str(nats)], check=True, stdout=subprocess.DEVNULL)
        for line in (self.d / "postern.env").read_text().splitlines():
            k, _, v = line.partition("=")
            self.env[k] = v
        self.mailctl("migrate")
        self.mailctl("domain", "add", "bench.test")
        self.mailctl("user", "add", "user@bench.test", "--password-stdin", input=b"Bench-pw-1\n")
        self.mailctl("config", "set", "smtp.idle_timeout", "3600")
        self.cert, self.key = self.d / "cert.pem", self.d / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=localhost"],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        self.limiter = self.run("limiter", {}, ready=lambda log: b'msg="started"' in log)

    def mailctl(self, *args, **kw):
        subprocess.run([str(BIN / "mailctl"), *args], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, **kw)

    def bus_login(self, name):
        out = subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "nats-env",
                              str(self.d), name], check=True, capture_output=True, text=True)
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def run(self, name, extra, ready, ports=()):
        """Starts BIN/name logging in to NATS as itself; waits until ready(log bytes) and
        ports accept connections."""
        env = dict(self.env)
        env.update(self.bus_login(name))
        env.update(extra)
        log_path = self.d / f"{name}.log"
        log = open(log_path, "ab")
        start = log.tell()
        proc = subprocess.Popen([str(BIN / name)], env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, preexec_fn=nofile_for_child)
        log.close()
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            text = log_path.read_bytes()[start:]
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"idle_memory: {name} did not start:\n"
                         + text.decode(errors="replace")[-2000:])
            if ready(text) and all(port_open(p) for p in ports):
                return proc
            time.sleep(0.1)

    def front_end(self, name):
        fe = FRONT_ENDS[name]
        plain, tls = free_ports(2)
        extra = {fe["plain"]: str(plain), fe["tls"]: str(tls), "LISTEN_ADDRESS": "127.0.0.1",
                 fe["hostname"]: f"{name[:4]}.bench.test", "TLS_CERT": str(self.cert),
                 "TLS_KEY": str(self.key), "MEMORY_BUDGET": "0", "DRAIN_TIMEOUT": "0"}
        extra.update({var: "0" for var in fe["off"]})
        proc = self.run(name, extra, ready=lambda log: b'msg="configuration loaded"' in log,
                        ports=(plain, tls))
        return proc, plain, tls

    def stop(self, proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self):
        for proc in list(self.procs):
            self.stop(proc)
        subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "stop", str(self.d)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def measure(stack, name, tls, n):
    """One round in a fresh process: the figures as a dict."""
    fe = FRONT_ENDS[name]
    proc, plain, tls_port = stack.front_end(name)
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    client = Client(tls_port if tls else plain, fe["greeting"], fe["command"], ctx)
    try:
        client.open_one().close()  # warm-up: the first session's one-time allocations
        time.sleep(SETTLE_S)
        before = status(proc.pid, "VmRSS")
        socks, failed, first_error, seconds = client.open_many(n)
        time.sleep(SETTLE_S)
        open_rss = status(proc.pid, "VmRSS")
        open_anon = status(proc.pid, "RssAnon")
        alive = proc.poll() is None
        for s in socks:
            s.close()
        time.sleep(SETTLE_S)
        after = status(proc.pid, "VmRSS")
    finally:
        stack.stop(proc)
    opened = len(socks)
    return {"service": name, "tls": tls, "asked": n, "opened": opened, "failed": failed,
            "first_error": first_error, "seconds": seconds, "before": before,
            "open": open_rss, "open_anon": open_anon, "after": after, "alive": alive,
            "per_conn": (open_rss - before) / opened if opened else float("nan")}


def revision():
    """The checked-out commit, read from .git without running git."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:9]
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()[:9]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:9]
    except OSError:
        pass
    return "unknown"


def tool_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def openssl_floor(stack):
    """The tls_session_memory line as a dict, or None when it is not built or fails."""
    tool = ROOT / "build" / "bench" / "tls_session_memory"
    if TLS_N <= 0 or not tool.exists():
        return None
    out = subprocess.run([str(tool), str(stack.cert), str(stack.key), str(TLS_N)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(f"idle_memory: tls_session_memory failed: {out.stderr.strip()}", flush=True)
        return None
    return dict(kv.split("=", 1) for kv in out.stdout.split())


def report(results, total_s, nofile, floor):
    KiB = 1024
    MiB = 1 << 20
    by = {(r["service"], r["tls"]): r for r in results}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown CPU")
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) * KiB
    lines = [
        "## Idle connections: resident memory per connection (smtpd, pop3d, imapd)",
        "",
        f"Goal: an idle plain connection under {GOAL // KiB} KiB of resident memory on every "
        f"front end, measured with 10,000 connections. "
        f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}.",
        "",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {mem / (1 << 30):.0f} GiB, "
        f"Linux {os.uname().release}.",
        f"- Versions: Postern {revision()} (from {BIN}), "
        f"{tool_version(['openssl', 'version']).split(' (')[0]}, "
        f"{tool_version(['nats-server', '--version'])}; client Python {sys.version.split()[0]} "
        f"with {ssl.OPENSSL_VERSION}.",
        f"- Command: `IDLE_N={N} IDLE_TLS_N={TLS_N}"
        f"{f' IDLE_LINE={LINE}' if LINE else ''} /usr/bin/python3 bench/idle_memory.py`; "
        f"{total_s:.0f} s in all.",
        f"- Method: each round in a fresh process with MEMORY_BUDGET=0 and RLIMIT_NOFILE "
        f"{nofile}; one warm-up connection, VmRSS, N connections each left idle after the "
        f"greeting{f' and one command line of {LINE} bytes with its reply' if LINE else ''} (TLS: after the handshake, TLS 1.3, RSA 2048 self-signed), {SETTLE_S:.0f} s, "
        f"VmRSS again; per connection = (open - before) / N. Kernel socket buffers are not "
        f"in VmRSS.",
        "",
        "| service | plain conns | KiB/conn plain | TLS conns | KiB/conn TLS | goal (plain) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    def conns(r):
        if not r:
            return "-"
        return f"{r['opened']}" + (f" ({r['failed']} failed)" if r["failed"] else "")

    def kib(r):
        return f"{r['per_conn'] / KiB:.2f}" if r else "-"

    for name in SERVICES:
        p, t = by.get((name, False)), by.get((name, True))
        goal = "-" if not p else ("met" if p["per_conn"] < GOAL else "missed")
        lines.append(f"| {name} | {conns(p)} | {kib(p)} | {conns(t)} | {kib(t)} | {goal} |")
    lines += ["", "Details (VmRSS in MiB: before the round, with the connections open "
              "(RssAnon beside it), after they closed; time to open them):", "", "```"]
    for r in results:
        kind = "tls  " if r["tls"] else "plain"
        lines.append(
            f"{r['service']} {kind} n={r['opened']:<6} failed={r['failed']} "
            f"before={r['before'] / MiB:7.1f} open={r['open'] / MiB:7.1f} "
            f"(anon {r['open_anon'] / MiB:7.1f}) after={r['after'] / MiB:7.1f} "
            f"per_conn={r['per_conn']:8.0f} B open_s={r['seconds']:.1f}"
            + ("" if r["alive"] else " PROCESS EXITED"))
        if r["first_error"] is not None:
            lines.append(f"  first failure: {r['first_error']!r}")
    lines.append("```")
    if floor:
        lines += ["", f"OpenSSL's own share of the TLS figure: an idle {floor['protocol']} server "
                  f"session ({floor['cipher']}) made from the front ends' TLS context keeps "
                  f"{int(floor['idle_session_bytes']) / KiB:.2f} KiB of heap in OpenSSL, of which "
                  f"SSL_new alone {int(floor['ssl_new_bytes']) / KiB:.2f} KiB (glibc's bytes in "
                  f"use over {floor['sessions']} sessions, no sockets: "
                  f"`build/bench/tls_session_memory CERT KEY {floor['sessions']}`, "
                  f"bench/tls_session_memory.c). A TLS connection cannot cost less than that "
                  f"while its session is open; the rest of the TLS figure is the plain "
                  f"connection's."]
    return "\n".join(lines) + "\n"


def main():
    for prog in (*SERVICES, "limiter", "mailctl"):
        if not (BIN / prog).exists():
            sys.exit(f"idle_memory: {BIN / prog} is missing: build first (make)")
    unknown = [s for s in SERVICES if s not in FRONT_ENDS]
    if unknown:
        sys.exit(f"idle_memory: unknown service(s) {' '.join(unknown)}; "
                 f"choose from {' '.join(FRONT_ENDS)}")
    nofile = raise_nofile(max(N, TLS_N) + 1000)
    started = time.monotonic()
    d = Path(tempfile.mkdtemp(prefix="postern-idle-memory."))
    os.chmod(d, 0o755)
    stack = Stack(d)
    results = []
    failed = False
    floor = None
    try:
        stack.start()
        floor = openssl_floor(stack)
        for name in SERVICES:
            for tls, n in ((False, N), (True, TLS_N)):
                if n <= 0:
                    continue
                r = measure(stack, name, tls, n)
                results.append(r)
                failed |= bool(r["failed"]) or not r["alive"]
                print(f"idle_memory: {name} {'tls' if tls else 'plain'}: {r['opened']} open, "
                      f"{r['failed']} failed, {r['per_conn']:.0f} bytes each "
                      f"({r['seconds']:.1f} s to open)", flush=True)
    finally:
        stack.close()
        if os.environ.get("IDLE_MEMORY_KEEP"):
            print(f"idle_memory: kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    text = report(results, time.monotonic() - started, nofile, floor)
    print()
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(f"idle_memory: written to {RESULTS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
