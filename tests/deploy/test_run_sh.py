"""`make run` (deploy/run.sh) stopped with Ctrl-C: the signal reaches the whole process group
(the services too), and the stop handler still stops PostgreSQL and nats-server and says
"Stopped.". The script runs on free ports with its state in a folder of its own
(POSTERN_VAR), with the binaries of $POSTERN_BIN (default build/bin).
Run: /usr/bin/python3 -m pytest -q tests/deploy/test_run_sh.py
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("POSTERN_BIN", ROOT / "build" / "bin")).resolve()
PORT_VARS = ("SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", "POP3_PORT", "POP3S_PORT",
             "IMAP_PORT", "IMAPS_PORT", "PG_PORT", "NATS_PORT")


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
