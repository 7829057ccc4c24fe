"""The Helm chart on a real (local, one-node) Kubernetes cluster: deploy/k8s/cluster.sh.

Stages, each a test, later ones skipped with the reason when an earlier piece is missing:
  1. the control plane (etcd, kube-apiserver, controller-manager, scheduler) answers and
     reports the Kubernetes version the scripts build;
  2. `helm install --dry-run=server` of helm/postern with default values and with
     production-like values (external PostgreSQL and NATS, a TLS Secret of one's own, more
     replicas, autoscaling): the API server validates every rendered object;
  3. the node (containerd, kubelet, kube-proxy, the bridge CNI) is Ready, cluster DNS
     (CoreDNS) answers for the "kubernetes" Service, and a ClusterIP Service routes;
  4. with the project's images in Docker (make images; deploy/docker/build-base.sh all), a
     real `helm install` with default values: every pod Ready, the mail ports answer through
     their Services, a message sent over SMTP is read back over POP3 and IMAP.

The cluster is brought up once for the module (cold: builds under build/k8s, see
deploy/k8s/build.sh; warm: seconds) and taken down at the end unless K8S_KEEP=1.
K8S_REUSE=1 uses a cluster that is already up. Not root: only stages 1 and 2.

Run: /usr/bin/python3 -m pytest -rs tests/k8s/test_cluster.py
"""

import json
import os
import random
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "k8s" / "cluster.sh"
BIN = ROOT / "build" / "k8s" / "bin"
KUBECONFIG = ROOT / "build" / "k8s" / "kubeconfig"
CHART = ROOT / "helm" / "postern"
DNS_IP = "10.96.0.10"
RELEASE = "mail"
NAMESPACE = "mail"
FULL = f"{RELEASE}-postern"


def versions():
    """K8S_VERSION etc. as deploy/k8s/versions.sh sets them."""
    out = subprocess.run(["bash", "-c", f". {ROOT}/deploy/k8s/versions.sh; echo $K8S_VERSION"],
                         capture_output=True, text=True, check=True)
    return {"K8S_VERSION": out.stdout.strip()}


def run(*args, check=True, timeout=300, **kw):
    env = dict(os.environ, KUBECONFIG=str(KUBECONFIG), PATH=f"{BIN}:{os.environ['PATH']}")
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def kubectl(*args, **kw):
    return run(BIN / "kubectl", *args, **kw)


def helm(*args, **kw):
    return run(BIN / "helm", *args, **kw)


# ---- the cluster -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    root = os.geteuid() == 0
    mode = "full" if root else "control-plane"
    if os.environ.get("K8S_REUSE") != "1":
        args = ["bash", CLUSTER, "up"] + ([] if root else ["--control-plane-only"])
        t0 = time.time()
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1800)
        took = time.time() - t0
        print(f"\ncluster.sh up ({mode}) took {took:.0f}s")
        if r.returncode != 0:
            # the control plane may be up even if the node part failed: let stage 1-2 run
            print(r.stderr[-4000:])
            mode = "control-plane" if (BIN / "kubectl").exists() else "none"
            if mode == "none":
                pytest.fail("cluster.sh up failed:\n" + r.stderr[-4000:])
            node_error = r.stderr[-2000:]
        else:
            node_error = None
    else:
        node_error = None
        mode = "full" if kubectl("get", "node", check=False).stdout.strip() else "control-plane"
    yield {"mode": mode, "node_error": node_error}
    if os.environ.get("K8S_REUSE") != "1" and os.environ.get("K8S_KEEP") != "1":
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def node(cluster):
    if cluster["mode"] != "full":
        pytest.skip("no node: " + (cluster["node_error"] or "not root (control plane only)"))
    return cluster


# ---- 1. control plane ---------------------------------------------------------------------
def test_control_plane_answers_with_the_built_version(cluster):
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    info = json.loads(kubectl("get", "--raw", "/version").stdout)
    assert info["gitVersion"] == versions()["K8S_VERSION"]
    names = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/kube-system" in names


# ---- 2. server-side validation of the chart --------------------------------------------------
PRODUCTION = {
    "hostname": "mail.example.org",
    "postgresql": {"external": {"url": "postgresql://postern:pw@db.example.org:5432/postern?sslmode=verify-full"},
                   "bundled": {"enabled": False}},
    "nats": {"external": {"url": "tls://bus.example.org:4222"}, "bundled": {"enabled": False}},
    "tls": {"existingSecret": "mail-example-org-tls"},
    "smtpd": {"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 10}},
    "pop3d": {"replicas": 3},
    "imapd": {"replicas": 3},
    "proxyProtocol": {"trustedNetworks": ["10.0.0.0/8"]},
}


def _dry_run(tmp_path, values):
    kubectl("create", "namespace", NAMESPACE, check=False)
    args = ["upgrade", "--install", RELEASE, CHART, "-n", NAMESPACE, "--dry-run=server"]
    if values:
        f = tmp_path / "values.yaml"
        f.write_text(json.dumps(values))   # JSON is YAML
        args += ["-f", f]
    r = helm(*args, timeout=300)
    assert "kind: Deployment" in r.stdout
    return r.stdout


def test_helm_dry_run_server_default_values(cluster, tmp_path):
    _dry_run(tmp_path, None)


def test_helm_dry_run_server_production_values(cluster, tmp_path):
    out = _dry_run(tmp_path, PRODUCTION)
    assert "kind: HorizontalPodAutoscaler" in out
    assert "kind: StatefulSet" not in out      # no bundled PostgreSQL or NATS


# ---- 3. the node: pods run, DNS and Services work --------------------------------------------
def _dns_query(server, name, timeout=3.0):
    """A minimal DNS A query over UDP; returns the addresses in the answer."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, 53))
        data, _ = s.recvfrom(4096)
    an = struct.unpack(">H", data[6:8])[0]
    i = len(q)
    out = []
    for _ in range(an):
        i += 2 if data[i] & 0xC0 == 0xC0 else data.index(b"\0", i) + 1 - i
        typ, _cls, _ttl, ln = struct.unpack(">HHIH", data[i:i + 10])
        i += 10
        if typ == 1:
            out.append(socket.inet_ntoa(data[i:i + ln]))
        i += ln
    return out


def test_node_is_ready(node):
    out = kubectl("get", "nodes", "-o", "json").stdout
    conds = json.loads(out)["items"][0]["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conds}["Ready"] == "True"


def test_cluster_dns_answers_through_its_service(node):
    deadline = time.time() + 60
    while True:
        try:
            assert _dns_query(DNS_IP, "kubernetes.default.svc.cluster.local") == ["10.96.0.1"]
            return
        except (OSError, AssertionError):
            if time.time() > deadline:
                raise
            time.sleep(2)


# ---- 4. the chart, for real ------------------------------------------------------------------
IMAGES = {  # docker image -> chart values that use it
    "postern:latest": {"image": {"repository": "postern", "tag": "latest", "pullPolicy": "Never"}},
    "postern-postgres:15": {"postgresql": {"bundled": {"image": {"repository": "postern-postgres", "tag": "15", "pullPolicy": "Never"}}}},
    "postern-nats:2.9": {"nats": {"bundled": {"image": {"repository": "postern-nats", "tag": "2.9", "pullPolicy": "Never"}}}},
}


def _docker_has(image):
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def _merge(a, b):
    for k, v in b.items():
        a[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) else v
    return a


@pytest.fixture(scope="module")
def installed(node, tmp_path_factory):
    missing = [i for i in IMAGES if not _docker_has(i)]
    if missing:
        pytest.skip("images not in Docker (make images; sh deploy/docker/build-base.sh all): "
                    + ", ".join(missing))
    run("bash", CLUSTER, "load-image", *IMAGES, timeout=900)
    values = {}
    for v in IMAGES.values():
        _merge(values, v)
    f = tmp_path_factory.mktemp("values") / "values.yaml"
    f.write_text(json.dumps(values))
    kubectl("create", "namespace", NAMESPACE, check=False)
    wait = os.environ.get("K8S_INSTALL_TIMEOUT", "10m")
    # Not helm --wait: it also waits for every LoadBalancer Service to get an address, which
    # needs a cloud's controller (MetalLB, ...); this cluster has none, and the front ends'
    # Services keep their default type. The pods are waited for instead; the Services are
    # reached through their cluster IPs.
    r = helm("upgrade", "--install", RELEASE, CHART, "-n", NAMESPACE, "-f", f,
             "--timeout", wait, timeout=1800, check=False)
    if r.returncode == 0:
        names = kubectl("get", "deployments,statefulsets", "-n", NAMESPACE, "-o", "name",
                        "-l", f"app.kubernetes.io/instance={RELEASE}").stdout.split()
        for name in names:   # an upgrade replaces pods: their workloads are waited for
            r = kubectl("rollout", "status", "-n", NAMESPACE, name, f"--timeout={wait}",
                        timeout=1800, check=False)
            if r.returncode != 0:
                break
    if r.returncode != 0:
        pods = kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        logs = ""
        for name in kubectl("get", "pods", "-n", NAMESPACE, "-o", "name", check=False).stdout.split():
            if "nats-" in name or "postgresql-" in name:
                continue
            logs += f"--- {name}\n" + kubectl("logs", "-n", NAMESPACE, name, "--tail=3",
                                               "--all-containers", check=False).stdout
            if len(logs) > 6000:
                break
        pytest.fail(f"helm install, or its pods Ready within {wait}, failed: "
                    f"{r.stderr[-1500:]}\n{pods}\n{logs}")
    yield
    if os.environ.get("K8S_KEEP") != "1":
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False, timeout=300)


def test_every_pod_ready(installed):
    pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert pods
    for p in pods:
        if p["status"].get("phase") == "Succeeded":      # the migration Job
            continue
        ready = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
        assert ready.get("Ready") == "True", p["metadata"]["name"]


def _cluster_ip(svc):
    return kubectl("get", "svc", "-n", NAMESPACE, svc, "-o", "jsonpath={.spec.clusterIP}").stdout


def _banner(host, port):
    with socket.create_connection((host, port), timeout=10) as s:
        return s.recv(512).decode(errors="replace")


@pytest.mark.parametrize("svc,port,greeting", [
    ("smtpd", 25, "220 "), ("pop3d", 110, "+OK"), ("imapd", 143, "* OK"),
])
def test_mail_ports_answer_through_services(installed, svc, port, greeting):
    assert _banner(_cluster_ip(f"{FULL}-{svc}"), port).startswith(greeting)


def test_smtp_message_read_back_over_pop3s_and_imaps(installed):
    """A domain and a user made with mailctl in its pod; a message to the user over SMTP
    (port 25 of the smtpd Service) is read back over POP3S and IMAPS (their Services)."""
    import imaplib
    import poplib
    import smtplib
    import ssl

    domain, user, password = "k8s.test", "alice@k8s.test", "K8s-test-pw-1"
    token = f"k8s-{random.randrange(10**9)}"
    mailctl = ["exec", "-n", NAMESPACE, f"deploy/{FULL}-mailctl", "-i", "--", "postern", "mailctl"]
    r = kubectl(*mailctl, "domain", "add", domain, check=False)
    assert r.returncode == 0 or "already" in r.stderr or "exist" in r.stderr, r.stderr
    r = kubectl(*mailctl, "user", "add", user, "--password-stdin", input=password + "\n", check=False)
    assert r.returncode == 0 or "already" in r.stderr or "exist" in r.stderr, r.stderr

    deadline = time.time() + 60
    while True:      # front ends pick up the new domain on their next configuration reload
        try:
            with smtplib.SMTP(_cluster_ip(f"{FULL}-smtpd"), 25, timeout=30) as s:
                s.ehlo("client.example.org")
                s.sendmail("sender@example.org", [user],
                           f"From: sender@example.org\r\nTo: {user}\r\nSubject: {token}\r\n\r\n"
                           f"body {token}\r\n")
            break
        except smtplib.SMTPRecipientsRefused:
            if time.time() > deadline:
                raise
            time.sleep(3)

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE          # the chart's self-signed certificate
    deadline = time.time() + 60
    while True:
        p = poplib.POP3_SSL(_cluster_ip(f"{FULL}-pop3d"), 995, context=ctx, timeout=30)
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        found = any(token.encode() in b"\n".join(p.retr(i)[1]) for i in range(1, count + 1))
        p.quit()
        if found or time.time() > deadline:
            break
        time.sleep(2)
    assert found, "POP3S: the message is not in the mailbox"

    m = imaplib.IMAP4_SSL(_cluster_ip(f"{FULL}-imapd"), 993, ssl_context=ctx, timeout=30)
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK", data
    count = int(data[0])
    typ, data = m.fetch(f"1:{count}", "(BODY.PEEK[])")
    m.logout()
    assert any(isinstance(part, tuple) and token.encode() in part[1] for part in data)


# Warnings a pod may cause while it starts, before it is first Ready, and why they are not
# the chart's fault: a claim on one of the cluster's static PersistentVolumes binds a moment
# after it is made (the scheduler and kubelet try before); the kubelet mounts a Secret or a
# ConfigMap made in the same install a moment after its cache has it; a service answers its
# startup probe once it listens, and its readiness probe with 503 until PostgreSQL and NATS,
# starting beside it, answer it. A liveness probe that fails, a restart, a pod killed: never.
STARTING = (("FailedScheduling", "unbound immediate PersistentVolumeClaims"),
            ("FailedMount", "PVC is not bound"),
            ("FailedMount", "cache: timed out waiting for the condition"),
            ("Unhealthy", "Startup probe failed"),
            ("Unhealthy", "Readiness probe failed"))


def warning_events(namespace):
    """The namespace's Warning events, but for those of STARTING that came before their pod
    was Ready; and every container's restarts (there must be none)."""
    pods = {p["metadata"]["name"]: p for p in json.loads(
        kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]}
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    out = []
    for e in events:
        if e.get("type") != "Warning":
            continue
        obj, msg = e["involvedObject"], e.get("message", "")
        when = e.get("lastTimestamp") or e.get("eventTime") or ""
        pod = pods.get(obj["name"]) if obj["kind"] == "Pod" else None
        ready_at = next((c["lastTransitionTime"] for c in (pod or {}).get("status", {})
                         .get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"),
                        None)
        if pod and ready_at and when[:19] <= ready_at[:19] and any(
                e["reason"] == r and m in msg for r, m in STARTING):
            continue
        out.append(f"{obj['kind']}/{obj['name']}: {e['reason']}: {msg[:200]} "
                   f"(x{e.get('count', 1)}, {when})")
    for name, p in pods.items():
        for c in p["status"].get("containerStatuses", []):
            if c.get("restartCount"):
                out.append(f"Pod/{name}: container {c['name']} restarted {c['restartCount']} times")
    return out


def test_no_warning_events_after_install(installed):
    """`kubectl get events` of the release's namespace: no Warning but those of STARTING
    before the pod was Ready (no probe failed after, no pod killed, restarted or refused)."""
    warnings = warning_events(NAMESPACE)
    assert not warnings, "\n".join(warnings)


def test_helm_test_sends_and_reads_a_message(installed):
    r = helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "5m", timeout=600,
             check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Phase:          Succeeded" in r.stdout, r.stdout[-3000:]


# ---- 5. changes under a send loop: nothing acknowledged is lost --------------------------------
LOOP_USER, LOOP_PASSWORD = "loop@k8s.test", "K8s-loop-pw-1"


class SendLoop:
    """Sends a message at a time to LOOP_USER through smtpd's Service (port 25, a session per
    message, a pause between two) until stopped; keeps every outcome: the final reply's code
    for the message, or the error that ended the session before one (refused, reset, closed)."""

    def __init__(self, tag, pause=0.2):
        import threading
        self.tag, self.pause = tag, pause
        self.host = _cluster_ip(f"{FULL}-smtpd")
        self.outcomes = []          # (token, "250" | "4xx text" | "5xx text" | "error: ...")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=120)

    def _one(self, token):
        import smtplib
        body = (f"From: loop@example.org\r\nTo: {LOOP_USER}\r\nSubject: {token}\r\n\r\n"
                f"body {token}\r\n")
        try:
            s = smtplib.SMTP(self.host, 25, timeout=30)
        except smtplib.SMTPConnectError as e:
            return f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}"
        except OSError as e:
            return f"error: {e!r}"
        try:
            s.ehlo("loop.example.org")
            s.sendmail("loop@example.org", [LOOP_USER], body)
            return "250"
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            return f"{code} {text.decode(errors='replace')}"
        except smtplib.SMTPResponseException as e:
            return f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}"
        except (smtplib.SMTPException, OSError) as e:
            return f"error: {e!r}"
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                s.close()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            token = f"{self.tag}-{i:05d}"
            i += 1
            self.outcomes.append((token, self._one(token)))
            self._stop.wait(self.pause)

    def summary(self):
        from collections import Counter
        return Counter(o if o == "250" or o.startswith("error") else o[:40]
                       for _, o in self.outcomes)


def _stored_tokens(tag):
    """Subject tokens of the messages in LOOP_USER's INBOX that start with tag, counted."""
    import imaplib
    import re
    import ssl
    from collections import Counter
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL(_cluster_ip(f"{FULL}-imapd"), 993, ssl_context=ctx, timeout=60)
    m.login(LOOP_USER, LOOP_PASSWORD)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK", data
    found = Counter()
    if int(data[0]):
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        for part in data:
            if isinstance(part, tuple):
                s = re.search(rb"Subject: (\S+)", part[1])
                if s and s.group(1).decode().startswith(tag + "-"):
                    found[s.group(1).decode()] += 1
    m.logout()
    return found


@pytest.fixture(scope="module")
def loop_user(installed):
    mailctl = ["exec", "-n", NAMESPACE, f"deploy/{FULL}-mailctl", "-i", "--", "postern", "mailctl"]
    r = kubectl(*mailctl, "domain", "add", "k8s.test", check=False)
    assert r.returncode == 0 or "already" in r.stderr or "exist" in r.stderr, r.stderr
    r = kubectl(*mailctl, "user", "add", LOOP_USER, "--password-stdin",
                input=LOOP_PASSWORD + "\n", check=False)
    assert r.returncode == 0 or "already" in r.stderr or "exist" in r.stderr, r.stderr
    deadline = time.time() + 90       # the front ends know the domain on their next reload
    while True:
        with SendLoop("warmup") as loop:
            time.sleep(0.5)
        if "250" in loop.summary() or time.time() > deadline:
            break
        time.sleep(3)
    assert "250" in loop.summary(), loop.summary()


def _under_load(tag, event, settle=5):
    """Runs event() under a send loop, keeps the loop going settle seconds after it, then
    checks that every acknowledged message is stored once, that nothing else was stored, and
    that every other outcome was a temporary (4xx) reply. Returns the summary."""
    with SendLoop(tag) as loop:
        time.sleep(3)
        event()
        time.sleep(settle)
    summary = loop.summary()
    print(f"\n{tag}: {dict(summary)}")
    acked = {t for t, o in loop.outcomes if o == "250"}
    assert len(acked) >= 10, summary
    stored = _stored_tokens(tag)
    lost = sorted(acked - set(stored))
    assert not lost, f"acknowledged but not stored: {lost[:10]} ({len(lost)}); {dict(summary)}"
    twice = {t: n for t, n in stored.items() if n > 1}
    assert not twice, f"stored more than once: {twice}"
    unacked = [(t, o) for t, o in loop.outcomes if o != "250"]
    assert all(o[:1] == "4" for _, o in unacked), \
        f"not a temporary reply: {[x for x in unacked if x[1][:1] != '4'][:10]}; {dict(summary)}"
    return summary


def _pods(component):
    out = kubectl("get", "pods", "-n", NAMESPACE, "-o", "json", "-l",
                  f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}").stdout
    return json.loads(out)["items"]


def _wait_pods(component, n, timeout=300):
    """Until exactly n pods of the component exist (none terminating) and all are Ready."""
    deadline = time.time() + timeout
    while True:
        pods = _pods(component)
        ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and
                 {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
                 .get("Ready") == "True"]
        if len(pods) == n and len(ready) == n:
            return pods
        assert time.time() < deadline, f"{component}: {len(pods)} pods, {len(ready)} ready, want {n}"
        time.sleep(1)


def test_scale_smtpd_1_3_1_under_load(loop_user):
    kubectl("scale", "-n", NAMESPACE, f"deploy/{FULL}-smtpd", "--replicas=1")
    _wait_pods("smtpd", 1)

    def event():
        kubectl("scale", "-n", NAMESPACE, f"deploy/{FULL}-smtpd", "--replicas=3")
        _wait_pods("smtpd", 3)
        time.sleep(5)
        kubectl("scale", "-n", NAMESPACE, f"deploy/{FULL}-smtpd", "--replicas=1")
        _wait_pods("smtpd", 1)
    _under_load("scale", event)


def test_delete_a_front_end_pod_under_load(loop_user):
    before = _wait_pods("smtpd", len(_pods("smtpd")))
    victim = before[0]["metadata"]["name"]

    def event():
        kubectl("delete", "pod", "-n", NAMESPACE, victim, "--wait=true", timeout=300)
        _wait_pods("smtpd", len(before))
    _under_load("delete-smtpd", event)
    assert victim not in {p["metadata"]["name"] for p in _pods("smtpd")}


def test_delete_the_answering_limiter_pod_under_load(loop_user):
    mailctl = ["exec", "-n", NAMESPACE, f"deploy/{FULL}-mailctl", "--", "postern", "mailctl"]
    pods = _wait_pods("limiter", len(_pods("limiter")))
    status = json.loads(kubectl(*mailctl, "limiter", "status", "--json").stdout)
    leader = (status.get("lease") or {}).get("replica") or ""
    names = [p["metadata"]["name"] for p in pods]
    victim = next((n for n in names if leader.startswith(n + ":")), None)
    assert victim, f"no limiter pod answers: lease {status.get('lease')}, pods {names}"

    def event():
        kubectl("delete", "pod", "-n", NAMESPACE, victim, "--wait=true", timeout=300)
        _wait_pods("limiter", len(pods))
    _under_load("delete-limiter", event)
    status = json.loads(kubectl(*mailctl, "limiter", "status", "--json").stdout)
    assert not (status["lease"]["replica"] or "").startswith(victim + ":"), status["lease"]


def test_helm_upgrade_to_a_new_image_tag_under_load(loop_user, tmp_path):
    """A rolling update of every Postern pod: the same image under a new tag. PostgreSQL and
    NATS, whose images did not change, are not restarted."""
    tag = "k8s-upgrade"
    subprocess.run(["docker", "tag", "postern:latest", f"postern:{tag}"], check=True)
    run("bash", CLUSTER, "load-image", f"postern:{tag}", timeout=900)
    kept = {p["metadata"]["name"]: p["metadata"]["uid"]
            for c in ("postgresql", "nats") for p in _pods(c)}
    assert kept

    def event():
        helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, "--reuse-values",
             "--set", f"image.tag={tag}", "--timeout", "10m", timeout=900)
        for name in kubectl("get", "deployments", "-n", NAMESPACE, "-o", "name", "-l",
                            f"app.kubernetes.io/instance={RELEASE}").stdout.split():
            kubectl("rollout", "status", "-n", NAMESPACE, name, "--timeout=10m", timeout=900)
    _under_load("upgrade", event, settle=10)
    images = kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
                     "-o", "jsonpath={range .items[*]}{.spec.containers[0].image} {end}").stdout
    assert f"postern:{tag}" in images.split()
    now = {p["metadata"]["name"]: p["metadata"]["uid"]
           for c in ("postgresql", "nats") for p in _pods(c)}
    assert now == kept, f"restarted by the upgrade: before {kept}, after {now}"


# ---- 6. production-like values: a release of its own ----------------------------------------
PROD_RELEASE = PROD_NAMESPACE = "prod"
# values-production.yaml asks for 2.75 CPUs in requests, more than this 2-core node has:
# the same pods with smaller CPU requests (their memory requests and limits as given).
SMALL_CPU = {c: {"resources": {"requests": {"cpu": "20m"}}}
             for c in ("smtpd", "pop3d", "imapd", "limiter", "relayd")}
SMALL_CPU["postgresql"] = {"bundled": {"resources": {"requests": {"cpu": "50m"}}}}
SMALL_CPU["nats"] = {"bundled": {"resources": {"requests": {"cpu": "20m"}}}}


def test_production_values_install_and_pass_helm_test(installed, tmp_path):
    """helm/postern/values-production.yaml (3 smtpd, 2 pop3d, 2 imapd, 2 webd, 2 limiters,
    2 relayd, PostgreSQL and a NATS cluster of three with JetStream on volumes, TLS on the
    bus, NetworkPolicies), installed once the default release is uninstalled: every pod Ready,
    the expected replicas, no Warning event, and `helm test` sends and reads a message."""
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m", timeout=600)
    values = {"hostname": "mail.example.org"}
    for v in IMAGES.values():
        _merge(values, json.loads(json.dumps(v)))
    _merge(values, json.loads(json.dumps(SMALL_CPU)))
    f = tmp_path / "values.yaml"
    f.write_text(json.dumps(values))
    kubectl("create", "namespace", PROD_NAMESPACE, check=False)
    try:
        helm("upgrade", "--install", PROD_RELEASE, CHART, "-n", PROD_NAMESPACE,
             "-f", CHART / "values-production.yaml", "-f", f, "--timeout", "10m", timeout=900)
        for name in kubectl("get", "deployments,statefulsets", "-n", PROD_NAMESPACE, "-o", "name",
                            "-l", f"app.kubernetes.io/instance={PROD_RELEASE}").stdout.split():
            kubectl("rollout", "status", "-n", PROD_NAMESPACE, name, "--timeout=10m", timeout=900)
        pods = json.loads(kubectl("get", "pods", "-n", PROD_NAMESPACE, "-o", "json").stdout)["items"]
        from collections import Counter
        count = Counter(p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods
                        if p["status"].get("phase") == "Running")
        want = {"smtpd": 3, "pop3d": 2, "imapd": 2, "webd": 2, "limiter": 2, "relayd": 2,
                "nats": 3, "postgresql": 1}
        assert {c: count.get(c, 0) for c in want} == want, dict(count)
        for kind in ("networkpolicy", "poddisruptionbudget"):
            assert kubectl("get", kind, "-n", PROD_NAMESPACE, "-o", "name").stdout.strip(), kind
        r = helm("test", PROD_RELEASE, "-n", PROD_NAMESPACE, "--logs", "--timeout", "5m",
                 timeout=600, check=False)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        warnings = warning_events(PROD_NAMESPACE)
        assert not warnings, "\n".join(warnings)
    finally:
        if os.environ.get("K8S_KEEP") != "1":
            helm("uninstall", PROD_RELEASE, "-n", PROD_NAMESPACE, "--wait", check=False,
                 timeout=600)
