"""Health, readiness and metrics over HTTP (HEALTH_PORT), read with curl, on a second
smtpd process started for this module against the same PostgreSQL and NATS."""

import socket
import subprocess

import pytest

from support import wait_until


@pytest.fixture(scope="module")
def health_smtpd(postern):
    """Its ports by variable name; stopped (clean exit, sanitizer-clean log checked) with
    the rest of the stack."""
    return postern.add_smtpd("smtpd-health", extra_ports=("HEALTH_PORT",)).ports


def curl(port, path):
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None, ""
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_healthz_and_readyz(health_smtpd):
    port = health_smtpd["HEALTH_PORT"]
    wait_until(lambda: curl(port, "/healthz")[0] == 200, what="/healthz to answer 200")
    # Ready once the configuration is loaded and the database and the bus are up.
    wait_until(lambda: curl(port, "/readyz")[0] == 200, what="/readyz to answer 200")
    assert curl(port, "/nowhere")[0] == 404


def test_metrics_count_sessions(health_smtpd):
    port = health_smtpd["HEALTH_PORT"]
    wait_until(lambda: curl(port, "/readyz")[0] == 200, what="/readyz to answer 200")
    with socket.create_connection(("127.0.0.1", health_smtpd["SMTP_PORT"]), timeout=30) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"220")
        f.write(b"QUIT\r\n")
        f.flush()
        assert f.readline().startswith(b"221")
    code, body = curl(port, "/metrics")
    assert code == 200
    assert "# TYPE postern_sessions_total counter" in body
    line = [l for l in body.splitlines() if l.startswith('postern_sessions_total{listener="smtp"}')]
    assert line and float(line[0].split()[-1]) >= 1, body


def test_readyz_reports_a_missing_database(postern, health_smtpd):
    port = health_smtpd["HEALTH_PORT"]
    wait_until(lambda: curl(port, "/readyz")[0] == 200, what="/readyz to answer 200")
    postern.pg_stop()
    try:
        wait_until(lambda: curl(port, "/readyz") == (503, "not ready: database\n"),
                   what="/readyz to say the database is missing")
        assert curl(port, "/healthz")[0] == 200  # alive all the same
    finally:
        postern.pg_start()
    wait_until(lambda: curl(port, "/readyz")[0] == 200, timeout=60, what="ready again")
