"""`make run` (deploy/run.sh) stopped with Ctrl-C: the signal reaches the whole process group
(the services too), and the stop handler still stops PostgreSQL and nats-server and says
"Stopped."; every service logs in to NATS as its own user, with passwords made once. The script runs on free ports with its state in a folder of its own
(POSTERN_VAR), with the binaries of $POSTERN_BIN (default build/bin).
Run: /usr/bin/python3 -m pytest -q tests/deploy/test_run_sh.py
"""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()
PORT_VARS = ("SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", "POP3_PORT", "POP3S_PORT",
             "IMAP_PORT", "IMAPS_PORT", "WEB_PORT", "PG_PORT", "NATS_PORT")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def var():
    d = Path(tempfile.mkdtemp(prefix="postern-run-"))
    os.chmod(d, 0o755)  # PostgreSQL runs as `postgres` when we are root
    yield d
    subprocess.run(["sh", str(ROOT / "deploy" / "localstack.sh"), "stop", str(d)],
                   capture_output=True, timeout=120)
    shutil.rmtree(d, ignore_errors=True)


def test_ctrl_c_stops_postgres_and_nats(var):
    for prog in ("mailctl", "smtpd"):
        if not (BIN / prog).exists():
            pytest.skip(f"no {BIN / prog}: build first (make)")
    if not shutil.which("nats-server"):
        pytest.skip("no nats-server")
    env = dict(os.environ, POSTERN_BIN=str(BIN), POSTERN_VAR=str(var),
               LISTEN_ADDRESS="127.0.0.1")
    env.update({k: str(p) for k, p in zip(PORT_VARS, free_ports(len(PORT_VARS)))})
    log = var / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(ROOT / "deploy" / "run.sh")], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    try:
        wait_for("Postern is running", lambda: "Postern is running" in log.read_text(), 120)
        nats = int((var / "nats.pid").read_text())
        postgres = int((var / "pg" / "postmaster.pid").read_text().split()[0])
        assert alive(nats) and alive(postgres)
        # Ctrl-C: SIGINT to the foreground process group, the services included.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Stopped." in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    assert not alive(nats), "nats-server still running"
    wait_for("the postmaster to go", lambda: not alive(postgres), 10)


def nats_text(var, *commands, user=None, password=None):
    """The server's answers to CONNECT (verbose) and commands, over the NATS text protocol."""
    port = int((var / "nats.port").read_text())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        login = {"verbose": True, "pedantic": False, "name": "test-run-sh"}
        if user:
            login.update(user=user, **{"pass": password})
        s.sendall(b"CONNECT " + json.dumps(login).encode() + b"\r\n"
                  + b"".join(c.encode() + b"\r\n" for c in commands))
        answers = []
        for _ in range(1 + len(commands)):
            line = f.readline()
            if not line:
                break
            answers.append(line.decode().strip())
        return answers


def test_every_service_logs_in_as_itself(var):
    """make run makes the bus's passwords once (mode 0600, kept across runs), starts every
    service with its own user, and gives mailctl (var/postern.env) mailctl's."""
    for prog in ("mailctl", "smtpd", "limiter"):
        if not (BIN / prog).exists():
            pytest.skip(f"no {BIN / prog}: build first (make)")
    env = dict(os.environ, POSTERN_BIN=str(BIN), POSTERN_VAR=str(var),
               LISTEN_ADDRESS="127.0.0.1")
    env.update({k: str(p) for k, p in zip(PORT_VARS, free_ports(len(PORT_VARS)))})
    passwords = {}
    for run in range(2):
        log = var / f"run{run}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["sh", str(ROOT / "deploy" / "run.sh")], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        try:
            wait_for("Postern is running", lambda: "Postern is running" in log.read_text(), 120)
            wait_for("the services on the bus",
                     lambda: log.read_text().count('msg="bus connected"') >= 7, 60)
            auth = var / "nats-auth"
            assert (auth.stat().st_mode & 0o777) == 0o700
            now = {}
            for f in sorted(auth.glob("*.password")):
                assert (f.stat().st_mode & 0o777) == 0o600, f
                now[f.stem] = f.read_text().strip()
            assert set(now) >= {"smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd",
                                "mailctl", "webd"}
            # The console login it printed works on webd's port.
            line = next(l for l in log.read_text().splitlines() if "Console login:" in l)
            admin, admin_password = line.split()[2], line.split()[4]
            ctx = ssl.create_default_context(cafile=str(var / "tls" / "cert.pem"))
            req = urllib.request.Request(
                f"https://127.0.0.1:{env['WEB_PORT']}/api/v1/login", method="POST",
                data=json.dumps({"user": admin, "password": admin_password}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                assert r.status == 200 and "csrf" in json.load(r)
            assert "test" not in now    # the harness's user is the harness's only
            if run == 1:
                assert now == passwords, "the passwords changed between runs"
            passwords = now
            assert (var / "nats.conf").stat().st_mode & 0o777 == 0o600
            envfile = (var / "postern.env").read_text()
            assert "NATS_USER=mailctl\n" in envfile
            assert f"NATS_PASSWORD_FILE={auth}/mailctl.password" in envfile
            # No credentials: refused. smtpd's: may not announce a configuration change.
            assert nats_text(var)[0].startswith("-ERR 'Authorization Violation'")
            ok, denied = nats_text(var, "PUB postern.config.changed 0\r\n", user="smtpd",
                                   password=now["smtpd"])
            assert ok == "+OK" and denied.startswith("-ERR 'Permissions Violation"), denied
            # mailctl as make run set it up: announced without a warning.
            r = subprocess.run([str(BIN / "mailctl"), "config", "set", "smtp.max_errors", "20"],
                               cwd=str(var.parent), env=dict(os.environ, **{
                                   k: v for k, v in (line.split("=", 1) for line in
                                                     envfile.splitlines() if "=" in line)}),
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "could not be announced" not in r.stderr, r.stderr
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        text = log.read_text()
        assert "bus error" not in text and "closed for good" not in text, text[-3000:]
