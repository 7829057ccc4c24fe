"""The fault matrix: under a mixed load (tests/faults/load.py: MX deliveries, authenticated
submissions relayed to a remote server, POP3 and IMAP sessions), each of smtpd, pop3d, imapd,
limiter, notifier, relayd, PostgreSQL and nats-server in turn is

  kill      killed with SIGKILL, and started again a second later (as a supervisor would)
  restart   stopped with SIGTERM (a clean exit expected) and started again
  stop      frozen with SIGSTOP for 5 seconds, then continued

and each case checks, once the load has stopped:
  - no acknowledged message is lost: every MX delivery that got 250 at the end of DATA is in
    the mailbox, every submission that got 250 reaches the remote server (relayd retries;
    a second copy there is counted, not failed: delivery is at least once)
  - the clients got only temporary refusals (4xx, -ERR [SYS/TEMP], NO [UNAVAILABLE]) and
    closed connections during the fault: no permanent refusal, no session left hanging
  - the service is back: the target ready again and every kind of session succeeding, within
    BACK_LIMIT seconds of the fault (the time is reported)
  - no other process restarted or died.

The figures go to build/faults/results.md (and the terminal), one row per case.
"""

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from load import KINDS, TOKEN_RE, Load
from sink import Sink
from support import free_ports, wait_until

harness = sys.modules["postern_e2e_harness"]  # tests/e2e/conftest.py, loaded by conftest.py
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = harness.COMPOSE_PROJECT  # the compose project run against, if any
RESULTS = ROOT / "build" / "faults" / ("results-compose.md" if COMPOSE else "results.md")
SERVICES = ("smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd")
SERVERS = ("postgresql", "nats")
FAULTS = ("kill", "restart", "stop")
STOP_SECONDS = 5  # how long a SIGSTOP lasts
DOWN_SECONDS = 1  # how long a killed process stays down before it is started again
BACK_LIMIT = 60  # seconds from the fault until everything must work again
DELIVERY_LIMIT = 120  # seconds for relayd to bring every acknowledged submission to the sink
# The matrix's own domain and users (a compose stack has run the end-to-end suite before).
DOMAIN = "faults.test"
MX_USER = "mx@faults.test"
SUB_USER = "sub@faults.test"
SUB_PW = "Faults-sub-pw-1"
READER = "reader@faults.test"  # whose mailbox the POP3 and IMAP sessions read
READER_PW = "Faults-reader-pw-1"
REMOTE_DOMAIN = "remote.faults.test"
# The limiter takes part (HAMR and harvesting on, limits far above the load), relayd retries
# quickly. pop3.lock_lease keeps its default (120 s): the maildrop lock a killed pop3d leaves
# must be released when pop3d starts again, or the POP3 sessions would not be back in time.
SETTINGS = {"hamr.enabled": "on", "hamr.max_messages": "1000000",
            "hamr.max_recipients": "1000000", "harvest.enabled": "on",
            "harvest.max_failures": "100000", "relay.retry_min": "1", "relay.retry_max": "2",
            "relay.lease": "5"}

ROWS = []  # one dict per case, for the results table


# --- what a fault is done to ---------------------------------------------------------------
class LocalService:
    """A service of the harness's stack (a process of ours)."""

    def __init__(self, stack, name, health_port):
        self.stack, self.name, self.health_port = stack, name, health_port
        self.svc = stack.services[name]

    def pid(self):
        return self.svc.proc.pid if self.svc.alive() else None

    def pids(self):
        pid = self.pid()
        return [pid] if pid else []

    def kill(self):
        self.svc.kill()

    def term(self):
        self.stack.stop_service(self.name)  # SIGTERM; fails unless it exits cleanly

    def start(self):
        self.svc.start(wait=False)

    def ready(self):
        if not self.svc.alive():
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz",
                                    timeout=2) as r:
            return r.status == 200

    def ensure_running(self):
        self.stack.start_service(self.name)


class LocalPostgres:
    name = "postgresql"

    def __init__(self, stack):
        self.stack = stack
        self.pidfile = stack.dir / "pg" / "postmaster.pid"

    def pid(self):
        try:
            pid = int(self.pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def pids(self):
        """The postmaster and its children (backends and background processes)."""
        pid = self.pid()
        if not pid:
            return []
        return [pid] + children(pid)

    def kill(self):
        pids = self.pids()
        for p in pids:
            signal_quietly(p, signal.SIGKILL)
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids),
                   timeout=60, what="PostgreSQL's processes to end and be reaped")

    def term(self):
        self.stack.pg_stop()

    def start(self):
        self.stack.pg_start()

    def ready(self):
        return self.stack.sql("SELECT 1") == [(1,)]

    def ensure_running(self):
        if not self.pid():
            self.stack.pg_start()


class LocalNats:
    name = "nats"

    def __init__(self, stack):
        self.stack = stack

    def pid(self):
        try:
            pid = int((self.stack.dir / "nats.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() and not zombie(pid) else None

    def pids(self):
        pid = self.pid()
        return [pid] if pid else []

    def kill(self):
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            # until it is reaped too: localstack.sh would take a zombie for a live server
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=60,
                       what="nats-server to end and be reaped")

    def term(self):
        self.stack.localstack("nats-stop", str(self.stack.dir))

    def start(self):
        self.stack.localstack("nats-start", str(self.stack.dir))

    def ready(self):
        return bool(self.pid()) and self.stack.limiter_answering()

    def ensure_running(self):
        if not self.pid():
            self.start()


class ComposeTarget:
    """A container of the compose project: SIGKILL with `docker kill`, SIGTERM with `compose
    stop`, SIGSTOP with `docker pause` (the freezer stops every process in it)."""

    def __init__(self, world, name, service, ready):
        self.world, self.name, self.service, self._ready = world, name, service, ready
        # kept: a stopped container is not listed by `ps` without -a, and `compose start`
        # starts the same container again. A service with replicas (the limiter runs two):
        # the first is the one knocked about (compose stop and start reach all of them).
        ids = harness.compose_cmd("ps", "-a", "-q", service).split()
        assert ids, f"compose service {service} has no container"
        self._id = ids[0]

    def id(self):
        return self._id

    def state(self):
        out = harness.docker("inspect", "-f", "{{json .State}}", self.id()).stdout
        return json.loads(out)

    def pid(self):
        """Which run of the container this is: a restart, by us or the engine, changes it."""
        st = self.state()
        return f"{st['StartedAt']} pid {st['Pid']}" if st["Running"] else None

    def kill(self):
        harness.docker("kill", "-s", "KILL", self.id())
        wait_until(lambda: not self.state()["Running"], timeout=60, what=f"{self.name} to end")

    def term(self):
        harness.compose_cmd("stop", "-t", "60", self.service, timeout=120)
        code = self.state()["ExitCode"]
        if self.service not in ("postgres", "nats"):
            assert code == 0, f"{self.name} exited with status {code} after SIGTERM"

    def start(self):
        harness.compose_cmd("start", self.service)

    def pause(self):
        harness.docker("pause", self.id())

    def unpause(self):
        harness.docker("unpause", self.id())

    def ready(self):
        st = self.state()
        return st["Running"] and not st["Paused"] and self._ready()

    def ensure_running(self):
        st = self.state()
        if st["Paused"]:
            self.unpause()
        if not st["Running"]:
            self.start()


def in_container_ready(target):
    """What the container's health check runs, run now (the engine's own check waits for its
    interval): `postern health readyz` inside it."""
    return lambda: harness.docker("exec", target.id(), "postern", "health", "readyz",
                                  check=False).returncode == 0


def children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def signal_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- the world the load runs in ----------------------------------------------------------
class World:
    host = "127.0.0.1"
    mx_user = MX_USER
    sub_user, sub_password = SUB_USER, SUB_PW
    remote_domain = REMOTE_DOMAIN
    pop_user, pop_password = READER, READER_PW

    def __init__(self, stack, sink):
        self.stack, self.sink = stack, sink
        self.ports = {name: stack.port(name) for name in ("mx", "submission", "pop3s", "imaps")}
        self.targets = {}

    def tls_context(self):
        return self.stack.tls_context()

    def stored_tokens(self):
        rows = self.stack.sql(
            "SELECT m.raw FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " JOIN users u ON u.id = b.user_id WHERE u.address = %s", (MX_USER,))
        found = {}
        for (raw,) in rows:
            for tok in set(TOKEN_RE.findall(raw)):
                found[tok.decode()] = found.get(tok.decode(), 0) + 1
        return found

    def sink_tokens(self):
        found = {}
        for m in list(self.sink.messages):
            for tok in set(TOKEN_RE.findall(m.data)):
                found[tok.decode()] = found.get(tok.decode(), 0) + 1
        return found

    def all_targets(self):
        return [self.targets[n] for n in (*SERVICES, *SERVERS) if n in self.targets]


@pytest.fixture(scope="module")
def world(postern):
    stack = postern
    compose_relayd = False
    if COMPOSE:
        # tests/deploy/e2e_docker.sh starts every service again for this run
        missing = [n for n in ("pop3d", "imapd", "limiter", "notifier") if n not in stack.services]
        # relayd delivers to the sink on this machine, through the bridge network's gateway
        sink_host = stack.client_address
    else:
        missing = [n for n in ("pop3d", "imapd", "limiter", "notifier") if n not in stack.services]
        if not (stack.bin / "relayd").exists():
            missing.append("relayd")
        sink_host = "127.0.0.1"
    if missing:
        pytest.fail(f"the fault matrix needs every service running; missing: {missing}")
    sink_port, *health = free_ports(1 + len(SERVICES))
    health = dict(zip(SERVICES, health))
    sink = Sink(sink_host, sink_port).start()
    w = World(stack, sink)
    try:
        # (a second run against the same compose stack finds them there)
        add_once(stack, "domain", "add", DOMAIN)
        for user, password in ((MX_USER, "Faults-mx-pw-1"), (SUB_USER, SUB_PW),
                               (READER, READER_PW)):
            add_once(stack, "user", "add", user, "--password-stdin", input=password + "\n")
        for key, value in SETTINGS.items():
            stack.mailctl("config", "set", key, value)
        stack.mailctl("transport", "set", REMOTE_DOMAIN, f"{sink_host}:{sink_port}")
        # the maildrop the POP3 and IMAP sessions read holds three messages
        # (the new domain reaches smtpd over the bus: the first may be refused for a moment)
        for i in range(3):
            wait_until(lambda i=i: seed(stack, i), timeout=30, what="a seed message accepted")
        if COMPOSE:
            for name in SERVICES:
                t = ComposeTarget(w, name, name, None)
                t._ready = in_container_ready(t)
                w.targets[name] = t
            compose_relayd = True
            w.targets["relayd"].ensure_running()
            w.targets["postgresql"] = ComposeTarget(
                w, "postgresql", "postgres", lambda: stack.sql("SELECT 1") == [(1,)])
            w.targets["nats"] = ComposeTarget(w, "nats", "nats", stack.limiter_answering)
        else:
            # every service answers on a health port of its own: /readyz says it is back
            for name in SERVICES:
                if name == "relayd":
                    continue
                stack.stop_service(name)
                stack.services[name].env = dict(stack.services[name].env,
                                                 HEALTH_PORT=str(health[name]))
                stack.services[name].start()
            stack.add_relayd("relayd", {"HEALTH_PORT": str(health["relayd"]),
                                        "DRAIN_TIMEOUT": "5"})
            for name in SERVICES:
                w.targets[name] = LocalService(stack, name, health[name])
            w.targets["postgresql"] = LocalPostgres(stack)
            w.targets["nats"] = LocalNats(stack)
        for t in w.all_targets():
            wait_until(t.ready, timeout=60, what=f"{t.name} ready")
        yield w
    finally:
        try:
            if compose_relayd:
                harness.compose_cmd("stop", "relayd")
            else:
                stack.remove_service("relayd")
        finally:
            sink.stop()
            write_results()


def add_once(stack, *args, input=None):
    r = stack.mailctl(*args, input=input, check=False)
    assert r.returncode == 0 or "already" in r.stderr, f"mailctl {args}: {r.stderr}"


def seed(stack, i):
    with stack.smtplib_client("mx") as s:
        s.sendmail("seed@outside.faults.test", [READER],
                   f"Subject: seed {i}\r\n\r\nseed\r\n".encode())
    return True


# --- one case ----------------------------------------------------------------------------
def first_ok_after(ops, kind, t):
    """When the first successful session of kind that started at or after t ended."""
    ends = [op.end for op in ops if op.kind == kind and op.outcome == "ok" and op.start >= t]
    return min(ends) if ends else None


def wait_for_every_kind(load, since, timeout, what):
    def every_kind():
        ops = load.snapshot()
        return all(first_ok_after(ops, k, since) is not None for k in KINDS)
    try:
        wait_until(every_kind, timeout=timeout, interval=0.1, what=what)
    except AssertionError as e:
        ops = load.snapshot()
        stuck = {k: [f"{op.outcome} {op.detail}"[:160] for op in ops
                     if op.kind == k and op.start >= since][-3:]
                 for k in KINDS if first_ok_after(ops, k, since) is None}
        raise AssertionError(f"{e}; the kinds without a success, their last sessions: "
                             f"{stuck}") from None


def inject(target, fault):
    """Does the fault; returns the time the target was given back (started, continued)."""
    if fault == "kill":
        target.kill()
        time.sleep(DOWN_SECONDS)
        t = time.monotonic()
        target.start()
        return t
    if fault == "restart":
        target.term()
        t = time.monotonic()
        target.start()
        return t
    if isinstance(target, ComposeTarget):
        target.pause()
        try:
            time.sleep(STOP_SECONDS)
        finally:
            t = time.monotonic()
            target.unpause()
        return t
    pids = target.pids()
    for pid in pids:
        signal_quietly(pid, signal.SIGSTOP)
    try:
        time.sleep(STOP_SECONDS)
    finally:
        t = time.monotonic()
        for pid in pids:
            signal_quietly(pid, signal.SIGCONT)
    return t


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", (*SERVICES, *SERVERS))
def test_fault(world, name, fault):
    target = world.targets[name]
    row = {"target": name, "fault": fault}
    ROWS.append(row)
    load = Load(world)
    load.start()
    try:
        # the load runs, every kind of session works, before the fault
        wait_for_every_kind(load, 0, BACK_LIMIT, "every kind of session to work before the fault")
        before = {t.name: t.pid() for t in world.all_targets()}
        t_fault = time.monotonic()
        t_back_given = inject(target, fault)
        # back: the target ready again, and every kind of session that started after the
        # target was given back has succeeded
        wait_until(target.ready, timeout=BACK_LIMIT, what=f"{name} ready after {fault}")
        t_ready = time.monotonic()
        wait_for_every_kind(load, t_back_given, BACK_LIMIT,
                            f"every kind of session to work after {name} {fault}")
        time.sleep(1)
    finally:
        ops = load.stop()
        for t in world.all_targets():
            t.ensure_running()
    back = max([t_ready] + [first_ok_after(ops, k, t_back_given) for k in KINDS]) - t_fault
    row["back_s"] = round(back, 1)
    row["sessions"] = len(ops)
    counts = {o: sum(1 for op in ops if op.outcome == o)
              for o in ("ok", "temp", "closed", "perm", "timeout")}
    row.update(counts)

    # no other process restarted or died
    after = {t.name: t.pid() for t in world.all_targets()}
    others = [n for n in before if n != name and before[n] != after[n]]
    row["others_restarted"] = ", ".join(others) or "none"

    # every acknowledged message is where it must be
    acked_mx = [op.token for op in ops if op.kind == "mx" and op.token]
    acked_sub = [op.token for op in ops if op.kind == "submission" and op.token]
    stored = world.stored_tokens()
    lost_mx = [t for t in acked_mx if t not in stored]
    try:
        wait_until(lambda: all(t in world.sink_tokens() for t in acked_sub),
                   timeout=DELIVERY_LIMIT, interval=0.5, what="relayd to deliver every submission")
    except AssertionError:
        pass
    at_sink = world.sink_tokens()
    lost_sub = [t for t in acked_sub if t not in at_sink]
    row["acknowledged"] = len(acked_mx) + len(acked_sub)
    row["lost"] = len(lost_mx) + len(lost_sub)
    row["duplicates"] = sum(1 for t in acked_sub if at_sink.get(t, 0) > 1) + \
        sum(1 for t in acked_mx if stored.get(t, 0) > 1)

    bad = [op for op in ops if op.outcome in ("perm", "timeout")]
    problems = []
    if lost_mx or lost_sub:
        problems.append(f"acknowledged and lost: {len(lost_mx)} MX deliveries "
                        f"{lost_mx[:3]}, {len(lost_sub)} submissions {lost_sub[:3]}")
    if bad:
        problems.append(f"{len(bad)} sessions ended in a permanent refusal or a timeout: " +
                        "; ".join(f"{op.kind} {op.outcome} {op.detail!r}" for op in bad[:5]))
    if others:
        problems.append(f"other processes restarted or died: {others}")
    row["result"] = "FAIL" if problems else "pass"
    assert not problems, "\n".join(problems)


# --- the table -----------------------------------------------------------------------------
def write_results():
    if not ROWS:
        return
    head = ("| target | fault | sessions | acknowledged | lost | temporary | closed | "
            "permanent/hung | back after | others restarted | delivered twice | result |")
    lines = [head, "|" + "---|" * 12]
    for r in ROWS:
        lines.append(
            f"| {r['target']} | {r['fault']} | {r.get('sessions', '-')} | "
            f"{r.get('acknowledged', '-')} | {r.get('lost', '-')} | {r.get('temp', '-')} | "
            f"{r.get('closed', '-')} | {r.get('perm', 0) + r.get('timeout', 0) if 'perm' in r else '-'} | "
            f"{str(r['back_s']) + ' s' if 'back_s' in r else '-'} | "
            f"{r.get('others_restarted', '-')} | {r.get('duplicates', '-')} | "
            f"{r.get('result', 'FAIL')} |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print("\nfault matrix (build/faults/results.md):\n" + text)
