"""webd's transport: HTTPS only, TLS 1.2 and 1.3 only (1.0 and 1.1 refused), no plain HTTP
on its port, the hardening headers on every response, session cookies that are Secure,
HttpOnly and SameSite=Strict, and a certificate reloaded on SIGHUP: new connections get the
new certificate while webd goes on serving (the ones open stay on the old one, and a
certificate that does not load leaves the old one in place).

The reload test runs a webd of its own with a certificate of its own, so that the harness's
certificate (which every client of the suite trusts) never changes."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest

from conftest import Service
from support import free_ports, wait_until

LOCAL = "127.0.0.1"
ADMIN, ADMIN_PW = "webtls", "Webtls-pass-1"

# The headers every response carries (services/webd/http.c).
HARDENING = {
    "Strict-Transport-Security": lambda v: "max-age=" in v
    and int(v.split("max-age=")[1].split(";")[0]) >= 15552000,
    "Content-Security-Policy": lambda v: "default-src 'none'" in v
    and "frame-ancestors 'none'" in v and "unsafe-inline" not in v,
    "X-Content-Type-Options": lambda v: v == "nosniff",
    "X-Frame-Options": lambda v: v == "DENY",
}


@pytest.fixture(autouse=True)
def needs_webd(postern):
    if not postern.has_webd:
        pytest.skip(f"webd is not built in {postern.bin}")


@pytest.fixture(scope="module")
def web_admin(postern):
    if not postern.has_webd:
        pytest.skip(f"webd is not built in {postern.bin}")
    postern.mailctl("admin", "add", ADMIN, "--role", "system", "--password-stdin",
                    input=ADMIN_PW + "\n")
    try:
        yield ADMIN, ADMIN_PW
    finally:
        postern.mailctl("admin", "del", ADMIN, check=False)


def version_context(version):
    """A client context that offers exactly one TLS version (every cipher the local OpenSSL
    has, at security level 0, so that 1.0 and 1.1 can be offered at all); no verification:
    only the version is in question."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def handshake(port, ctx, timeout=10):
    """The negotiated version, or the exception the handshake ended with."""
    with socket.create_connection((LOCAL, port), timeout=timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()
        except (ssl.SSLError, OSError) as e:
            return e


def python_offers(version, cert, key):
    """True when this Python's OpenSSL can make a handshake at version at all: tried against
    a local server of its own that takes only that version."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.set_ciphers("ALL:@SECLEVEL=0")
        server.minimum_version = version
        server.maximum_version = version
    server.load_cert_chain(str(cert), str(key))
    lsock = socket.create_server((LOCAL, 0))
    port = lsock.getsockname()[1]

    def serve():
        try:
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(10)
                try:
                    with server.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        got = handshake(port, version_context(version))
    finally:
        t.join(15)
        lsock.close()
    return isinstance(got, str)


def openssl_handshake(port, flag):
    """openssl s_client with one version flag (-tls1, -tls1_1, ...) at security level 0: the
    protocol it negotiated, or None when there was no handshake."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{LOCAL}:{port}", flag,
                        "-cipher", "ALL:@SECLEVEL=0", "-servername", "localhost"],
                       input="", capture_output=True, text=True, timeout=30)
    m = re.search(r"^New, (\S+), Cipher is (\S+)", r.stdout, re.M)
    return m.group(1) if m and m.group(2) != "(NONE)" else None


def openssl_offers(flag, cert, key):
    """True when the local openssl can make a handshake with flag against its own s_server."""
    [port] = free_ports(1)
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"{LOCAL}:{port}", "-cert",
                               str(cert), "-key", str(key), flag, "-cipher", "ALL:@SECLEVEL=0",
                               "-quiet"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # (a connection without a handshake does not stop it)
        wait_until(lambda: socket.create_connection((LOCAL, port), timeout=1).close() or True,
                   timeout=10, what="openssl s_server to listen")
        return openssl_handshake(port, flag) is not None
    except AssertionError:
        return False
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("version,flag", [(ssl.TLSVersion.TLSv1, "-tls1"),
                                          (ssl.TLSVersion.TLSv1_1, "-tls1_1")],
                         ids=["tls1.0", "tls1.1"])
def test_old_tls_versions_are_refused(postern, version, flag):
    if python_offers(version, postern.cert, postern.key):
        got = handshake(postern.web, version_context(version))
        assert not isinstance(got, str), f"webd accepted {got}"
    elif openssl_offers(flag, postern.cert, postern.key):
        assert openssl_handshake(postern.web, flag) is None, f"webd accepted {flag}"
    else:
        pytest.skip(f"neither Python's ssl nor openssl s_client here can offer {flag} at all "
                    "(even at security level 0), so webd's refusal cannot be shown")
    # The server stays fine for the versions it takes.
    assert handshake(postern.web, version_context(ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"


@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
                         ids=["tls1.2", "tls1.3"])
def test_tls_12_and_13_are_accepted(postern, version, name):
    assert handshake(postern.web, version_context(version)) == name
    # With the certificate verified, and an HTTP answer inside.
    ctx = ssl.create_default_context(cafile=str(postern.cert))
    ctx.minimum_version = ctx.maximum_version = version
    c = http.client.HTTPSConnection(LOCAL, postern.web, context=ctx, timeout=30)
    try:
        c.request("GET", "/api/v1/session")
        r = c.getresponse()
        r.read()
        assert r.status == 401
        assert c.sock.version() == name
    finally:
        c.close()


def test_plain_http_gets_no_http_answer(postern):
    for request in (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                    b"POST /api/v1/login HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"):
        with socket.create_connection((LOCAL, postern.web), timeout=10) as s:
            s.sendall(request)
            got, closed = b"", False
            try:
                while len(got) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        closed = True
                        break
                    got += chunk
            except ConnectionResetError:
                closed = True
            except socket.timeout:
                pass
        # Nothing but, at most, a TLS alert; and the connection is closed.
        assert b"HTTP/" not in got and b"<html" not in got.lower(), got[:200]
        assert closed, f"webd kept a plain-text connection open ({got[:50]!r})"
    # The plain attempt did no harm.
    assert handshake(postern.web, version_context(ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"


def request(postern, method, path, body=None, headers=None):
    ctx = ssl.create_default_context(cafile=str(postern.cert))
    c = http.client.HTTPSConnection(LOCAL, postern.web, context=ctx, timeout=30)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        r.read()
        return r
    finally:
        c.close()


def test_hardening_headers_on_every_response(postern, web_admin):
    user, pw = web_admin
    responses = {
        "console page": request(postern, "GET", "/"),
        "OpenAPI document": request(postern, "GET", "/openapi.json"),
        "missing page": request(postern, "GET", "/no-such-page"),
        "API without a session": request(postern, "GET", "/api/v1/domains"),
        "failed login": request(postern, "POST", "/api/v1/login",
                                {"user": user, "password": "wrong-wrong"}),
        "login": request(postern, "POST", "/api/v1/login", {"user": user, "password": pw}),
        "bad body": request(postern, "POST", "/api/v1/self/login", {"address": 1}),
        "method not allowed": request(postern, "DELETE", "/index.html"),
    }
    statuses = {name: r.status for name, r in responses.items()}
    assert statuses == {"console page": 200, "OpenAPI document": 200, "missing page": 404,
                        "API without a session": 401, "failed login": 401, "login": 200,
                        "bad body": 400, "method not allowed": 405}, statuses
    for name, r in responses.items():
        for header, good in HARDENING.items():
            value = r.getheader(header)
            assert value is not None, f"{name}: no {header}"
            assert good(value), f"{name}: {header}: {value}"
    # API answers are never cached.
    for name in ("API without a session", "failed login", "login"):
        assert responses[name].getheader("Cache-Control") == "no-store", name


def cookie_flags(header):
    name_value, *flags = [p.strip() for p in header.split(";")]
    return name_value.split("=", 1)[0], {f.split("=")[0].lower(): f for f in flags}


def test_session_cookies_are_secure_httponly_samesite_strict(postern, web_admin, new_user):
    user, pw = web_admin
    address = new_user("Webtls-user-pw-1")
    r = request(postern, "POST", "/api/v1/login", {"user": user, "password": pw})
    admin_cookie = r.getheader("Set-Cookie")
    r = request(postern, "POST", "/api/v1/self/login",
                {"address": address, "password": "Webtls-user-pw-1"})
    user_cookie = r.getheader("Set-Cookie")
    token = admin_cookie.split(";")[0]
    for header, name in ((admin_cookie, "postern_admin"), (user_cookie, "postern_user")):
        got, flags = cookie_flags(header)
        assert got == name, header
        assert "secure" in flags and "httponly" in flags, header
        assert flags.get("samesite", "").lower() == "samesite=strict", header
        assert flags.get("path") == "Path=/", header
        assert "domain" not in flags, header  # host-only
    # The cookie that clears the session at logout has the same flags.
    c = http.client.HTTPSConnection(LOCAL, postern.web, timeout=30,
                                    context=ssl.create_default_context(cafile=str(postern.cert)))
    try:
        c.request("GET", "/api/v1/session", headers={"Cookie": token})
        r = c.getresponse()
        csrf = json.loads(r.read())["csrf"]
        c.request("POST", "/api/v1/logout", headers={"Cookie": token, "X-CSRF-Token": csrf})
        r = c.getresponse()
        r.read()
        assert r.status == 200
        got, flags = cookie_flags(r.getheader("Set-Cookie"))
        assert got == "postern_admin" and flags.get("max-age") == "Max-Age=0", flags
        assert {"secure", "httponly", "samesite"} <= set(flags), flags
    finally:
        c.close()


# --- certificate reload ----------------------------------------------------------------------

def make_cert(directory, cn):
    """A self-signed certificate and key for localhost/127.0.0.1 with a CN of its own."""
    cert, key = directory / f"{cn}.pem", directory / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    return cert, key


def install(src_cert, src_key, cert, key):
    """Replaces the files webd reads, each at once (rename), as a deployment would."""
    for src, dst in ((src_cert, cert), (src_key, key)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def der_of(pem_path):
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def served_cert(port):
    """The certificate (DER) a new connection gets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOCAL, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


@pytest.fixture
def own_webd(postern):
    """A webd of the test's own on a free port, reading its certificate from files of its own
    (cert.pem and key.pem in a folder of its own); stopped afterwards (a clean exit, no
    sanitizer report)."""
    if getattr(postern, "in_containers", False):
        pytest.skip("a compose stack runs no webd of the suite's own (own_processes)")
    folder = postern.dir / f"webd-reload-{os.getpid()}-{int(time.time() * 1000)}"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    first = make_cert(folder, "webd-first")
    install(*first, cert, key)
    name = folder.name
    svc = None
    for attempt in range(3):
        [port] = free_ports(1)
        env = postern.webd_env()
        env.update({"TLS_CERT": str(cert), "TLS_KEY": str(key), "WEB_PORT": str(port)})

        def listening(port=port):
            with socket.create_connection((LOCAL, port), timeout=2):
                return True

        svc = Service(name, postern.bin / "webd", env, postern.dir / f"{name}.log", listening)
        try:
            svc.start()
            break
        except RuntimeError:
            if attempt == 2 or 'msg="cannot listen"' not in svc.since(svc.started_at):
                raise
    postern.services[name] = svc
    svc.port, svc.folder, svc.cert, svc.key, svc.first = port, folder, cert, key, first
    try:
        yield svc
    finally:
        try:
            postern.stop_service(name)
        finally:
            postern.services.pop(name, None)


def test_certificate_reload_on_sighup(own_webd):
    svc = own_webd
    first_cert, _ = svc.first
    second = make_cert(svc.folder, "webd-second")
    assert served_cert(svc.port) == der_of(first_cert)

    # A connection open before the reload (HTTP keep-alive) ...
    trust_first = ssl.create_default_context(cafile=str(first_cert))
    kept = http.client.HTTPSConnection(LOCAL, svc.port, context=trust_first, timeout=30)
    kept.request("GET", "/api/v1/session")
    r = kept.getresponse()
    r.read()
    assert r.status == 401

    install(*second, svc.cert, svc.key)
    # Replaced files alone change nothing until the signal.
    assert served_cert(svc.port) == der_of(first_cert)
    offset = svc.size()
    svc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'msg="certificate reloaded"' in svc.since(offset), timeout=30,
               what="webd to log the reload")
    # New connections get the new certificate, and are served.
    assert served_cert(svc.port) == der_of(second[0])
    trust_second = ssl.create_default_context(cafile=str(second[0]))
    fresh = http.client.HTTPSConnection(LOCAL, svc.port, context=trust_second, timeout=30)
    try:
        fresh.request("GET", "/openapi.json")
        r = fresh.getresponse()
        assert r.status == 200 and json.loads(r.read())["openapi"]
    finally:
        fresh.close()
    # ... is still served, on the certificate it began with.
    try:
        kept.request("GET", "/api/v1/session")
        r = kept.getresponse()
        r.read()
        assert r.status == 401
        assert kept.sock.getpeercert(binary_form=True) == der_of(first_cert)
    finally:
        kept.close()
    assert svc.alive()

    # A certificate that does not load, or a key of another certificate: the one in use
    # stays, and webd keeps serving.
    (svc.folder / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n"
                                        "-----END CERTIFICATE-----\n")
    for broken in ((svc.folder / "bad.pem", second[1]), (second[0], svc.first[1])):
        install(*broken, svc.cert, svc.key)
        offset = svc.size()
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in svc.since(offset), timeout=30,
                   what=f"webd to refuse {broken}")
        for _ in range(3):
            assert served_cert(svc.port) == der_of(second[0])
        assert svc.alive()

    # And a good one after it is taken again.
    install(*svc.first, svc.cert, svc.key)
    offset = svc.size()
    svc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'msg="certificate reloaded"' in svc.since(offset), timeout=30,
               what="webd to reload again")
    assert served_cert(svc.port) == der_of(first_cert)
