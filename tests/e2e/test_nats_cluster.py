"""A three-node NATS cluster under Postern, end to end: one node killed and started again
during a send loop loses no acknowledged message, keeps the HAMR limit exact, and restarts
no service.

The test runs its own cluster of three nats-servers (routes on loopback, JetStream with file
storage, the same users and permissions as the harness's server, deploy/nats-auth.sh) and,
on it, two limiters (stream and bucket with three replicas) and an smtpd given the three
URLs; PostgreSQL is the harness's."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import Submitter, free_ports, token, wait_until

pytestmark = pytest.mark.own_processes

ROOT = Path(__file__).resolve().parents[2]
PW = "Cluster-pw-2!"


class NatsNode:
    def __init__(self, name, conf, log):
        self.name, self.conf, self.log = name, conf, log
        self.proc = None

    def start(self):
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([shutil.which("nats-server"), "-c", str(self.conf)],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        wait_until(lambda: "Server is ready" in self.log.read_text(errors="replace")[offset:],
                   timeout=30, what=f"nats-server {self.name} to start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(postern):
    if not shutil.which("nats-server"):
        pytest.skip("no nats-server")
    auth_dir = postern.dir / "nats-auth"
    auth = subprocess.run(["sh", str(ROOT / "deploy" / "nats-auth.sh"), "config", str(auth_dir),
                           "test"], capture_output=True, text=True, check=True).stdout
    base = postern.dir / "nats-cluster"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    ports = free_ports(6)
    client, route = ports[:3], ports[3:]
    nodes = []
    for i in range(3):
        routes = ", ".join(f'"nats-route://127.0.0.1:{route[j]}"' for j in range(3) if j != i)
        conf = base / f"n{i + 1}.conf"
        conf.write_text(
            f'server_name: "n{i + 1}"\nhost: "127.0.0.1"\nport: {client[i]}\n'
            f'jetstream {{ store_dir: "{base / f"n{i + 1}"}" }}\n'
            f'cluster {{ name: "postern-test", host: "127.0.0.1", port: {route[i]},'
            f' routes: [{routes}] }}\n' + auth)
        nodes.append(NatsNode(f"n{i + 1}", conf, base / f"n{i + 1}.log"))
    # All three at once: JetStream's cluster needs its peers to elect a leader.
    for n in nodes:
        with open(n.log, "ab") as out:
            n.proc = subprocess.Popen([shutil.which("nats-server"), "-c", str(n.conf)],
                                      stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    for n in nodes:
        wait_until(lambda n=n: "Server is ready" in n.log.read_text(errors="replace"),
                   timeout=30, what=f"nats-server {n.name} to start")
    urls = ",".join(f"nats://127.0.0.1:{p}" for p in client)
    started = []
    try:
        yield nodes, urls, started
    finally:
        for name in started:
            if name in postern.services:
                postern.remove_service(name)
            postern.frontends.pop(name, None)
        for n in nodes:
            n.stop()


def start_limiter(postern, name, urls):
    from conftest import Service
    base = postern.services["limiter"]
    env = dict(base.env, NATS_URL=urls, NATS_JS_REPLICAS="3")
    svc = Service(name, base.exe, env, postern.dir / f"{name}.log", None)
    svc.ready = lambda: 'msg="limiter replica caught up' in svc.since(svc.started_at)
    postern.services[name] = svc
    svc.start()
    return svc


def test_a_nats_node_killed_during_a_send_loop(postern, new_user, cluster):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")
    nodes, urls, started = cluster
    # The user and its limit first: the services on the cluster do not hear the harness's
    # announcements, they read both from PostgreSQL when they start or first need them.
    user = new_user(PW)
    limit = 20
    postern.mailctl("hamr", "set", "--user", user, "--enabled", "on", "--max", str(limit),
                    "--interval", "3600", "--action", "throttle", "--alert", "off")
    lim = [start_limiter(postern, f"cl-limiter-{i}", urls) for i in (1, 2)]
    started += [s.name for s in lim]
    fe = postern.add_smtpd("cl-smtpd", env={"NATS_URL": urls})
    started.append("cl-smtpd")
    wait_until(lambda: any('msg="limiter replica leads' in s.since(s.started_at) for s in lim),
               timeout=30, what="a limiter on the cluster to lead")

    accepted, unavailable, throttled = [], 0, None
    killed = restarted = False
    deadline = time.monotonic() + 120
    while throttled is None and time.monotonic() < deadline:
        if len(accepted) == 5 and not killed:
            nodes[0].kill()  # between two transactions: no reply of the limiter in flight
            killed = True
            killed_at = time.monotonic()
        if killed and not restarted and time.monotonic() - killed_at > 3:
            nodes[0].start()
            restarted = True
        tok = token()
        try:
            with Submitter(fe, user, PW) as sub:
                code, text = sub.send(user, tok)
        except (OSError, EOFError) as e:  # noqa: PERF203 - a connection refused is a result
            code, text = 0, str(e)
        if code == 250:
            accepted.append(tok)
        elif code == 451 and "HAMR limit" in text:
            throttled = text
        elif code == 451:
            # the limiter was not reachable, or could not record the slot while the stream
            # elected a new leader: temporary, retried
            unavailable += 1
            time.sleep(0.2)
        else:
            pytest.fail(f"unexpected reply after {len(accepted)} accepted: {code} {text}")
        time.sleep(0.1)
    assert killed and throttled, (len(accepted), unavailable, throttled)
    if not restarted:
        nodes[0].start()
    print(f"\n{len(accepted)} accepted, {unavailable} temporary refusals while the node was "
          f"away, then: {throttled}")
    assert len(accepted) == limit, f"{len(accepted)} accepted for a limit of {limit}"
    for tok in accepted:
        assert len(postern.find(user, tok)) == 1, f"acknowledged message {tok} not stored once"
    for name in started:
        svc = postern.services[name]
        assert svc.alive(), f"{name} died"
        assert svc.text().count("--- harness: starting") == 1, f"{name} was restarted"

    # The counters and the lease are kept on all three nodes.
    env = dict(postern.client_env(), NATS_URL=urls)
    r = subprocess.run([str(postern.bin / "mailctl"), "--json", "limiter", "status"], env=env,
                       capture_output=True, text=True, timeout=60, check=True)
    st = json.loads(r.stdout)
    for part in ("stream", "bucket"):
        assert st[part]["replicas"] == 3, st
        cl = st[part]["cluster"]
        peers = {cl["leader"]} | {p["name"] for p in cl["replicas"]}
        assert peers == {"n1", "n2", "n3"}, st
    assert st["lease"]["owns"] == "every key", st
