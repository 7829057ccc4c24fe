"""The Helm chart (helm/postern), linted and rendered with several sets of values; the
rendered objects are read back and checked for what a running system depends on: ports on
Services and containers, probes, replicas, autoscalers, the limiter's replicas, Secrets that
exist and are mounted, the security context, the migration hook, bundled or external
PostgreSQL and NATS (a cluster of three with JetStream, TLS with the chart's own CA, a bus
user per service with the permissions of the one table that deploy/nats-auth.sh reads too),
the PROXY protocol setting, the front ends' drain deadline and grace period.

Also: values.schema.json refuses unknown and mistyped values, the NetworkPolicies let only
Postern's own pods reach the bundled PostgreSQL and NATS, the `helm test` pod, the production
values, and that a plain `helm template` works with any helm (no --kube-version).

helm comes from $HELM, the PATH, build/tools/helm, or else `go install` from the Go module
proxy into build/tools (a few minutes, once), linked like a release build so that it knows
the Kubernetes version of its own client libraries (a plain `go install` assumes v1.20.0);
without Go or the proxy the tests are skipped with the reason.
Run: /usr/bin/python3 -m pytest -rs tests/deploy/test_helm.py
"""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "postern"
TOOLS = ROOT / "build" / "tools"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm@v3.22.0"
PRODUCTION = CHART / "values-production.yaml"
RELEASE = "mail"
NAMESPACE = "mail"
FULL = "mail-postern"

FRONTENDS = {   # service name -> {port name: (container port, default Service port)}
    "smtpd": {"smtp": (2525, 25), "submission": (2587, 587), "smtps": (2465, 465)},
    "pop3d": {"pop3": (2110, 110), "pop3s": (2995, 995)},
    "imapd": {"imap": (2143, 143), "imaps": (2993, 993)},
}
PORT_ENV = {"smtp": "SMTP_PORT", "submission": "SUBMISSION_PORT", "smtps": "SMTPS_PORT",
            "pop3": "POP3_PORT", "pop3s": "POP3S_PORT", "imap": "IMAP_PORT", "imaps": "IMAPS_PORT"}

EXTERNAL = {"postgresql": {"external": {"url": "postgresql://postern:pw@db.example:5432/postern"}},
            "nats": {"external": {"url": "nats://bus.example:4222"}}}


# ---- helm --------------------------------------------------------------------------------
def _is_helm3(path):
    try:
        out = subprocess.run([path, "version", "--short"], capture_output=True, text=True,
                             timeout=60)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.startswith("v3.")


def default_kube_version(helm):
    """The Kubernetes version helm assumes without a cluster and without --kube-version."""
    with tempfile.TemporaryDirectory() as d:
        chart = Path(d) / "probe"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
        (chart / "templates" / "v.yaml").write_text(
            "# {{ .Capabilities.KubeVersion.Version }}\n")
        r = subprocess.run([helm, "template", str(chart)], capture_output=True, text=True,
                           timeout=60)
    m = re.search(r"# (v\d+\.\d+\.\d+)", r.stdout)
    return m.group(1) if m else None


def _module_kube_version(go, env):
    """The Kubernetes version of the client libraries HELM_MODULE is built with, as helm's
    Makefile derives it (k8s.io/client-go v0.N.x is Kubernetes 1.N), or None."""
    r = subprocess.run([go, "mod", "download", "-json", HELM_MODULE.replace("/cmd/helm", "")],
                       env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return None
    gomod = Path(json.loads(r.stdout)["GoMod"]).read_text()
    m = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.M)
    return ("1", m.group(1)) if m else None


def _find_helm():
    """The path of a helm 3 binary, or (None, reason). The user's own (HELM, the PATH) is
    taken as it is: the chart must work with it. build/tools/helm is built again when it
    is a plain `go install` that assumes Kubernetes v1.20.0."""
    for candidate in (os.environ.get("HELM"), shutil.which("helm")):
        if candidate and os.path.exists(candidate) and _is_helm3(candidate):
            return candidate, None
    ours = str(TOOLS / "helm")
    if os.path.exists(ours) and _is_helm3(ours) and default_kube_version(ours) not in (None, "v1.20.0"):
        return ours, None
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if not go:
        return None, "helm is not installed and there is no Go toolchain to build it"
    TOOLS.mkdir(parents=True, exist_ok=True)
    print(f"\ninstalling {HELM_MODULE} into {TOOLS} (go install; a few minutes the first time)")
    env = dict(os.environ, GOBIN=str(TOOLS), GOFLAGS="-mod=mod")
    args = [go, "install"]
    kube = _module_kube_version(go, env)
    if kube:
        # What helm's Makefile passes: the version `helm template` and `helm lint` assume.
        major, minor = kube
        args.append("-ldflags=" + " ".join(
            f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
            for pkg in ("chartutil", "lint/rules")
            for part, value in (("Major", major), ("Minor", minor))))
    try:
        r = subprocess.run(args + [HELM_MODULE], env=env, capture_output=True, text=True,
                           timeout=1500)
    except subprocess.TimeoutExpired:
        return None, "go install of helm took longer than 25 minutes"
    if r.returncode != 0 or not _is_helm3(ours):
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return None, "go install of helm failed (module proxy unreachable?): " + " | ".join(tail)
    return ours, None


@pytest.fixture(scope="session")
def helm():
    path, reason = _find_helm()
    if not path:
        print(f"\nSKIPPING the Helm chart tests: {reason}")
        pytest.skip(reason)
    return path


def run_helm(helm, *args, check=True):
    r = subprocess.run([helm, *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


# ---- rendering ---------------------------------------------------------------------------
class Rendered:
    """The objects of one `helm template`, with lookups by kind and name."""

    def __init__(self, docs):
        self.docs = [d for d in docs if d]

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def names(self, kind):
        return sorted(d["metadata"]["name"] for d in self.all(kind))

    def get(self, kind, name):
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} ({self.names(kind)})"
        return found[0]

    def maybe(self, kind, name):
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self):
        return self.all("Deployment") + self.all("StatefulSet") + self.all("Job")

    def postern_workloads(self):
        """Deployments and Jobs running the postern image."""
        return [w for w in self.all("Deployment") + self.all("Job")
                if pod_spec(w)["containers"][0]["image"].startswith("postern:")]

    def postern_deployments(self):
        """Deployments running the postern image (not the webmail's Roundcube)."""
        return [w for w in self.postern_workloads() if w["kind"] == "Deployment"]

    def pods(self):
        """Every pod this render would start: workloads' templates and bare Pods (the helm
        test hook), as (where, pod labels, pod spec)."""
        out = [(f"{w['kind']}/{w['metadata']['name']}", w["spec"]["template"]["metadata"]["labels"],
                pod_spec(w)) for w in self.workloads()]
        out += [(f"Pod/{p['metadata']['name']}", p["metadata"]["labels"], p["spec"])
                for p in self.all("Pod")]
        return out


@pytest.fixture(scope="session")
def render(helm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("values")
    count = [0]

    def _render(values=None, check=True, extra=()):
        """helm template as a user runs it: no --kube-version. values: a dict, or the path
        of a values file; extra: more arguments (--set ...)."""
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if isinstance(values, Path):
            args += ["-f", str(values)]
        elif values:
            count[0] += 1
            f = folder / f"values{count[0]}.yaml"
            f.write_text(yaml.safe_dump(values))
            args += ["-f", str(f)]
        r = run_helm(helm, *args, *extra, check=check)
        if not check:
            return r
        return Rendered(yaml.safe_load_all(r.stdout))

    return _render


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def container(workload, name=None):
    cs = pod_spec(workload)["containers"]
    if name is None:
        assert len(cs) == 1
        return cs[0]
    return next(c for c in cs if c["name"] == name)


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c, name):
    return env_of(c)[name].get("value")


def all_containers(workload):
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def deep(values, **patch):
    """values with dotted keys set: deep({}, **{"smtpd.replicas": 3})."""
    out = yaml.safe_load(yaml.safe_dump(values or {}))
    for dotted, v in patch.items():
        d = out
        *path, last = dotted.split(".")
        for p in path:
            d = d.setdefault(p, {})
        d[last] = v
    return out


# ---- lint --------------------------------------------------------------------------------
VALUE_SETS = {
    "defaults": {},
    "external": EXTERNAL,
    "replicas3": {"smtpd": {"replicas": 3}, "pop3d": {"replicas": 3}, "imapd": {"replicas": 3}},
    "autoscaling": {"smtpd": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                                              "targetCPUUtilizationPercentage": 60}},
                    "pop3d": {"autoscaling": {"enabled": True}},
                    "imapd": {"autoscaling": {"enabled": True}}},
    "existing-tls": {"tls": {"existingSecret": "mail-example-org-tls"}},
    "proxy": {"proxyProtocol": {"trustedNetworks": ["10.0.0.0/8", "2001:db8::/32"]}},
    "drain": {"smtpd": {"drainTimeout": 40}, "pop3d": {"drainTimeout": 0},
              "imapd": {"drainTimeout": 20, "terminationGracePeriodSeconds": 90}},
    "webmail": {"webmail": {"enabled": True}},
    "production": yaml.safe_load(PRODUCTION.read_text()),
    "no-network-policy": {"networkPolicy": {"enabled": False}},
}
DRAIN_MARGIN = 5   # seconds of grace beyond a front end's drainTimeout and preStop sleep
PRESTOP = 5        # preStopDelay by default


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint(helm, tmp_path, name):
    args = ["lint", "--strict", str(CHART)]
    if VALUE_SETS[name]:
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(VALUE_SETS[name]))
        args += ["-f", str(f)]
    r = run_helm(helm, *args)
    assert "0 chart(s) failed" in r.stdout, r.stdout


# ---- what every value set must hold ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_invariants(render, name):
    r = render(VALUE_SETS[name])
    # Every Postern container: no root, no privileges, read-only root, all capabilities
    # dropped, resource requests, the same image.
    for w in r.postern_workloads():
        spec = pod_spec(w)
        where = f"{w['kind']}/{w['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in all_containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"], where
            assert c["image"] == "postern:latest", where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, where   # the only writable place
    # Every pod, the bundled servers', the webmail's and the test hook's too: not root, the
    # runtime's seccomp profile, and every container with a read-only root, no privilege
    # escalation and no capabilities.
    for where, _, spec in r.pods():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "privileged" not in sc and "add" not in sc["capabilities"], (where, c["name"])

    # Every Secret and ConfigMap a pod refers to is rendered here (or is the user's own).
    own = {"mail-example-org-tls"}
    secrets = set(r.names("Secret")) | own
    configmaps = set(r.names("ConfigMap"))
    for where, _, spec in r.pods():
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets, vol
            if "configMap" in vol:
                assert vol["configMap"]["name"] in configmaps, vol
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, (where, e)
                    key_holder = r.maybe("Secret", ref["name"])
                    if key_holder:
                        keys = set(key_holder.get("stringData", {})) | set(key_holder.get("data", {}))
                        assert ref["key"] in keys, (ref, keys)
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps

    # The limiter: two replicas (each key decided by one at a time), three copies of its
    # JetStream state, never autoscaled.
    limiter = r.get("Deployment", f"{FULL}-limiter")
    assert limiter["spec"]["replicas"] == 2
    assert container(limiter)["args"] == ["limiter"]
    assert env_value(container(limiter), "NATS_JS_REPLICAS") == "3"
    for hpa in r.all("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] != f"{FULL}-limiter"
    assert not r.maybe("PodDisruptionBudget", f"{FULL}-limiter")

    # Every Postern container logs in to NATS as the user named like its service, and its
    # pod holds that user's password only (the mailctl pod, mailctl's).
    for w in r.postern_deployments():
        c = container(w)
        user = w["metadata"]["name"][len(FULL) + 1:]
        env = env_of(c)
        assert env_value(c, "NATS_USER") == user, w["metadata"]["name"]
        assert env_value(c, "NATS_PASSWORD_FILE") == "/etc/postern/nats/password"
        assert "NATS_PASSWORD" not in env
        vols = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert vols["nats-auth"]["secret"]["items"] == [{"key": user, "path": "password"}]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["nats-auth"]["mountPath"] == "/etc/postern/nats"
        if "NATS_TLS_CA" in env:
            assert mounts["nats-ca"]["mountPath"] + "/ca.crt" == env_value(c, "NATS_TLS_CA")

    # Probes: liveness on /healthz, readiness on /readyz, on the container's health port,
    # which is the HEALTH_PORT the services are told (the mailctl pod runs no service).
    health_port = int(r.get("ConfigMap", FULL)["data"]["HEALTH_PORT"])
    for w in r.postern_deployments():
        c = container(w)
        if w["metadata"]["name"] == f"{FULL}-mailctl":
            assert c["args"] == ["idle"] and "ports" not in c and "livenessProbe" not in c
            continue
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["health"] == health_port
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        # Liveness waits for the first answer: a pod slow to start is not killed for it.
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60
        assert c["envFrom"] == [{"configMapRef": {"name": FULL}}]
        assert "DATABASE_URL" in env_of(c) and "NATS_URL" in env_of(c)

    # Every front end serves on for its preStop sleep (the Service's endpoints and kube-proxy
    # let go of it meanwhile: on a cluster, pods stopped without it refused connections or let
    # them time out), then drains (DRAIN_TIMEOUT), all within its pod's grace period, with a
    # margin: Kubernetes kills the pod when the grace period ends.
    for name in FRONTENDS:
        dep = r.maybe("Deployment", f"{FULL}-{name}")
        if dep:
            c = container(dep)
            drain = int(env_value(c, "DRAIN_TIMEOUT"))
            sleep = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            pause = int(sleep[1]) if sleep else 0
            assert sleep is None or sleep[0] == "sleep", (name, sleep)
            assert pod_spec(dep)["terminationGracePeriodSeconds"] >= drain + pause + DRAIN_MARGIN, name

    # Every Service selects the pods of some workload.
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in r.workloads()]
    for svc in r.all("Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pod_labels), svc["metadata"]["name"]


# ---- defaults ----------------------------------------------------------------------------
def frontend_checks(r, name, replicas=None, service_ports=None):
    """The front end's Deployment, Service and PDB agree on ports and labels."""
    dep = r.get("Deployment", f"{FULL}-{name}")
    c = container(dep)
    assert c["args"] == [name]
    if replicas is not None:
        assert dep["spec"]["replicas"] == replicas
    cports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(c)
    svc = r.get("Service", f"{FULL}-{name}")
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(sports) == set(FRONTENDS[name])
    for pname, (inside, outside) in FRONTENDS[name].items():
        assert cports[pname] == inside, pname
        assert env[PORT_ENV[pname]]["value"] == str(inside), pname   # it listens where declared
        assert sports[pname]["targetPort"] == pname
        assert sports[pname]["protocol"] == "TCP"
        want = (service_ports or {}).get(pname, outside)
        assert sports[pname]["port"] == want, pname
    # The certificate, mounted where TLS_CERT and TLS_KEY point.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls"]["mountPath"] == "/etc/postern/tls" and mounts["tls"]["readOnly"] is True
    assert env["TLS_CERT"]["value"] == "/etc/postern/tls/tls.crt"
    assert env["TLS_KEY"]["value"] == "/etc/postern/tls/tls.key"
    vols = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert {i["path"] for i in vols["tls"]["secret"]["items"]} == {"tls.crt", "tls.key"}
    # Nobody but the pod's group reads the key.
    assert vols["tls"]["secret"]["defaultMode"] == 0o440
    assert pod_spec(dep)["securityContext"]["fsGroup"] == 10001
    pdb = r.get("PodDisruptionBudget", f"{FULL}-{name}")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    return dep, svc


def test_defaults(render):
    r = render()
    assert r.names("Deployment") == sorted(f"{FULL}-{n}" for n in ("smtpd", "pop3d", "imapd", "limiter",
                                                                   "notifier", "relayd", "mailctl",
                                                                   "webd"))
    # webd: HTTPS on 443 inside the cluster, the mail certificate, one replica by default.
    webd = r.get("Deployment", f"{FULL}-webd")
    assert container(webd)["args"] == ["webd"] and webd["spec"]["replicas"] == 1
    assert "tls" in {m["name"] for m in container(webd)["volumeMounts"]}
    web_svc = r.get("Service", f"{FULL}-webd")
    assert web_svc["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in web_svc["spec"]["ports"]] == [("https", 443)]
    for name in ("smtpd", "pop3d", "imapd"):
        dep, svc = frontend_checks(r, name, replicas=2)
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["externalTrafficPolicy"] == "Local"   # client addresses kept
        # Rolling updates never drop below the wanted count.
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert r.all("HorizontalPodAutoscaler") == []
    assert r.names("PodDisruptionBudget") == [f"{FULL}-imapd", f"{FULL}-pop3d", f"{FULL}-smtpd"]
    # relayd: two replicas sharing the queue, no ports, no certificate of its own.
    relayd = r.get("Deployment", f"{FULL}-relayd")
    assert container(relayd)["args"] == ["relayd"] and relayd["spec"]["replicas"] == 2
    assert "tls" not in {m["name"] for m in container(relayd)["volumeMounts"]}
    notifier = r.get("Deployment", f"{FULL}-notifier")
    assert notifier["spec"]["replicas"] == 1
    assert "tls" not in {m["name"] for m in container(notifier)["volumeMounts"]}

    # PostgreSQL and NATS bundled.
    assert r.names("StatefulSet") == [f"{FULL}-nats", f"{FULL}-postgresql"]
    pg = r.get("StatefulSet", f"{FULL}-postgresql")
    pg_c = container(pg)
    assert pg_c["image"] == "postgres:15"
    assert env_of(pg_c)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULL}-postgresql", "key": "password"}
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert r.get("Service", f"{FULL}-postgresql")["spec"]["ports"][0]["port"] == 5432
    nats = r.get("StatefulSet", f"{FULL}-nats")
    assert container(nats)["readinessProbe"]["httpGet"] == {
        "path": "/healthz?js-enabled-only=true", "port": "monitor"}
    assert r.get("Service", f"{FULL}-nats")["spec"]["ports"][0]["port"] == 4222
    assert r.get("Secret", FULL)["stringData"]["NATS_URL"] == ",".join(
        f"tls://{FULL}-nats-{i}.{FULL}-nats-headless:4222" for i in range(3))
    assert len(r.get("Secret", f"{FULL}-postgresql")["data"]["password"]) > 20

    # Every Postern pod reaches the bundled database with its password from the Secret.
    smtpd = container(r.get("Deployment", f"{FULL}-smtpd"))
    env = env_of(smtpd)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULL}-postgresql"
    assert env["DATABASE_URL"]["value"] == f"postgresql://postern:$(POSTGRES_PASSWORD)@{FULL}-postgresql:5432/postern"
    names = [e["name"] for e in smtpd["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("DATABASE_URL")   # $(...) expands
    assert env["NATS_URL"]["valueFrom"]["secretKeyRef"] == {"name": FULL, "key": "NATS_URL"}

    # A self-signed certificate in a kubernetes.io/tls Secret.
    tls = r.get("Secret", f"{FULL}-tls")
    assert tls["type"] == "kubernetes.io/tls" and set(tls["data"]) == {"tls.crt", "tls.key"}

    # The schema: the bundled database only exists after install, so each Postern pod
    # migrates in an init container, and the hook runs before upgrades.
    job = r.get("Job", f"{FULL}-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade"
    assert container(job)["args"] == ["migrate"]
    for w in r.all("Deployment"):
        inits = pod_spec(w)["initContainers"]
        assert [i["args"] for i in inits] == [["migrate"]]
        assert "DATABASE_URL" in env_of(inits[0])

    cm = r.get("ConfigMap", FULL)["data"]
    assert cm["PROXY_TRUSTED_NETWORKS"] == ""      # off
    assert cm["HEALTH_PORT"] == "8080"


# ---- external PostgreSQL and NATS ----------------------------------------------------------
def test_external_database_and_bus(render):
    r = render(EXTERNAL)
    assert r.all("StatefulSet") == []
    assert not r.maybe("Service", f"{FULL}-postgresql") and not r.maybe("Service", f"{FULL}-nats")
    assert not r.maybe("Secret", f"{FULL}-postgresql")
    main = r.get("Secret", FULL)["stringData"]
    assert main["DATABASE_URL"] == EXTERNAL["postgresql"]["external"]["url"]
    assert main["NATS_URL"] == "nats://bus.example:4222"
    for w in r.all("Deployment"):
        env = env_of(container(w))
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": FULL, "key": "DATABASE_URL"}
        assert "POSTGRES_PASSWORD" not in env
        assert "initContainers" not in pod_spec(w)
    # The hook runs before install and upgrade, with the URL in a hook Secret made just
    # before it (the release's own Secret does not exist yet at pre-install).
    job = r.get("Job", f"{FULL}-migrate")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in ann["helm.sh/hook-delete-policy"]
    hook_secret = r.get("Secret", f"{FULL}-migrate")
    hann = hook_secret["metadata"]["annotations"]
    assert hann["helm.sh/hook"] == ann["helm.sh/hook"]
    assert int(hann["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    assert hook_secret["stringData"]["DATABASE_URL"] == EXTERNAL["postgresql"]["external"]["url"]
    assert env_of(container(job))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULL}-migrate"
    assert pod_spec(job).get("serviceAccountName") is None   # the chart's does not exist yet


def test_external_database_from_an_existing_secret(render):
    r = render(deep(EXTERNAL, **{"postgresql.external.url": "",
                                 "postgresql.external.existingSecret": "pg-credentials",
                                 "postgresql.external.existingSecretKey": "url"}))
    assert r.all("StatefulSet") == []
    assert "DATABASE_URL" not in r.get("Secret", FULL)["stringData"]
    assert not r.maybe("Secret", f"{FULL}-migrate")
    for w in r.all("Deployment") + r.all("Job"):
        ref = env_of(container(w))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "pg-credentials", "key": "url"}


def test_external_url_wins_over_bundled(render):
    """Setting only the URLs is enough: the bundled servers are not made."""
    r = render(deep(EXTERNAL, **{"postgresql.bundled.enabled": True, "nats.bundled.enabled": True}))
    assert r.all("StatefulSet") == []


def test_no_database_at_all_fails(render):
    r = render({"postgresql": {"bundled": {"enabled": False}}}, check=False)
    assert r.returncode != 0
    assert "postgresql.external.url" in r.stderr


# ---- replicas and autoscaling --------------------------------------------------------------
def test_replicas(render):
    r = render(VALUE_SETS["replicas3"])
    for name in ("smtpd", "pop3d", "imapd"):
        frontend_checks(r, name, replicas=3)
    assert r.all("HorizontalPodAutoscaler") == []
    assert r.get("Deployment", f"{FULL}-limiter")["spec"]["replicas"] == 2


def test_limiter_replicas(render):
    r = render({"limiter": {"replicas": 3, "jsReplicas": 1}})
    limiter = r.get("Deployment", f"{FULL}-limiter")
    assert limiter["spec"]["replicas"] == 3
    assert env_value(container(limiter), "NATS_JS_REPLICAS") == "1"
    assert r.all("HorizontalPodAutoscaler") == []
    # The limiter is never autoscaled: asking for it is refused, not ignored.
    bad = render({"limiter": {"autoscaling": {"enabled": True}}}, check=False)
    assert bad.returncode != 0
    assert "autoscaling" in bad.stderr and "limiter" in bad.stderr, bad.stderr


def test_autoscaling(render):
    r = render(VALUE_SETS["autoscaling"])
    hpas = {h["metadata"]["name"]: h for h in r.all("HorizontalPodAutoscaler")}
    assert set(hpas) == {f"{FULL}-smtpd", f"{FULL}-pop3d", f"{FULL}-imapd"}
    smtpd = hpas[f"{FULL}-smtpd"]
    assert smtpd["apiVersion"] == "autoscaling/v2"
    assert smtpd["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULL}-smtpd"}
    assert smtpd["spec"]["minReplicas"] == 3 and smtpd["spec"]["maxReplicas"] == 12
    metric = smtpd["spec"]["metrics"][0]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert hpas[f"{FULL}-pop3d"]["spec"]["minReplicas"] == 2
    assert hpas[f"{FULL}-imapd"]["spec"]["minReplicas"] == 2
    for name in ("smtpd", "pop3d", "imapd"):
        dep, _ = frontend_checks(r, name)
        # The autoscaler owns the count: the Deployment does not fight it.
        assert "replicas" not in dep["spec"]
        # CPU utilisation needs a CPU request.
        assert container(dep)["resources"]["requests"]["cpu"]
    imapd_svc = r.get("Service", f"{FULL}-imapd")
    assert {p["port"] for p in imapd_svc["spec"]["ports"]} == {143, 993}


# ---- certificates --------------------------------------------------------------------------
def test_existing_tls_secret(render):
    r = render(VALUE_SETS["existing-tls"])
    assert not r.maybe("Secret", f"{FULL}-tls")
    for name in ("smtpd", "pop3d", "imapd"):
        dep, _ = frontend_checks(r, name)
        vols = {v["name"]: v for v in pod_spec(dep)["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == "mail-example-org-tls"
        assert "checksum/tls" not in dep["spec"]["template"]["metadata"]["annotations"]


def test_tls_from_values(render):
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    r = render({"tls": {"cert": cert, "key": key}})
    import base64
    data = r.get("Secret", f"{FULL}-tls")["data"]
    assert base64.b64decode(data["tls.crt"]).decode() == cert
    assert base64.b64decode(data["tls.key"]).decode() == key
    bad = render({"tls": {"cert": cert}}, check=False)
    assert bad.returncode != 0 and "tls.key" in bad.stderr


def test_hostname(render):
    r = render({"hostname": "mail.example.org"})
    assert env_value(container(r.get("Deployment", f"{FULL}-smtpd")), "SMTP_HOSTNAME") == "mail.example.org"
    assert env_value(container(r.get("Deployment", f"{FULL}-pop3d")), "POP3_HOSTNAME") == "mail.example.org"
    assert env_value(container(r.get("Deployment", f"{FULL}-imapd")), "IMAP_HOSTNAME") == "mail.example.org"
    # Unset: each pod greets with its own name (no variable).
    r = render()
    assert "SMTP_HOSTNAME" not in env_of(container(r.get("Deployment", f"{FULL}-smtpd")))
    assert "IMAP_HOSTNAME" not in env_of(container(r.get("Deployment", f"{FULL}-imapd")))


# ---- draining --------------------------------------------------------------------------------
def drain_of(r, name):
    """(DRAIN_TIMEOUT as the container gets it, the pod's terminationGracePeriodSeconds)."""
    dep = r.get("Deployment", f"{FULL}-{name}")
    return env_value(container(dep), "DRAIN_TIMEOUT"), pod_spec(dep)["terminationGracePeriodSeconds"]


def test_drain_timeout(render):
    r = render()
    for name in ("smtpd", "pop3d", "imapd", "webd"):
        assert drain_of(r, name) == ("10", 10 + PRESTOP + DRAIN_MARGIN), name
        c = container(r.get("Deployment", f"{FULL}-{name}"))
        assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", str(PRESTOP)]}}}
    # Only front ends drain sessions.
    for name in ("limiter", "notifier"):
        assert "DRAIN_TIMEOUT" not in env_of(container(r.get("Deployment", f"{FULL}-{name}"))), name

    r = render(VALUE_SETS["drain"])
    assert drain_of(r, "smtpd") == ("40", 40 + PRESTOP + DRAIN_MARGIN)
    assert drain_of(r, "pop3d") == ("0", PRESTOP + DRAIN_MARGIN)  # 0: sessions closed at once
    assert drain_of(r, "imapd") == ("20", 90)                 # a longer grace period is kept
    # A shorter one is not: the drain would be cut off by SIGKILL.
    r = render({"smtpd": {"drainTimeout": 30, "terminationGracePeriodSeconds": 10}})
    assert drain_of(r, "smtpd") == ("30", 30 + PRESTOP + DRAIN_MARGIN)
    # No preStop sleep: SIGTERM at once.
    r = render({"preStopDelay": 0})
    assert drain_of(r, "smtpd") == ("10", 10 + DRAIN_MARGIN)
    assert "lifecycle" not in container(r.get("Deployment", f"{FULL}-smtpd"))


@pytest.mark.parametrize("bad", [-1, 1.5, "ten", 86401, None])
@pytest.mark.parametrize("name", ["pop3d", "imapd"])
def test_bad_drain_timeout_fails(render, name, bad):
    """Refused by values.schema.json (helm names /NAME/drainTimeout, or NAME.drainTimeout),
    or, for a value it does not see (null removes the default), by the template's check:
    "NAME.drainTimeout must be whole seconds from 0 to 86400"."""
    r = render({name: {"drainTimeout": bad}}, check=False)
    assert r.returncode != 0
    assert re.search(f"{name}[./]drainTimeout", r.stderr), r.stderr


# ---- PROXY protocol and Services ---------------------------------------------------------
def test_proxy_protocol(render):
    r = render(VALUE_SETS["proxy"])
    assert r.get("ConfigMap", FULL)["data"]["PROXY_TRUSTED_NETWORKS"] == "10.0.0.0/8,2001:db8::/32"
    for name in ("smtpd", "pop3d", "imapd"):
        dep = r.get("Deployment", f"{FULL}-{name}")
        assert container(dep)["envFrom"] == [{"configMapRef": {"name": FULL}}]
    # A changed setting rolls the pods (the ConfigMap's checksum is in the pod template).
    before = render().get("Deployment", f"{FULL}-smtpd")["spec"]["template"]["metadata"]["annotations"]
    after = r.get("Deployment", f"{FULL}-smtpd")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]


def test_service_type_and_ports_are_configurable(render):
    r = render({"smtpd": {"service": {"type": "ClusterIP", "ports": {"smtp": 2525, "submission": 2587, "smtps": 2465}}},
                "pop3d": {"service": {"type": "NodePort", "externalTrafficPolicy": "Cluster",
                                      "annotations": {"example.org/lb": "shared"}}},
                "imapd": {"service": {"type": "ClusterIP", "ports": {"imap": 1143, "imaps": 1993}}}})
    _, smtpd = frontend_checks(r, "smtpd", service_ports={"smtp": 2525, "submission": 2587, "smtps": 2465})
    assert smtpd["spec"]["type"] == "ClusterIP" and "externalTrafficPolicy" not in smtpd["spec"]
    _, pop3d = frontend_checks(r, "pop3d")
    assert pop3d["spec"]["type"] == "NodePort" and pop3d["spec"]["externalTrafficPolicy"] == "Cluster"
    assert pop3d["metadata"]["annotations"] == {"example.org/lb": "shared"}
    _, imapd = frontend_checks(r, "imapd", service_ports={"imap": 1143, "imaps": 1993})
    assert imapd["spec"]["type"] == "ClusterIP" and "externalTrafficPolicy" not in imapd["spec"]


def test_optional_services(render):
    r = render({"imapd": {"enabled": False}, "relayd": {"enabled": True, "replicas": 2},
                "notifier": {"enabled": False}})
    relayd = r.get("Deployment", f"{FULL}-relayd")
    assert container(relayd)["args"] == ["relayd"] and relayd["spec"]["replicas"] == 2
    assert not r.maybe("Deployment", f"{FULL}-notifier")
    # A front end turned off leaves nothing behind: no Deployment, Service, PDB or HPA.
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert not r.maybe(kind, f"{FULL}-imapd"), kind
    frontend_checks(r, "pop3d", replicas=2)


def test_bundled_images_for_machines_without_a_registry(render):
    r = render({"image": {"tag": "0.1.0"},
                "postgresql": {"bundled": {"image": {"repository": "postern-postgres", "tag": "15"}}},
                "nats": {"bundled": {"image": {"repository": "postern-nats", "tag": "2.9"}}}})
    assert container(r.get("StatefulSet", f"{FULL}-postgresql"))["image"] == "postern-postgres:15"
    assert container(r.get("StatefulSet", f"{FULL}-nats"))["image"] == "postern-nats:2.9"
    assert container(r.get("Deployment", f"{FULL}-smtpd"))["image"] == "postern:0.1.0"


# ---- the bus: users, permissions, TLS, the cluster ------------------------------------------
NATS_USERS = ["smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd", "mailctl", "webd"]
NATS_AUTH_SH = ROOT / "deploy" / "nats-auth.sh"


def parse_authorization(text):
    """{user: (publish allow, publish deny, subscribe allow, allow_responses)} of a
    nats-server authorization block (either generator's output)."""
    users = {}
    for m in re.finditer(r'\{\s*user:\s*"([^"]+)"(.*?)\n\s*\}\n', text, re.S):
        body = m.group(2)

        def subjects(kind, verb):
            found = re.search(kind + r":\s*\{\s*" + verb + r":\s*\[([^\]]*)\]", body)
            return sorted(re.findall(r'"([^"]+)"', found.group(1))) if found else []

        users[m.group(1)] = (subjects("publish", "allow"), subjects("publish", "deny"),
                             subjects("subscribe", "allow"), "allow_responses: true" in body)
    return users


def test_one_permission_table_for_every_generator(render, tmp_path):
    """The chart's authorization block and deploy/nats-auth.sh's (make run, the harness,
    Compose) give every user the same rights, from the one table."""
    r = render()
    chart = parse_authorization(r.get("ConfigMap", f"{FULL}-nats-config")["data"]["auth.conf"])
    subprocess.run(["sh", str(NATS_AUTH_SH), "passwords", str(tmp_path)], check=True, timeout=60)
    out = subprocess.run(["sh", str(NATS_AUTH_SH), "config", str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    script = parse_authorization(out)
    assert sorted(chart) == sorted(script) == sorted(NATS_USERS)
    assert chart == script
    # What the issue asks for, spelled out: front ends may not publish what the limiter or
    # mailctl publish, nor answer requests; each user reads its own inbox only.
    for fe in ("smtpd", "pop3d", "imapd"):
        pub, deny, sub, responses = chart[fe]
        assert not {"postern.config.changed", "postern.block.changed", "postern.account.changed",
                    "postern.alert"} & set(pub)
        assert not any(p.startswith("_INBOX") or p in (">", "postern.>") for p in pub)
        assert not responses
    for user, (pub, deny, sub, responses) in chart.items():
        assert [s for s in sub if s.startswith("_INBOX")] == [f"_INBOX.{user}.>"], user
        assert ">" not in pub and ">" not in sub, user
    assert [u for u, v in chart.items() if "postern.config.changed" in v[0]] == ["mailctl", "webd"]
    # The limiter answers the front ends in their inboxes (not with allow_responses, which
    # slows the following of its stream down); nobody else writes into an inbox.
    assert [u for u, v in chart.items() if v[3]] == []
    for user, (pub, deny, sub, responses) in chart.items():
        inboxes = sorted(p for p in pub if p.startswith("_INBOX"))
        want = (["_INBOX.imapd.>", "_INBOX.pop3d.>", "_INBOX.smtpd.>", "_INBOX.webd.>"]
                if user == "limiter" else [])
        assert inboxes == want, user
    # webd: mailctl's rights (it runs the same commands) and the AuthEvents of web logins;
    # inboxes of their own.
    web, mailctl = chart["webd"], chart["mailctl"]
    assert sorted(web[0]) == sorted(mailctl[0] + ["postern.event.auth", "postern.limiter.auth",
                                                   "postern.limiter.blocks"])
    assert web[1] == mailctl[1] and web[3] == mailctl[3]
    assert sorted(x for x in web[2] if x != "_INBOX.webd.>") == sorted(
        [x for x in mailctl[2] if x != "_INBOX.mailctl.>"] + ["postern.block.changed",
                                                             "postern.config.changed"])
    # Passwords come from the Secret, one variable per user, never in the ConfigMap.
    auth = r.get("ConfigMap", f"{FULL}-nats-config")["data"]["auth.conf"]
    assert sorted(re.findall(r"password: \$POSTERN_NATS_PW_(\w+)", auth)) == sorted(u.upper() for u in NATS_USERS)


def test_bus_passwords_are_secret_and_per_user(render):
    r = render()
    auth = r.get("Secret", f"{FULL}-nats-auth")
    assert sorted(auth["data"]) == sorted(NATS_USERS)
    passwords = {base64.b64decode(v).decode() for v in auth["data"].values()}
    assert len(passwords) == len(NATS_USERS) and all(len(p) >= 32 for p in passwords)
    nats = container(r.get("StatefulSet", f"{FULL}-nats"))
    env = env_of(nats)
    for u in NATS_USERS:
        assert env[f"POSTERN_NATS_PW_{u.upper()}"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{FULL}-nats-auth", "key": u}
    # An existing Secret of the user's instead.
    r = render({"nats": {"auth": {"existingSecret": "bus-passwords"}}})
    assert not r.maybe("Secret", f"{FULL}-nats-auth")
    for w in r.all("Deployment"):
        vols = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert vols["nats-auth"]["secret"]["secretName"] == "bus-passwords"


def test_bundled_cluster(render):
    r = render()
    sts = r.get("StatefulSet", f"{FULL}-nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == f"{FULL}-nats-headless"
    headless = r.get("Service", f"{FULL}-nats-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["port"] for p in headless["spec"]["ports"]} == {4222, 6222}
    c = container(sts)
    assert c["args"] == ["-c", "/etc/nats/conf/nats.conf"]
    assert env_of(c)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/data", "/etc/nats/conf", "/etc/nats/tls"}
    conf = r.get("ConfigMap", f"{FULL}-nats-config")["data"]["nats.conf"]
    assert "server_name: $POD_NAME" in conf            # unique per node
    assert 'name: "postern"' in conf                    # the cluster
    routes = re.findall(r'"nats-route://([^"]+)"', conf)
    assert routes == [f"{FULL}-nats-{i}.{FULL}-nats-headless:6222" for i in range(3)]
    assert re.search(r"jetstream \{\s*store_dir: \"/data\"", conf)
    assert "verify: true" in conf                       # routes verified both ways
    assert 'include "auth.conf"' in conf
    # JetStream on an emptyDir instead.
    r = render({"nats": {"bundled": {"jetstream": {"persistence": False}}}})
    sts = r.get("StatefulSet", f"{FULL}-nats")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {v["name"]: v for v in pod_spec(sts)["volumes"]}["data"] == {"name": "data", "emptyDir": {}}
    # One node: no cluster block.
    r = render({"nats": {"bundled": {"replicas": 1}}})
    assert "cluster {" not in r.get("ConfigMap", f"{FULL}-nats-config")["data"]["nats.conf"]
    assert r.get("Secret", FULL)["stringData"]["NATS_URL"] == f"tls://{FULL}-nats-0.{FULL}-nats-headless:4222"


def test_bus_tls(render, tmp_path):
    r = render()
    tls = r.get("Secret", f"{FULL}-nats-tls")
    assert set(tls["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    for key in ("ca.crt", "tls.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(tls["data"][key]))
    # The certificate is the CA's, names every node, and serves for routes (client auth) too.
    v = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"),
                        str(tmp_path / "tls.crt")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "tls.crt")],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"DNS:*.{FULL}-nats-headless" in text and f"DNS:{FULL}-nats" in text
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    # Every host name the services and the routes dial is one OpenSSL (what the services
    # check names with) finds in the certificate: it takes no wildcard over one label, so
    # *.NAME-nats-headless alone left every service unable to reach the bus on a cluster.
    conf = r.get("ConfigMap", f"{FULL}-nats-config")["data"]["nats.conf"]
    urls = r.get("Secret", FULL)["stringData"]["NATS_URL"].split(",")
    hosts = {u.split("://", 1)[1].rsplit(":", 1)[0] for u in urls}
    hosts |= set(re.findall(r"nats-route://([^:\"]+):", conf))
    assert len(hosts) >= 3, hosts
    for host in sorted(hosts):
        c = subprocess.run(["openssl", "x509", "-noout", "-in", str(tmp_path / "tls.crt"),
                            "-checkhost", host], capture_output=True, text=True, timeout=60)
        assert "does match" in c.stdout, (host, c.stdout + c.stderr)
    conf = r.get("ConfigMap", f"{FULL}-nats-config")["data"]["nats.conf"]
    assert 'ca_file: "/etc/nats/tls/ca.crt"' in conf
    # The services verify the servers with the CA and nothing else of the Secret.
    smtpd = r.get("Deployment", f"{FULL}-smtpd")
    assert env_value(container(smtpd), "NATS_TLS_CA") == "/etc/postern/nats-ca/ca.crt"
    vols = {v["name"]: v for v in pod_spec(smtpd)["volumes"]}
    assert vols["nats-ca"]["secret"] == {"secretName": f"{FULL}-nats-tls",
                                         "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    # A Secret of the user's (cert-manager's, say).
    r = render({"nats": {"tls": {"existingSecret": "bus-tls"}}})
    assert not r.maybe("Secret", f"{FULL}-nats-tls")
    vols = {v["name"]: v for v in pod_spec(r.get("StatefulSet", f"{FULL}-nats"))["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "bus-tls"
    # Off: plain nats:// URLs, no CA anywhere.
    r = render({"nats": {"tls": {"enabled": False}}})
    assert not r.maybe("Secret", f"{FULL}-nats-tls")
    assert r.get("Secret", FULL)["stringData"]["NATS_URL"].startswith("nats://")
    assert "tls {" not in r.get("ConfigMap", f"{FULL}-nats-config")["data"]["nats.conf"]
    assert "NATS_TLS_CA" not in env_of(container(r.get("Deployment", f"{FULL}-smtpd")))


def test_external_bus_with_a_private_ca(render):
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    r = render(deep(EXTERNAL, **{"nats.external.url": "tls://a:4222,tls://b:4222",
                                 "nats.external.caCert": ca}))
    cm = r.get("ConfigMap", f"{FULL}-nats-config")["data"]
    assert cm["ca.crt"] == ca and "nats.conf" not in cm and "authorization {" in cm["auth.conf"]
    assert r.get("Secret", FULL)["stringData"]["NATS_URL"] == "tls://a:4222,tls://b:4222"
    smtpd = r.get("Deployment", f"{FULL}-smtpd")
    assert env_value(container(smtpd), "NATS_TLS_CA") == "/etc/postern/nats-ca/ca.crt"
    vols = {v["name"]: v for v in pod_spec(smtpd)["volumes"]}
    assert vols["nats-ca"]["configMap"]["name"] == f"{FULL}-nats-config"
    # Without a CA: the system's trust, no NATS_TLS_CA.
    r = render(EXTERNAL)
    assert "NATS_TLS_CA" not in env_of(container(r.get("Deployment", f"{FULL}-smtpd")))


# ---- webmail (Roundcube) -------------------------------------------------------------------
WEBMAIL = f"{FULL}-webmail"


def webmail_objects(r):
    return [d for d in r.docs if d["metadata"]["name"].startswith(WEBMAIL)]


def test_webmail_is_off_by_default(render):
    assert webmail_objects(render()) == []


def test_webmail(render):
    r = render(VALUE_SETS["webmail"])
    dep = r.get("Deployment", WEBMAIL)
    spec = pod_spec(dep)
    c = container(dep)
    assert c["image"] == "postern-webmail:latest" and c["args"] == ["serve"]
    # One pod: Roundcube's SQLite on a ReadWriteOnce volume.
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    vols = {v["name"]: v for v in spec["volumes"]}
    claim = r.get("PersistentVolumeClaim", WEBMAIL)
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == WEBMAIL
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # imapd over IMAPS, submission with STARTTLS, the chart's certificate checked for its name.
    env = {k: e.get("value") for k, e in env_of(c).items()}
    assert env["WEBMAIL_IMAP_HOST"] == f"ssl://{FULL}-imapd:993"
    assert env["WEBMAIL_SMTP_HOST"] == f"tls://{FULL}-smtpd:587"
    assert env["WEBMAIL_TLS_NAME"] == "localhost"
    assert env["WEBMAIL_TLS_CA"] == "/etc/postern/tls/tls.crt"
    assert env["WEBMAIL_TLS_CERT"] == "/etc/postern/tls/tls.crt"
    assert env["WEBMAIL_TLS_KEY"] == "/etc/postern/tls/tls.key"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls"]["mountPath"] == "/etc/postern/tls" and mounts["tls"]["readOnly"] is True
    assert vols["tls"]["secret"]["secretName"] == f"{FULL}-tls"
    assert vols["tls"]["secret"]["defaultMode"] == 0o440
    # The key: a Secret made by the chart, mounted as the file the image reads.
    key = r.get("Secret", f"{FULL}-webmail-key")
    assert len(base64.b64decode(key["data"]["desKey"])) >= 24
    assert vols["key"]["secret"] == {"secretName": f"{FULL}-webmail-key", "defaultMode": 0o440,
                                     "items": [{"key": "desKey", "path": "desKey"}]}
    assert env["ROUNDCUBE_DES_KEY_FILE"] == mounts["key"]["mountPath"] + "/desKey"
    assert "ROUNDCUBE_DES_KEY" not in env
    # HTTPS only, probed over HTTPS.
    assert c["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    assert env["WEBMAIL_PORT"] == "8443"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    svc = r.get("Service", WEBMAIL)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # Locked down like Postern's own pods: uid 10001, read-only root, no capabilities.
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert mounts["tmp"]["mountPath"] == "/tmp" and c["resources"]["requests"]


def test_webmail_settings(render):
    r = render({"hostname": "mail.example.org", "tls": {"existingSecret": "mail-example-org-tls"},
                "webmail": {"enabled": True, "tlsCA": "system",
                            "desKey": {"existingSecret": "webmail-key"},
                            "persistence": {"enabled": False},
                            "image": {"repository": "registry.example/roundcube", "tag": "1.6"},
                            "service": {"type": "LoadBalancer", "port": 8443,
                                        "loadBalancerSourceRanges": ["192.0.2.0/24"]}},
                "imapd": {"service": {"ports": {"imap": 143, "imaps": 1993}}}})
    dep = r.get("Deployment", WEBMAIL)
    c = container(dep)
    env = {k: e.get("value") for k, e in env_of(c).items()}
    assert c["image"] == "registry.example/roundcube:1.6"
    assert env["WEBMAIL_TLS_NAME"] == "mail.example.org"
    assert env["WEBMAIL_TLS_CA"] == "system"
    assert env["WEBMAIL_IMAP_HOST"] == f"ssl://{FULL}-imapd:1993"
    vols = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "mail-example-org-tls"
    assert vols["key"]["secret"]["secretName"] == "webmail-key"
    assert not r.maybe("Secret", f"{FULL}-webmail-key")
    assert vols["data"] == {"name": "data", "emptyDir": {}}
    assert not r.maybe("PersistentVolumeClaim", WEBMAIL)
    svc = r.get("Service", WEBMAIL)["spec"]
    assert svc["type"] == "LoadBalancer" and svc["ports"][0]["port"] == 8443
    assert svc["loadBalancerSourceRanges"] == ["192.0.2.0/24"]
    r = render({"webmail": {"enabled": True, "tlsName": "imap.example.org", "tlsCA": "/etc/ca.pem"}})
    env = {k: e.get("value") for k, e in env_of(container(r.get("Deployment", WEBMAIL))).items()}
    assert env["WEBMAIL_TLS_NAME"] == "imap.example.org" and env["WEBMAIL_TLS_CA"] == "/etc/ca.pem"


@pytest.mark.parametrize("off", ["imapd", "smtpd"])
def test_webmail_needs_imapd_and_smtpd(render, off):
    r = render({"webmail": {"enabled": True}, off: {"enabled": False}}, check=False)
    assert r.returncode != 0
    assert "webmail.enabled needs imapd.enabled and smtpd.enabled" in r.stderr


# ---- values.schema.json: unknown and mistyped values are refused ---------------------------
SCHEMA = CHART / "values.schema.json"


@pytest.mark.parametrize("setting, name", [
    ("smtpd.replica=5", "replica"),                          # a typo
    ("smtpdd.replicas=3", "smtpdd"),                         # a typo at the top
    ("nats.bundled.replica=3", "replica"),                   # a typo deeper down
    ("smtpd.replicas=five", "replicas"),                     # a word for a number
    ("smtpd.enabled=maybe", "enabled"),                      # a word for a boolean
    ("smtpd.service.type=Loadbalancer", "type"),             # not one of the Service types
    ("smtpd.service.ports.smtp=70000", "smtp"),              # not a port
    ("limiter.jsReplicas=0", "jsReplicas"),                  # out of range
    ("postgresql.bundled.storage=lots", "storage"),          # not a quantity
    ("podSecurityContext.runAsUser=root", "runAsUser"),      # a name for a uid
])
def test_schema_refuses(render, setting, name):
    r = render(extra=["--set", setting], check=False)
    assert r.returncode != 0, f"--set {setting} was accepted"
    assert "schema" in r.stderr and name in r.stderr, r.stderr


def test_schema_refuses_values_files_too(render):
    for values in ({"smtpd": {"replica": 5}}, {"smtpd": {"replicas": "3"}},
                   {"networkPolicy": {"enable": False}}, {"tests": {"domain": "bad domain"}}):
        r = render(values, check=False)
        assert r.returncode != 0 and "schema" in r.stderr, (values, r.stderr)


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def test_schema_is_strict_at_every_level():
    """Every object the schema describes refuses names it does not list, and every value has
    a type; every value of values.yaml and of the production values is described."""
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"   # every helm 3 knows it

    def walk(node, where):
        node = _resolve(schema, node)
        assert "type" in node or "enum" in node, f"{where}: no type"
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where}: open to unknown names"
            for key, sub in node["properties"].items():
                walk(sub, f"{where}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")

    walk(schema, "values")

    def described(values, node, where):
        node = _resolve(schema, node)
        if isinstance(values, dict) and "properties" in node:
            for key, v in values.items():
                assert key in node["properties"], f"{where}.{key} is not in values.schema.json"
                described(v, node["properties"][key], f"{where}.{key}")

    for f in (CHART / "values.yaml", PRODUCTION):
        described(yaml.safe_load(f.read_text()), schema, f.name)


# ---- Kubernetes versions: a plain `helm template` works with any helm ------------------------
def test_plain_helm_template_and_lint(helm):
    """What a new user types, with whatever helm they have: no --kube-version, no values."""
    r = subprocess.run([helm, "template", "helm/postern"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "kind: Deployment" in r.stdout
    r = subprocess.run([helm, "lint", "helm/postern"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "0 chart(s) failed" in r.stdout, r.stdout + r.stderr


# v1.20.0 is what a helm built by a plain `go install` assumes without a cluster.
@pytest.mark.parametrize("version", ["1.20.0", "1.23.0", "1.30.0"])
def test_kube_versions(render, version):
    r = render(VALUE_SETS["autoscaling"], extra=["--kube-version", version])
    assert r.all("HorizontalPodAutoscaler") and r.all("PodDisruptionBudget")


def test_too_old_kubernetes_is_refused(render):
    r = render(extra=["--kube-version", "1.19.0"], check=False)
    assert r.returncode != 0 and "kubeVersion" in r.stderr, r.stderr


def test_stable_apis_only(render):
    r = render(deep(VALUE_SETS["autoscaling"], **{"webmail.enabled": True}))
    versions = {d["kind"]: d["apiVersion"] for d in r.docs}
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2"
    assert versions["PodDisruptionBudget"] == "policy/v1"
    assert versions["NetworkPolicy"] == "networking.k8s.io/v1"
    assert versions["Deployment"] == versions["StatefulSet"] == "apps/v1"
    assert all("beta" not in v and "alpha" not in v for v in versions.values()), versions


def test_project_helm_knows_its_kubernetes_version(helm):
    """build/tools/helm is linked like a release build (not assuming v1.20.0)."""
    if Path(helm) != TOOLS / "helm":
        pytest.skip(f"helm is {helm}, not one built here")
    version = default_kube_version(helm)
    assert version and version != "v1.20.0", version


# ---- NetworkPolicies -----------------------------------------------------------------------
def selects(selector, labels):
    """Whether a LabelSelector selects a pod with these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, op = labels.get(e["key"]), e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e["values"]) \
                or (op == "Exists" and e["key"] not in labels) \
                or (op == "DoesNotExist" and e["key"] in labels):
            return False
    return True


def lets_in(policy, labels, port):
    """Whether a NetworkPolicy lets a pod of this namespace with these labels in on port."""
    for rule in policy["spec"]["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, peer   # this namespace's pods only
                if selects(peer["podSelector"], labels):
                    return True
    return False


def containers_env(spec):
    names = set()
    for c in spec.get("initContainers", []) + spec["containers"]:
        names |= set(env_of(c))
    return names


def test_network_policies(render):
    r = render({"webmail": {"enabled": True}})
    pg = r.get("NetworkPolicy", f"{FULL}-postgresql")
    nats = r.get("NetworkPolicy", f"{FULL}-nats")
    for policy, server in ((pg, "postgresql"), (nats, "nats")):
        # Each guards its own server's pods, and only what comes in.
        sts = r.get("StatefulSet", f"{FULL}-{server}")
        assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    # By name: the front ends, the limiter, the notifier and relayd, and the others that
    # have to: webd, the mailctl pod, the helm test pod, and for PostgreSQL the migrate Job.
    clients = {"smtpd", "pop3d", "imapd", "webd", "limiter", "notifier", "relayd", "mailctl", "test"}
    [pg_rule] = pg["spec"]["ingress"]
    assert set(pg_rule["from"][0]["podSelector"]["matchExpressions"][0]["values"]) == clients | {"migrate"}
    assert pg_rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    # By what each pod is given: a pod with the database's URL reaches PostgreSQL, one with
    # the bus's URL reaches NATS, and no other pod (the webmail's, the servers' own) does.
    pods = r.pods()
    assert {labels["app.kubernetes.io/component"] for _, labels, _ in pods} >= clients | {"migrate", "webmail"}
    for where, labels, spec in pods:
        env = containers_env(spec)
        assert lets_in(pg, labels, 5432) == ("DATABASE_URL" in env), where
        assert lets_in(nats, labels, 4222) == ("NATS_URL" in env), where
        # The routes: the NATS nodes one to another, nobody else; the monitoring port: nobody.
        assert lets_in(nats, labels, 6222) == (labels["app.kubernetes.io/component"] == "nats"), where
        assert not lets_in(nats, labels, 8222), where
        # Another release's pods are strangers.
        stranger = dict(labels, **{"app.kubernetes.io/instance": "other"})
        assert not lets_in(pg, stranger, 5432) and not lets_in(nats, stranger, 4222), where


def test_network_policy_settings(render):
    backup = {"from": [{"podSelector": {"matchLabels": {"app": "pg-backup"}}}],
              "ports": [{"port": 5432, "protocol": "TCP"}]}
    r = render({"networkPolicy": {"postgresql": {"extraIngress": [backup]}}})
    assert r.get("NetworkPolicy", f"{FULL}-postgresql")["spec"]["ingress"][-1] == backup
    assert len(r.get("NetworkPolicy", f"{FULL}-nats")["spec"]["ingress"]) == 2
    assert r.all("NetworkPolicy") and not render(VALUE_SETS["no-network-policy"]).all("NetworkPolicy")
    # External servers are the user's to guard: nothing of the chart's to select.
    assert render(EXTERNAL).all("NetworkPolicy") == []
    r = render({"nats": {"external": {"url": "nats://bus.example:4222"}}})
    assert r.names("NetworkPolicy") == [f"{FULL}-postgresql"]


# ---- helm test ------------------------------------------------------------------------------
MAIL_TEST = CHART / "files" / "mail-test.sh"


def test_helm_test_pod(render):
    r = render()
    pod = r.get("Pod", f"{FULL}-mail-test")
    ann = pod["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "test"
    # Kept after the run, for `helm test --logs` (the NOTES suggest it) to read its log.
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    c = container({"spec": {"template": {"spec": spec}}})
    assert c["image"] == "postern:latest"
    assert c["command"] == ["bash", "/etc/postern/test/mail-test.sh"]
    # The script is files/mail-test.sh, from a ConfigMap of the release.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert mounts["script"] == "/etc/postern/test"
    assert vols["script"]["configMap"]["name"] == f"{FULL}-mail-test"
    assert r.get("ConfigMap", f"{FULL}-mail-test")["data"]["mail-test.sh"] == MAIL_TEST.read_text()
    # It talks to the release's Services on the ports they publish, as a client would.
    env = {k: e.get("value") for k, e in env_of(c).items()}
    for host, port, svc, name in (("SMTP_HOST", "SMTP_PORT", "smtpd", "smtp"),
                                  ("SMTP_HOST", "SUBMISSION_PORT", "smtpd", "submission"),
                                  ("POP3_HOST", "POP3_PORT", "pop3d", "pop3"),
                                  ("IMAP_HOST", "IMAP_PORT", "imapd", "imap")):
        assert env[host] == f"{FULL}-{svc}"
        ports = {p["name"]: p["port"] for p in r.get("Service", env[host])["spec"]["ports"]}
        assert ports[name] == int(env[port]), (host, port)
    # Its mailbox: a reserved test domain made with mailctl, as mailctl's bus user, with the
    # database's URL; the servers checked against the chart's certificate (not its key).
    assert env["TEST_DOMAIN"].endswith(".invalid")
    assert env["NATS_USER"] == "mailctl" and "DATABASE_URL" in env and "NATS_URL" in env
    assert vols["nats-auth"]["secret"]["items"] == [{"key": "mailctl", "path": "password"}]
    assert env["TLS_CA"] == mounts["tls"] + "/tls.crt"
    assert vols["tls"]["secret"] == {"secretName": f"{FULL}-tls",
                                     "items": [{"key": "tls.crt", "path": "tls.crt"}]}
    assert mounts["tmp"] == "/tmp"
    # Every variable the script's header names is given, and the script reads each.
    script = MAIL_TEST.read_text()
    header = script.split("# Environment:\n", 1)[1].split("\nset ", 1)[0]
    names = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", header))
    assert names >= {"SMTP_HOST", "TEST_DOMAIN", "TLS_CA"}, names
    for name in names:
        assert name in env, f"mail-test.sh reads {name}, which the pod does not set"
        assert re.search(r"\$\{?" + name + r"\b", script), f"mail-test.sh names {name} but does not read it"
    subprocess.run(["bash", "-n", str(MAIL_TEST)], check=True, timeout=60)


def test_helm_test_follows_the_values(render):
    r = render({"smtpd": {"service": {"ports": {"smtp": 2525, "submission": 2587, "smtps": 2465}}},
                "tests": {"domain": "helm-test.example.invalid"}})
    env = {k: e.get("value") for k, e in env_of(r.get("Pod", f"{FULL}-mail-test")["spec"]["containers"][0]).items()}
    assert (env["SMTP_PORT"], env["SUBMISSION_PORT"]) == ("2525", "2587")
    assert env["TEST_DOMAIN"] == "helm-test.example.invalid"
    # Without imapd, POP3 only; without a way to read or to send, or turned off, no test.
    r = render({"imapd": {"enabled": False}})
    env = env_of(r.get("Pod", f"{FULL}-mail-test")["spec"]["containers"][0])
    assert "POP3_HOST" in env and "IMAP_HOST" not in env
    for values in ({"imapd": {"enabled": False}, "pop3d": {"enabled": False}},
                   {"smtpd": {"enabled": False}}, {"tests": {"enabled": False}}):
        r = render(values)
        assert not r.maybe("Pod", f"{FULL}-mail-test") and not r.maybe("ConfigMap", f"{FULL}-mail-test")
    # External servers: the same test, with their URLs.
    r = render(EXTERNAL)
    env = env_of(r.get("Pod", f"{FULL}-mail-test")["spec"]["containers"][0])
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": FULL, "key": "DATABASE_URL"}


# ---- production-like values ------------------------------------------------------------------
def test_production_values(render):
    r = render(PRODUCTION)
    for name, replicas in (("smtpd", 3), ("pop3d", 2), ("imapd", 2)):
        frontend_checks(r, name, replicas=replicas)
    assert r.get("Deployment", f"{FULL}-limiter")["spec"]["replicas"] == 2
    assert r.get("Deployment", f"{FULL}-webd")["spec"]["replicas"] == 2
    assert r.all("HorizontalPodAutoscaler") == []
    assert r.names("PodDisruptionBudget") == sorted(f"{FULL}-{n}" for n in ("smtpd", "pop3d", "imapd", "webd"))
    # PostgreSQL and NATS as the chart provides them: one PostgreSQL, three NATS nodes with
    # JetStream on volumes, TLS, fenced by the NetworkPolicies.
    assert r.names("StatefulSet") == [f"{FULL}-nats", f"{FULL}-postgresql"]
    nats = r.get("StatefulSet", f"{FULL}-nats")
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["volumeClaimTemplates"]
    assert r.get("Secret", FULL)["stringData"]["NATS_URL"] == ",".join(
        f"tls://{FULL}-nats-{i}.{FULL}-nats-headless:4222" for i in range(3))
    assert env_value(container(r.get("Deployment", f"{FULL}-limiter")), "NATS_JS_REPLICAS") == "3"
    assert r.names("NetworkPolicy") == [f"{FULL}-nats", f"{FULL}-postgresql"]
    assert r.maybe("Pod", f"{FULL}-mail-test")


def pod_checksums(r):
    return {f"{w['kind']}/{w['metadata']['name']}": {
        k: v for k, v in (w["spec"]["template"]["metadata"].get("annotations") or {}).items()
        if k.startswith("checksum/")} for w in r.workloads()}


@pytest.mark.parametrize("values", [{}, {"nats": {"tls": {"enabled": True},
                                              "bundled": {"replicas": 3}}}])
def test_same_values_same_pods(render, values):
    """Two renderings with the same values (each makes new random passwords, keys and
    certificates, as an install does before lookup can find the stored ones) give every pod
    the same checksums: a `helm upgrade` with unchanged values restarts nothing. (On a cluster
    the first upgrade after an install restarted every pod, NATS's too.)"""
    first, second = pod_checksums(render(values)), pod_checksums(render(values))
    assert any(first.values())
    assert first == second
    # A value that shapes a Secret still rolls the pods that use it.
    changed = pod_checksums(render(deep(values, hostname="mail.example.net")))
    assert changed[f"Deployment/{FULL}-smtpd"]["checksum/tls"] != \
        first[f"Deployment/{FULL}-smtpd"]["checksum/tls"]


def test_generated_bus_passwords_start_with_a_letter(render):
    """nats-server reads the value of a $POSTERN_NATS_PW_* variable starting with a digit as
    a number and refuses to start (on a cluster, an install crash-looped on "1P50r5SL..."):
    every password made at install starts with a letter. Five installs, 40 passwords: about
    one in a thousand would all start with a letter by chance if any character could."""
    import base64
    for _ in range(5):
        secret = render().get("Secret", f"{FULL}-nats-auth")
        for user, value in secret["data"].items():
            pw = base64.b64decode(value).decode()
            assert len(pw) == 32 and pw[0].isalpha() and pw.isalnum(), (user, pw)
