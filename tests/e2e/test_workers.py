"""WORKERS: a front end serving from several processes on the same ports (lib/svc/workers.h).
An imapd started with WORKERS=2 forks two workers; connections are spread over both (each
accepts from the listening sockets made before the fork), every one is served; SIGTERM to the started process stops both and
exits 0; a worker that dies takes the other with it and the process exits as it did; a bad
WORKERS is refused at start."""

import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import Service, as_bus_user, config_loaded
from support import free_ports, listens
from test_imap import Imap, mailbox  # noqa: F401 (fixture)

pytestmark = pytest.mark.own_processes


def _workers_started(svc, n):
    out = svc.since(svc.started_at)
    return len(re.findall(r'msg="started" .* worker=\d+/%d' % n, out)) == n


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return sorted(int(p) for p in out.split())


def _pids(state, port):
    """The processes holding port's sockets in state (ss -p)."""
    out = subprocess.run(["ss", "-Htnp", "state", state, f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


@pytest.fixture
def imapd_workers(postern, request):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    port = free_ports(2)
    env = postern.imapd_env()
    env.update({"IMAP_PORT": str(port[0]), "IMAPS_PORT": str(port[1]), "WORKERS": "2"})
    svc = Service("imapd-workers", postern.bin / "imapd", env, postern.dir / "imapd-workers.log",
                  None)
    svc.ready = lambda: (config_loaded(svc) and _workers_started(svc, 2) and listens(port[0]))
    svc.start()
    postern.services["imapd-workers"] = svc
    yield svc, port[0]
    if svc.proc is not None:
        assert svc.stop() == []
    postern.services.pop("imapd-workers", None)


def test_two_workers_share_the_port_and_stop_together(postern, imapd_workers, mailbox):
    svc, port = imapd_workers
    workers = _children(svc.proc.pid)
    assert len(workers) == 2, workers
    # One listening socket, made before the fork, held by both workers (not by the parent).
    assert _pids("listening", port) == set(workers)
    # 24 connections made at once wait in its queue together: the workers take them one at
    # a time each, so both take some. Every one is greeted.
    raw = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(24)]
    try:
        for s in raw:
            assert s.recv(512).startswith(b"* OK")
        assert _pids("established", port) == set(workers)
    finally:
        for s in raw:
            s.close()
    clients = []
    try:
        for _ in range(4):
            c = Imap(port, postern.tls_context())
            c.starttls()
            c.ok(f"LOGIN {mailbox.address} {mailbox.password}")
            c.ok("SELECT INBOX")
            clients.append(c)
    finally:
        for c in clients:
            c.close()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=60) == 0
    assert _children(svc.proc.pid) == []
    for pid in workers:
        assert not _alive(pid)
    out = svc.since(svc.started_at)
    assert out.count('msg="stopped"') == 2
    assert 'msg="workers stopped" status=0' in out
    svc.proc = None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_dies_stops_the_others(imapd_workers):
    svc, port = imapd_workers
    workers = _children(svc.proc.pid)
    assert len(workers) == 2
    subprocess.run(["kill", "-KILL", str(workers[1])], check=True)
    # The process exits as the worker did (128 + 9), the other worker stopped first.
    assert svc.proc.wait(timeout=60) == 128 + signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers[0])
    out = svc.since(svc.started_at)
    assert re.search(r'msg="a worker ended: stopping the others" worker=1 pid=%d status=137'
                     % workers[1], out), out[-2000:]
    assert not listens(port)
    svc.proc = None


@pytest.mark.parametrize("value", ["0", "abc", "65", "2x"])
def test_bad_workers_is_refused(postern, value):
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    port = free_ports(2)
    env = postern.imapd_env()
    env.update({"IMAP_PORT": str(port[0]), "IMAPS_PORT": str(port[1]), "WORKERS": value})
    r = subprocess.run([str(postern.bin / "imapd")], env=as_bus_user(env, "imapd"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert 'msg="bad WORKERS"' in r.stderr, r.stderr
