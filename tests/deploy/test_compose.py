"""docker-compose.yml read as YAML (no Docker needed): the load balancer (HAProxy) alone
publishes the mail ports, reaches the ports the image's services listen on, sends them the
PROXY protocol v2 and finds their replicas through Docker's DNS, taking out those whose
/readyz fails; every long-running service has a health check and starts only after the
schema and the bus, images come from variables with the offline images as defaults, mailctl
runs on demand, and no container has privileges or a writable root; the bus is three
clustered nats-server nodes with JetStream and TLS, each service logs in as its own user
with only its own password mounted, the limiter runs twice.
tests/deploy/e2e_docker.sh and e2e_docker_scale.sh run the same file for real.
Run: /usr/bin/python3 -m pytest -q tests/deploy/test_compose.py
"""

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
HAPROXY_DIR = ROOT / "deploy" / "docker" / "haproxy"
HAPROXY_CFG = (HAPROXY_DIR / "haproxy.cfg").read_text()
POSTERN = ["migrate", "smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd", "mailctl"]
LONG_RUNNING = ["smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd", "webd"]
NATS_NODES = ["nats", "nats-1", "nats-2"]
NATS_USERS = ["smtpd", "pop3d", "imapd", "limiter", "notifier", "relayd", "mailctl", "webd"]
# The front ends: the variable that names their greeting (from SMTP_HOSTNAME).
HOSTNAME_ENV = {"smtpd": "SMTP_HOSTNAME", "pop3d": "POP3_HOSTNAME", "imapd": "IMAP_HOSTNAME"}
# Each mail port: its front end, the image's variable for it, the host-port variable and the
# standard port the balancer publishes it on.
MAIL_PORTS = [
    ("smtpd", "SMTP_PORT", "SMTP_HOST_PORT", 25),
    ("smtpd", "SUBMISSION_PORT", "SUBMISSION_HOST_PORT", 587),
    ("smtpd", "SMTPS_PORT", "SMTPS_HOST_PORT", 465),
    ("pop3d", "POP3_PORT", "POP3_HOST_PORT", 110),
    ("pop3d", "POP3S_PORT", "POP3S_HOST_PORT", 995),
    ("imapd", "IMAP_PORT", "IMAP_HOST_PORT", 143),
    ("imapd", "IMAPS_PORT", "IMAPS_HOST_PORT", 993),
]


def image_env():
    """The ENV of the Dockerfile's last stage: NAME=value pairs."""
    last = DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]
    env = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", last, re.M):
        for name, value in re.findall(r"([A-Z0-9_]+)=(\S+)", block):
            env[name] = value
    return env


def published(svc):
    """{container port: (host-port expression)} of a service."""
    out = {}
    for p in SERVICES[svc].get("ports", []):
        host, _, inside = p.rpartition(":")
        out[int(inside)] = host
    return out


def haproxy_sections():
    """{"frontend smtp": [lines], "backend smtpd-smtp": [...], ...} of haproxy.cfg."""
    sections, current = {}, None
    for line in HAPROXY_CFG.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    return sections


@pytest.mark.parametrize("svc,var,host_var,standard", MAIL_PORTS)
def test_the_balancer_publishes_each_mail_port_and_passes_it_on(svc, var, host_var, standard):
    """Host port -> the balancer's listener -> the same port of every replica of svc."""
    inside = int(image_env()[var])
    assert inside > 1024, var          # no capability needed inside
    pub = published("lb")
    assert "${%s:-%d}" % (host_var, standard) in pub[inside], (var, pub)
    assert pub[inside].startswith("${POSTERN_HOST_IP:-0.0.0.0}:")
    sections = haproxy_sections()
    frontends = [name for name, lines in sections.items()
                 if name.startswith("frontend ") and f"bind :{inside}" in lines]
    assert len(frontends) == 1, (inside, frontends)
    backend = [line.split()[1] for line in sections[frontends[0]]
               if line.startswith("default_backend ")]
    assert len(backend) == 1
    servers = [line for line in sections[f"backend {backend[0]}"]
               if line.startswith("server")]
    assert servers == [f'server-template {svc} "${{FRONTEND_SLOTS}}" {svc}:{inside}'], servers


def test_only_the_balancer_and_webd_publish_ports():
    for name, s in SERVICES.items():
        if name not in ("lb", "webd", "webmail"):
            assert "ports" not in s, name
    assert len(published("lb")) == len(MAIL_PORTS)


def test_the_balancer_sends_proxy_v2_and_checks_readyz():
    """Every replica gets the PROXY v2 header; it is in rotation while /readyz on its health
    port says it is ready (a stopped or draining replica is not), found through Docker's DNS."""
    sections = haproxy_sections()
    defaults = sections["defaults"]
    assert "mode tcp" in defaults
    assert "option httpchk" in defaults
    assert "http-check send meth GET uri /readyz ver HTTP/1.0" in defaults
    # In rotation when ready, or when only the database or the bus is away (the front end
    # then answers with temporary errors itself); out when stopping (draining) or else.
    expect = [line for line in defaults if line.startswith("http-check expect ")]
    assert expect == ['http-check expect rstring "^(ready|not ready: (database|bus))"']
    service = (ROOT / "lib" / "svc" / "service.c").read_text()
    for why in ("stopping", "configuration", "database", "bus"):
        assert f'? "{why}"' in service, why   # the reasons /readyz gives
    assert "option redispatch 1" in defaults
    servers = " ".join(line for line in defaults if line.startswith("default-server "))
    for want in ("check", f"port {image_env()['HEALTH_PORT']}", "send-proxy-v2",
                 "resolvers docker", "init-addr none"):
        assert re.search(r"(^| )%s( |$)" % re.escape(want), servers), want
    # No PROXY header on the checks: they go to the health port, which speaks plain HTTP.
    assert "check-send-proxy" not in HAPROXY_CFG
    assert "parse-resolv-conf" in sections["resolvers docker"]
    # Every backend is a template of replicas: scaling needs no change of the file.
    for name, lines in sections.items():
        if name.startswith("backend "):
            assert all(line.startswith("server-template ") for line in lines), name
    assert "monitor-uri /healthz" in sections["frontend status"]
    assert "bind :8404" in sections["frontend status"]


def test_the_balancer_is_an_offline_image_locked_down():
    lb = SERVICES["lb"]
    assert lb["image"] == "${HAPROXY_IMAGE:-postern-haproxy:2.6}"
    assert lb["build"] == {"context": "deploy/docker/haproxy",
                           "args": {"BASE_IMAGE": "${POSTERN_BASE_IMAGE:-postern-base:bookworm}"}}
    assert lb["read_only"] is True and lb["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in lb["security_opt"]
    assert lb["restart"] == "unless-stopped"
    assert "http://127.0.0.1:8404/healthz" in lb["healthcheck"]["test"]
    # Started after the front ends, stopped before them.
    for svc in HOSTNAME_ENV:
        assert lb["depends_on"][svc]["condition"] == "service_started", svc
    dockerfile = (HAPROXY_DIR / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=postern-base:bookworm" in dockerfile
    assert "install -y --no-install-recommends haproxy" in dockerfile
    assert "USER haproxy" in dockerfile
    assert "haproxy -c" in dockerfile        # the configuration is checked as it is built
    assert "STOPSIGNAL SIGUSR1" in dockerfile  # a soft stop: open sessions end on their own
    build = (ROOT / "deploy" / "docker" / "build-base.sh").read_text()
    assert 'build_from_base "$HAPROXY_IMAGE" "$HERE/haproxy"' in build
    assert "HAPROXY_IMAGE=postern-haproxy:2.6" in build


def test_make_images_leaves_no_untagged_build_stage():
    """Docker's classic builder leaves a multi-stage build's other stages untagged: the build
    stage is tagged, and what the builds left untagged is pruned by the stages' label."""
    make = (ROOT / "Makefile").read_text()
    images = make[make.index("\nimages:"):].split("\n\n")[0]
    assert "--target build -t postern-build:latest" in images
    assert "docker image prune -f --filter label=org.postern.image" in images
    for stage in ("build", "certs", "postern"):
        assert f"LABEL org.postern.image={stage}" in DOCKERFILE, stage


def test_health_port_is_set_and_checked():
    assert image_env()["HEALTH_PORT"] == "8080"
    for svc in LONG_RUNNING:
        s = SERVICES[svc]
        assert s["environment"]["HEALTH_PORT"] == "8080", svc
        assert s["healthcheck"]["test"] == ["CMD", "postern", "health", "readyz"], svc
        deps = s["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", svc
        for node in NATS_NODES:
            assert deps[node]["condition"] == "service_healthy", svc
        assert s["restart"] == "unless-stopped"
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    for node in NATS_NODES:
        assert "/healthz?js-enabled-only=true" in " ".join(SERVICES[node]["healthcheck"]["test"])


def test_one_shot_jobs_and_order():
    mig = SERVICES["migrate"]
    assert mig["command"] == ["migrate"] and mig["restart"] == "no"
    assert mig["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mig["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    certs = SERVICES["certs"]
    assert certs["build"]["target"] == "certs" and certs["restart"] == "no"
    # The same certificate volume, read-only where it is used.
    assert certs["volumes"] == ["${POSTERN_TLS:-tls}:/etc/postern/tls"]
    for svc in HOSTNAME_ENV:
        assert SERVICES[svc]["volumes"] == ["${POSTERN_TLS:-tls}:/etc/postern/tls:ro",
                                            f"nats-user-{svc}:/etc/postern/nats:ro"]
    assert SERVICES["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert set(COMPOSE["volumes"]) == ({"pgdata", "tls", "nats-ca", "nats-conf"}
                                       | {f"nats-data-{i}" for i in range(3)}
                                       | {f"nats-user-{u}" for u in NATS_USERS}
                                       | {"webmail-data"})


@pytest.mark.parametrize("svc", sorted(HOSTNAME_ENV))
def test_front_ends_greet_and_trust_proxies_alike(svc):
    s = SERVICES[svc]
    assert s["command"] == [svc]
    env = s["environment"]
    # One greeting name for every front end, the certificate's (certs' CERT_NAMES).
    assert env[HOSTNAME_ENV[svc]] == "${SMTP_HOSTNAME:-localhost}"
    assert SERVICES["certs"]["environment"]["CERT_NAMES"] == "${SMTP_HOSTNAME:-localhost}"
    # The balancer's address is Docker's to pick: the private ranges it picks from.
    trusted = env["PROXY_TRUSTED_NETWORKS"]
    assert trusted == "${PROXY_TRUSTED_NETWORKS:-10.0.0.0/8,172.16.0.0/12,192.168.0.0/16}"
    nets = [ipaddress.ip_network(n) for n in trusted[len("${PROXY_TRUSTED_NETWORKS:-"):-1].split(",")]
    assert all(n.is_private for n in nets)
    assert "ports" not in s   # reached through the balancer only
    assert env["DATABASE_URL"] == SERVICES["smtpd"]["environment"]["DATABASE_URL"]
    assert s["stop_grace_period"] == SERVICES["smtpd"]["stop_grace_period"]


def test_every_published_host_port_differs():
    """No two listeners claim the same host port by default."""
    defaults = [re.search(r":-(\d+)\}$", host).group(1)
                for svc in ("lb", "webd", "webmail") for host in published(svc).values()]
    assert len(defaults) == len(set(defaults)) == 9, defaults


def test_the_image_runs_every_front_end():
    """The image copies every program of build/bin, and its entrypoint starts each service."""
    assert "COPY --from=build /src/build/bin/ /usr/lib/postern/" in DOCKERFILE
    assert "for d in services/* tools/*" in DOCKERFILE   # every program is built
    entry = (ROOT / "deploy" / "docker" / "postern.sh").read_text()
    case = re.search(r"^\s*(smtpd \|.*)\)$", entry, re.M).group(1)
    names = {w.strip() for w in case.split("|")}
    for svc in LONG_RUNNING:
        assert svc in names, svc


def test_webd_serves_https_on_443_with_the_mail_certificate():
    s = SERVICES["webd"]
    assert s["command"] == ["webd"]
    assert s["ports"] == ["${POSTERN_HOST_IP:-0.0.0.0}:${WEB_HOST_PORT:-443}:2443"]
    assert "${POSTERN_TLS:-tls}:/etc/postern/tls:ro" in s["volumes"]


def test_mailctl_runs_on_demand():
    m = SERVICES["mailctl"]
    assert m["profiles"] == ["tools"]
    assert m["entrypoint"] == ["postern", "mailctl"]
    assert m["environment"]["DATABASE_URL"] == SERVICES["smtpd"]["environment"]["DATABASE_URL"]


def test_images_from_variables_with_offline_defaults():
    assert SERVICES["postgres"]["image"] == "${POSTGRES_IMAGE:-postern-postgres:15}"
    for node in NATS_NODES:
        assert SERVICES[node]["image"] == "${NATS_IMAGE:-postern-nats:2.9}"
    for svc in POSTERN:
        s = SERVICES[svc]
        assert s["image"] == "${POSTERN_IMAGE:-postern:latest}", svc
        assert s["build"]["args"]["BASE_IMAGE"] == "${POSTERN_BASE_IMAGE:-postern-base:bookworm}"
        assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert "ARG BASE_IMAGE=postern-base:bookworm" in DOCKERFILE


def test_postern_containers_are_locked_down():
    for svc in POSTERN + ["certs", "nats-secrets", "lb"]:
        s = SERVICES[svc]
        assert s["read_only"] is True, svc
        assert s["cap_drop"] == ["ALL"], svc
        assert "no-new-privileges:true" in s["security_opt"], svc
    assert "USER 10001:10001" in DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]


def test_database_password_is_one_variable():
    pw = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pw == "${POSTGRES_PASSWORD:-postern}"
    assert pw in SERVICES["smtpd"]["environment"]["DATABASE_URL"]


# ---- the bus -----------------------------------------------------------------------------------
def test_bus_is_a_cluster_of_three_with_jetstream():
    conf = (ROOT / "deploy" / "docker" / "make-nats-secrets.sh").read_text()
    assert 'NODES=${NATS_NODES:-nats nats-1 nats-2}' in conf
    for script in ("server_name:", "cluster {", "nats-route://$n:6222", "jetstream {",
                   "verify: true", 'include "auth.conf"'):
        assert script in conf, script
    data = set()
    for i, node in enumerate(NATS_NODES):
        s = SERVICES[node]
        assert s["command"] == ["-c", f"/etc/nats/conf/{node}.conf"], node
        assert "nats-conf:/etc/nats/conf:ro" in s["volumes"], node
        vol = [v for v in s["volumes"] if v.endswith(":/data")]
        assert len(vol) == 1, node
        data.add(vol[0])
        assert s["depends_on"]["nats-secrets"]["condition"] == "service_completed_successfully"
        assert s["restart"] == "unless-stopped"
    assert len(data) == 3   # a volume of its own per node


def test_services_know_every_node_and_verify_them():
    url = SERVICES["smtpd"]["environment"]["NATS_URL"]
    assert url == ",".join(f"tls://{n}:4222" for n in NATS_NODES)
    for svc in LONG_RUNNING + ["mailctl"]:
        env = SERVICES[svc]["environment"]
        assert env["NATS_URL"] == url, svc
        assert env["NATS_TLS_CA"] == "/etc/postern/nats/ca.pem", svc


def test_each_service_logs_in_as_itself_with_only_its_own_password():
    secrets = SERVICES["nats-secrets"]
    assert secrets["build"]["target"] == "certs" and secrets["restart"] == "no"
    assert secrets["entrypoint"] == ["postern-make-nats-secrets"]
    for user in NATS_USERS:
        s = SERVICES[user]
        env = s["environment"]
        assert env["NATS_USER"] == user
        assert env["NATS_PASSWORD_FILE"] == "/etc/postern/nats/password"
        assert "NATS_PASSWORD" not in env
        mine = [v for v in s["volumes"] if ":/etc/postern/nats" in v]
        assert mine == [f"nats-user-{user}:/etc/postern/nats:ro"], user
        assert f"nats-user-{user}:/etc/postern/nats-secrets/users/{user}" in secrets["volumes"]
    # Nothing else mounts the CA's key or the nodes' configuration.
    for name, s in SERVICES.items():
        vols = " ".join(s.get("volumes", []))
        if name != "nats-secrets":
            assert "nats-ca:" not in vols, name
        if name not in ["nats-secrets"] + NATS_NODES:
            assert "nats-conf:" not in vols, name
    # Compose's own e2e override adds the suite's user, nothing in the file itself does.
    assert secrets["environment"]["NATS_TEST_USER"] == "${NATS_TEST_USER:-}"


def test_the_limiter_runs_twice_with_three_copies():
    lim = SERVICES["limiter"]
    assert lim["scale"] == "${LIMITER_REPLICAS:-2}"
    assert lim["environment"]["NATS_JS_REPLICAS"] == "3"


# ---- webmail (Roundcube, profile `webmail`) ------------------------------------------------
WEBMAIL_DIR = ROOT / "deploy" / "docker" / "webmail"


def test_webmail_runs_only_with_its_profile_on_8443():
    w = SERVICES["webmail"]
    assert w["profiles"] == ["webmail"]
    assert w["ports"] == ["${POSTERN_HOST_IP:-0.0.0.0}:${WEBMAIL_HOST_PORT:-8443}:8443"]
    assert w["image"] == "${WEBMAIL_IMAGE:-postern-webmail:latest}"
    assert w["build"] == {"context": "deploy/docker/webmail",
                          "args": {"BASE_IMAGE": "${POSTERN_BASE_IMAGE:-postern-base:bookworm}"}}
    # 443 is webd's: the webmail never claims it.
    assert not any(":443" in p or p.endswith(":443") for p in w["ports"])
    assert w["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    for svc in ("imapd", "smtpd", "lb"):
        assert w["depends_on"][svc]["condition"] == "service_healthy"
    assert w["healthcheck"]["test"] == ["CMD", "postern-webmail", "health"]


def test_webmail_is_locked_down_and_keeps_no_secret_in_the_image():
    w = SERVICES["webmail"]
    assert w["read_only"] is True and w["tmpfs"] == ["/tmp"]
    assert w["cap_drop"] == ["ALL"] and "no-new-privileges:true" in w["security_opt"]
    assert w["volumes"] == ["${POSTERN_TLS:-tls}:/etc/postern/tls:ro",
                            "webmail-data:/var/lib/postern-webmail"]
    dockerfile = (WEBMAIL_DIR / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile and "EXPOSE 8443" in dockerfile
    assert "ARG BASE_IMAGE=postern-base:bookworm" in dockerfile
    config = (WEBMAIL_DIR / "config.inc.php").read_text()
    assert not re.search(r"des_key'\]\s*=\s*'", config)   # the key is never a literal
    assert "getenv" in config and "ROUNDCUBE_DES_KEY" in config


def test_webmail_reaches_imapd_and_submission_over_tls_checking_the_certificate():
    env = SERVICES["webmail"]["environment"]
    image = image_env()
    # Through the balancer: the front ends take only PROXY connections from its network.
    assert env["WEBMAIL_IMAP_HOST"] == f"ssl://lb:{image['IMAPS_PORT']}"        # implicit TLS
    assert env["WEBMAIL_SMTP_HOST"] == f"tls://lb:{image['SUBMISSION_PORT']}"   # STARTTLS
    # The certificate's name (certs makes it for SMTP_HOSTNAME) and the CA to check it with.
    assert env["WEBMAIL_TLS_NAME"] == "${SMTP_HOSTNAME:-localhost}"
    assert env["WEBMAIL_TLS_CA"] == "${WEBMAIL_TLS_CA:-/etc/postern/tls/cert.pem}"
    config = (WEBMAIL_DIR / "config.inc.php").read_text()
    for want in ("'verify_peer'       => true", "'verify_peer_name'  => true",
                 "'allow_self_signed' => false", "$config['imap_conn_options'] = ['ssl' => $tls]",
                 "$config['smtp_conn_options'] = ['ssl' => $tls]",
                 "$config['smtp_user'] = '%u'", "$config['smtp_pass'] = '%p'"):
        assert want in config, want


def test_webmail_serves_https_only_with_tls_1_2_or_newer():
    conf = (WEBMAIL_DIR / "apache.conf").read_text()
    assert re.findall(r"^Listen .*$", conf, re.M) == ["Listen ${WEBMAIL_PORT} https"]
    assert "SSLProtocol -all +TLSv1.2 +TLSv1.3" in conf
    assert re.search(r"<VirtualHost \*:\$\{WEBMAIL_PORT\}>\s*SSLEngine on", conf)
