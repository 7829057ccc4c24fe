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
    assert r.returncode == 0 or "exist" in (r.stdout + r.stderr), r.stderr
    r = kubectl(*mailctl, "user", "add", user, "--password-stdin", input=password + "\n", check=False)
    assert r.returncode == 0 or "exist" in (r.stdout + r.stderr), r.stderr

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
