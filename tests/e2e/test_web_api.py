"""webd's JSON API (/api/v1), end to end over HTTPS: every route of the table in
services/webd/api.c, the admin session endpoints (login, session, logout, dashboard) and the
self-service ones (/api/v1/self).

What is checked: each route does what its lib/admin command does (the bodies are the
commands' --json outputs); bad input gets 400 (missing, unknown or mistyped members, a body
that is no JSON object), 415 (not application/json) or 413 (too large); no session or an
expired one gets 401; a change without the session's X-CSRF-Token, or from another site's
Origin, gets 403; a domain admin may act only on its domains (403 otherwise, lists filtered)
and never on system routes; changes are audited as "web:NAME from ADDRESS" and reach smtpd
and the limiter at once; failed web logins count in harvesting (service web) until the
address is blocked; a mailbox user changes its password on the self-service page and the new
one works over IMAP, POP3 and SMTP.

Only the standard library talks HTTP (http.client with the harness's certificate as CA).
Changes through the API are not mailctl's, so the client marks the harness's settings dirty
itself (the baseline fixture then restores them before the next test); domains, users, admins,
transports, TLS policies and queued messages the tests add are removed by the tests."""

import hashlib
import http.client
import imaplib
import json
import poplib
import re
import ssl
import uuid
from pathlib import Path

import psycopg2
import pytest

from support import (ALICE, DOMAIN, Submitter, greeting, login_attempt, submit, token,
                     wait_until)

ROOT = Path(__file__).resolve().parents[2]
API_C = ROOT / "services" / "webd" / "api.c"
OPENAPI = ROOT / "services" / "webd" / "www" / "openapi.json"

SYS, SYS_PW = "websys", "Websys-pass-1"          # a system admin
DOM, DOM_PW = "webdom", "Webdom-pass-1"          # a domain admin of DOM_A only
DOM_A, DOM_B = "weba.test", "webb.test"
UA, UB = f"ua@{DOM_A}", f"ub@{DOM_B}"
USER_PW = "Web-user-pw-1"
LOCAL = "127.0.0.1"
ACTOR = f"web:{SYS} from {LOCAL}"

# Paths whose changes the harness's baseline must undo (and which of them concern the
# limiter): the harness only notices changes made through its own mailctl().
DIRTY_PREFIXES = ("/api/v1/config", "/api/v1/relay", "/api/v1/hamr", "/api/v1/harvest",
                  "/api/v1/alert-addresses")
LIMITER_PREFIXES = ("/api/v1/config", "/api/v1/hamr", "/api/v1/harvest",
                    "/api/v1/alert-addresses")

NO_BODY = object()


# --- the route table ---------------------------------------------------------------------

ROUTE_RE = re.compile(r'\{\s*"(GET|POST|PUT|DELETE|PATCH|HEAD)",\s*"(/api/v1[^"]*)",\s*'
                      r'"([^"]*)",(.*?)\b(PERM_SYSTEM|PERM_SCOPE|PERM_ANY)\b,\s*'
                      r'(NULL|"[^"]*")', re.S)


def api_routes():
    """[(method, path, command words, permission, scope)] of api.c's route table."""
    text = API_C.read_text()
    table = text[text.index("static const route_t routes[]"):]
    table = table[:table.index("{ NULL, NULL")]
    routes = [(m, p, w, perm, None if scope == "NULL" else scope.strip('"'))
              for m, p, w, _args, perm, scope in ROUTE_RE.findall(table)]
    # Every entry of the table was understood.
    assert len(routes) == table.count('"/api/v1'), "api.c's route table changed shape"
    return routes


# Path parameters of the generic loops: things that belong to domain B (or do not exist).
PARAM_VALUES = {"domain": DOM_B, "address": UB, "key": "smtp.max_recipients",
                "id": "NOSUCHQUEUEID", "name": "nobody"}


def fill(path, values=PARAM_VALUES):
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def route_of(method, path):
    """The (method, pattern) of the route a request goes to, or None."""
    path = path.split("?")[0]
    for m, pattern, *_ in api_routes():
        if m == method and re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", pattern), path):
            return m, pattern
    return None


# The routes that answered 200 in this module, and the tests that ran (see the last test).
SUCCEEDED = set()
RAN = set()


# --- an HTTPS client ---------------------------------------------------------------------

class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def error(self):
        """The {"error": ...} message of a refusal."""
        doc = self.json
        assert set(doc) == {"error"} and isinstance(doc["error"], str), self
        return doc["error"]

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:400]!r}>"


class Web:
    """One browser, as far as webd can tell: its cookies (one session of each kind at most)
    and the CSRF token of its session, connecting from source (an address of 127/8)."""

    def __init__(self, stack, source=None):
        self.stack, self.source = stack, source
        self.cookies = {}
        self.csrf = None
        self.name = None

    def connection(self):
        ctx = ssl.create_default_context(cafile=str(self.stack.cert))
        return http.client.HTTPSConnection(LOCAL, self.stack.web, context=ctx, timeout=30,
                                           source_address=(self.source, 0) if self.source
                                           else None)

    @property
    def origin(self):
        return f"https://{LOCAL}:{self.stack.web}"

    def request(self, method, path, body=NO_BODY, *, raw=None, content_type="application/json",
                csrf=True, headers=None, cookies=True):
        """One request on a connection of its own. body: JSON to send; raw: bytes as they
        are; csrf: True (the session's token), False (none) or a token to send."""
        h = dict(headers or {})
        data = None
        if body is not NO_BODY:
            data = json.dumps(body).encode()
        elif raw is not None:
            data = raw
        if data is not None and content_type:
            h["Content-Type"] = content_type
        if csrf is True and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        elif isinstance(csrf, str):
            h["X-CSRF-Token"] = csrf
        if cookies and self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET" and path.startswith(DIRTY_PREFIXES):
            self.stack.dirty = True
            if path.startswith(LIMITER_PREFIXES):
                self.stack.limiter_dirty = True
        c = self.connection()
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            resp = Resp(r.status, r.headers, r.read())
        finally:
            c.close()
        if resp.status == 200 and route_of(method, path):
            SUCCEEDED.add(route_of(method, path))
        for cookie in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=NO_BODY, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=NO_BODY, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, body=NO_BODY, **kw):
        return self.request("DELETE", path, body, **kw)

    def ok(self, method, path, body=NO_BODY, **kw):
        """The JSON of a request that must succeed (200)."""
        r = self.request(method, path, body, **kw)
        assert r.status == 200, (method, path, r)
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        return r.json

    def login(self, user, password, path="/api/v1/login", key="user"):
        r = self.post(path, {key: user, "password": password})
        if r.status == 200:
            self.csrf = r.json["csrf"]
            self.name = r.json["name"]
        return r


def admin(stack, user=SYS, password=SYS_PW, source=None):
    """A Web logged in as an admin."""
    w = Web(stack, source)
    r = w.login(user, password)
    assert r.status == 200, r
    return w


def user_session(stack, address, password):
    w = Web(stack)
    r = w.login(address, password, path="/api/v1/self/login", key="address")
    assert r.status == 200, r
    return w


def session_row(stack, web, cookie="postern_admin"):
    """The web_sessions row (created_at, expires_at) of the Web's session, or None."""
    digest = hashlib.sha256(web.cookies[cookie].encode()).digest()
    rows = stack.sql("SELECT created_at, expires_at FROM web_sessions WHERE token_hash = %s",
                     (psycopg2.Binary(digest),))
    return rows[0] if rows else None


def audit_mark(stack):
    return stack.sql("SELECT coalesce(max(id), 0) FROM audit_log")[0][0]


def audit_since(stack, mark):
    return stack.sql("SELECT actor, action, detail FROM audit_log WHERE id > %s ORDER BY id",
                     (mark,))


def rcpt_code(stack, address, source=None):
    """The reply code smtpd gives RCPT TO:<address> now."""
    with stack.connect("mx", source=source) as c:
        c.ehlo()
        c.expect("MAIL FROM:<probe@probe.example>", 250)
        return c.cmd(f"RCPT TO:<{address}>").code


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(postern):
    """Two domains with a user each, a system admin, and a domain admin of the first domain
    only; all removed after the module."""
    if not postern.has_webd:
        pytest.skip(f"webd is not built in {postern.bin}")
    m = postern.mailctl
    try:
        m("admin", "add", SYS, "--role", "system", "--password-stdin", input=SYS_PW + "\n")
        for d, u in ((DOM_A, UA), (DOM_B, UB)):
            m("domain", "add", d)
            m("user", "add", u, "--password-stdin", input=USER_PW + "\n")
        m("admin", "add", DOM, "--role", "domain", "--domains", DOM_A, "--password-stdin",
          input=DOM_PW + "\n")
        yield postern
    finally:
        for name in (SYS, DOM):
            m("admin", "del", name, check=False)
        for d in (DOM_A, DOM_B):
            m("domain", "del", d, check=False)


@pytest.fixture(autouse=True)
def ran(request):
    yield
    RAN.add(request.node.originalname)


@pytest.fixture
def sysadmin(world):
    return admin(world)


@pytest.fixture
def domadmin(world):
    return admin(world, DOM, DOM_PW)


@pytest.fixture
def needs_limiter(postern):
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")


# --- logins, sessions, logout ----------------------------------------------------------------

def test_login_session_and_logout(world):
    w = Web(world)
    r = w.login(SYS.upper(), SYS_PW)  # names are case-insensitive
    assert r.status == 200, r
    doc = r.json
    assert doc["ok"] is True and doc["name"] == SYS and len(doc["csrf"]) >= 40, doc
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("postern_admin="), cookie
    flags = {f.strip() for f in cookie.split(";")[1:]}
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= flags, cookie
    assert len(w.cookies["postern_admin"]) >= 40  # 256 random bits
    # The database keeps only the token's hash.
    assert not world.sql("SELECT 1 FROM web_sessions WHERE encode(token_hash, 'escape') = %s",
                         (w.cookies["postern_admin"],))
    assert session_row(world, w) is not None

    s = w.ok("GET", "/api/v1/session")
    assert s == {"kind": "admin", "name": SYS, "role": "system", "domains": [],
                 "csrf": doc["csrf"]}, s

    # Logging out is a change: it needs the CSRF token.
    r = w.post("/api/v1/logout", csrf=False)
    assert r.status == 403 and "CSRF" in r.error, r
    assert w.get("/api/v1/session").status == 200
    old = dict(w.cookies)
    r = w.post("/api/v1/logout")
    assert r.status == 200 and r.json == {"ok": True}, r
    assert "Max-Age=0" in r.headers["Set-Cookie"], r.headers["Set-Cookie"]
    assert "postern_admin" not in w.cookies
    # The session is gone, not only the cookie: the old token no longer works.
    w.cookies = old
    assert session_row(world, w) is None
    for path in ("/api/v1/session", "/api/v1/domains"):
        r = w.get(path)
        assert r.status == 401 and "log in" in r.error, r
    r = w.get("/api/v1/logout")
    assert r.status == 401, r


def test_login_refusals(world):
    w = Web(world)
    wrong = w.login(SYS, "not-the-password")
    unknown = w.login("nobody-here", "not-the-password")
    # An unknown name and a wrong password are told apart by nothing.
    assert wrong.status == unknown.status == 401, (wrong, unknown)
    assert wrong.error == unknown.error == "wrong name or password"
    assert "Set-Cookie" not in wrong.headers and not w.cookies
    # A mailbox user is no admin, and an admin no mailbox user.
    assert w.login(UA, USER_PW).status == 401
    assert w.login(SYS, SYS_PW, path="/api/v1/self/login", key="address").status == 401

    for body in ({}, {"user": SYS}, {"password": SYS_PW}, {"user": "", "password": SYS_PW},
                 {"user": SYS, "password": 12345}, {"user": [SYS], "password": SYS_PW}):
        r = w.post("/api/v1/login", body)
        assert r.status == 400 and "user" in r.error, (body, r)
    r = w.post("/api/v1/login", raw=b'{"user": "websys", "password": ')
    assert r.status == 400 and "JSON" in r.error, r
    r = w.post("/api/v1/login", raw=json.dumps({"user": SYS, "password": SYS_PW}).encode(),
               content_type="text/plain")
    assert r.status == 415, r
    r = w.post("/api/v1/login", {"user": SYS, "password": SYS_PW},
               headers={"Origin": "https://evil.example"})
    assert r.status == 403 and "another site" in r.error, r
    r = w.get("/api/v1/login")
    assert r.status == 405, r
    assert not w.cookies


def test_no_session_gets_401_everywhere(world):
    w = Web(world)
    paths = [(m, fill(p)) for m, p, *_ in api_routes()]
    paths += [("GET", "/api/v1/session"), ("POST", "/api/v1/logout"),
              ("GET", "/api/v1/dashboard"), ("GET", "/api/v1/self"),
              ("PUT", "/api/v1/self/password"), ("POST", "/api/v1/self/logout")]
    for method, path in paths:
        r = w.request(method, path)
        assert r.status == 401 and r.error, (method, path, r)
    # A made-up token is no session either.
    w.cookies = {"postern_admin": "A" * 43, "postern_user": "B" * 43}
    for method, path in paths:
        assert w.request(method, path).status == 401, (method, path)


def test_session_cookies_are_per_kind(world):
    a = admin(world)
    u = user_session(world, UA, USER_PW)
    # Each token only in its own cookie.
    crossed = Web(world)
    crossed.cookies = {"postern_user": a.cookies["postern_admin"]}
    assert crossed.get("/api/v1/self").status == 401
    crossed.cookies = {"postern_admin": u.cookies["postern_user"]}
    assert crossed.get("/api/v1/session").status == 401
    assert crossed.get("/api/v1/domains").status == 401
    # A user session reaches nothing of the admin API.
    assert u.get("/api/v1/users").status == 401
    assert u.get("/api/v1/self").status == 200


def test_expired_sessions_get_401(world):
    w = admin(world)
    digest = psycopg2.Binary(hashlib.sha256(w.cookies["postern_admin"].encode()).digest())
    # Each request pushes the idle expiry forward (the default idle time is 30 minutes).
    world.sql("UPDATE web_sessions SET expires_at = now() + interval '5 seconds'"
              " WHERE token_hash = %s", (digest,))
    assert w.get("/api/v1/session").status == 200
    created, expires = session_row(world, w)
    left = world.sql("SELECT extract(epoch FROM %s::timestamptz - now())", (expires,))[0][0]
    assert 1700 < left <= 1800, left

    # Idle too long.
    world.sql("UPDATE web_sessions SET expires_at = now() - interval '1 second'"
              " WHERE token_hash = %s", (digest,))
    r = w.get("/api/v1/domains")
    assert r.status == 401 and "expired" in r.error, r
    r = w.post("/api/v1/domains", {"name": "never-added.test"})
    assert r.status == 401, r
    # A request does not bring an expired session back.
    assert w.get("/api/v1/session").status == 401

    # Logged in too long ago (WEB_SESSION_MAX, default 12 hours), however busy.
    w = admin(world)
    digest = psycopg2.Binary(hashlib.sha256(w.cookies["postern_admin"].encode()).digest())
    world.sql("UPDATE web_sessions SET created_at = now() - interval '13 hours'"
              " WHERE token_hash = %s", (digest,))
    r = w.get("/api/v1/session")
    assert r.status == 401 and "expired" in r.error, r
    assert world.sql("SELECT 1 FROM domains WHERE name = 'never-added.test'") == []


def test_csrf_token_and_origin(world, sysadmin):
    other = admin(world)
    assert other.csrf != sysadmin.csrf
    name = f"csrf-{uuid.uuid4().hex[:8]}.test"
    refusals = [
        ({"csrf": False}, "CSRF"),
        ({"csrf": "wrong-token"}, "CSRF"),
        ({"csrf": sysadmin.csrf[:-1]}, "CSRF"),
        ({"csrf": other.csrf}, "CSRF"),  # another session's token
        ({"headers": {"Origin": "https://evil.example"}}, "another site"),
        ({"headers": {"Origin": f"http://{LOCAL}:{world.web}"}}, "another site"),
        ({"headers": {"Origin": f"https://{LOCAL}:{world.web}.evil.example"}}, "another site"),
        ({"headers": {"Origin": f"https://{LOCAL}:{world.web + 1}"}}, "another site"),
    ]
    for kw, why in refusals:
        for method, path, body in (("POST", "/api/v1/domains", {"name": name}),
                                   ("PUT", "/api/v1/config/smtp.max_recipients",
                                    {"value": "7"}),
                                   ("DELETE", f"/api/v1/users/{UA}", NO_BODY)):
            r = sysadmin.request(method, path, body, **kw)
            assert r.status == 403 and why in r.error, (kw, method, path, r)
    assert world.sql("SELECT 1 FROM domains WHERE name = %s", (name,)) == []
    assert world.sql("SELECT 1 FROM users WHERE address = %s", (UA,)) != []
    assert world.sql("SELECT 1 FROM settings WHERE key = 'smtp.max_recipients'"
                     " AND scope = 'system'") == []

    # Reading needs no token; this site's Origin (or "null") with the token is fine.
    assert sysadmin.get("/api/v1/domains", csrf=False).status == 200
    for origin in (sysadmin.origin, "null"):
        r = sysadmin.put("/api/v1/config/smtp.max_recipients", {"value": "77"},
                         headers={"Origin": origin})
        assert r.status == 200, (origin, r)
    sysadmin.ok("DELETE", "/api/v1/config/smtp.max_recipients")


def test_openapi_document_is_served(world):
    w = Web(world)  # no session needed
    a = w.get("/openapi.json")
    b = w.get("/api/v1/openapi.json")
    assert a.status == b.status == 200, (a, b)
    assert a.headers["Content-Type"].startswith("application/json")
    assert a.body == b.body == OPENAPI.read_bytes()
    doc = json.loads(a.body)
    assert doc["openapi"].startswith("3.0") and doc["paths"]


def test_openapi_describes_every_route():
    """The document and api.c's table cannot drift apart: every route is described with its
    command and permission, and nothing is described that is not served."""
    doc = json.loads(OPENAPI.read_text())
    described = {(m.upper(), p): op for p, item in doc["paths"].items()
                 for m, op in item.items() if m in ("get", "post", "put", "delete", "patch")}
    routes = api_routes()
    assert len(routes) > 40
    perms = {"PERM_SYSTEM": "system", "PERM_SCOPE": "scope", "PERM_ANY": "any"}
    for method, path, words, perm, scope in routes:
        op = described.get((method, path))
        assert op is not None, f"{method} {path} is not in {OPENAPI}"
        assert op.get("x-postern-command") == words, (method, path, op.get("x-postern-command"))
        assert op.get("x-postern-permission") == perms[perm], (method, path)
        assert op.get("operationId"), (method, path)
        for status in ("200", "401", "503"):
            assert status in op["responses"], (method, path, status)
        if method != "GET":
            assert "403" in op["responses"], (method, path)
            assert {"adminCookie": [], "csrfToken": []} in op["security"], (method, path)
        for name in re.findall(r"\{(\w+)\}", path):
            params = [p.get("name") or doc["components"]["parameters"][
                p["$ref"].rsplit("/", 1)[1]]["name"] for p in op.get("parameters", [])
                + doc["paths"][path].get("parameters", [])]
            assert name in params, (method, path, name)
    sessions = {("POST", "/api/v1/login"), ("POST", "/api/v1/logout"),
                ("GET", "/api/v1/session"), ("GET", "/api/v1/dashboard"),
                ("POST", "/api/v1/self/login"), ("POST", "/api/v1/self/logout"),
                ("GET", "/api/v1/self"), ("PUT", "/api/v1/self/password"),
                ("GET", "/api/v1/openapi.json"), ("GET", "/openapi.json")}
    served = {(m, p) for m, p, *_ in routes} | sessions
    assert set(described) == served, set(described) ^ served
    schemes = doc["components"]["securitySchemes"]
    assert schemes["adminCookie"] == {"type": "apiKey", "in": "cookie", "name": "postern_admin"}
    assert schemes["userCookie"] == {"type": "apiKey", "in": "cookie", "name": "postern_user"}
    assert schemes["csrfToken"] == {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"}
    # Each error status has its response, {"error": string}.
    errors = doc["components"]["responses"]
    for status in ("400", "401", "403", "404", "405", "413", "415", "503"):
        schema = errors[f"Error{status}"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, status
    assert doc["components"]["schemas"]["Error"]["properties"]["error"]["type"] == "string"


# --- request validation --------------------------------------------------------------------

@pytest.mark.parametrize("kw,status,why", [
    (dict(raw=b'{"name": "x.test"'), 400, "not a JSON object"),
    (dict(raw=b'not json at all'), 400, "not a JSON object"),
    (dict(body=["x.test"]), 400, "not a JSON object"),
    (dict(body="x.test"), 400, "not a JSON object"),
    (dict(body={}), 400, 'missing member "name"'),
    (dict(body={"name": None}), 400, 'missing member "name"'),
    (dict(body={"nam": "x.test"}), 400, 'unknown member "nam"'),
    (dict(body={"name": "x.test", "extra": 1}), 400, 'unknown member "extra"'),
    (dict(body={"name": ["x.test"]}), 400, "name must be"),
    (dict(body={"name": {"n": "x.test"}}), 400, "name must be"),
    (dict(body={"name": 1.5}), 400, "name must be"),
    (dict(body={"name": "not a domain!"}), 400, "invalid domain name"),
    (dict(body={"name": "x.test"}, content_type="text/plain"), 415, "application/json"),
    (dict(body={"name": "x.test"}, content_type="application/x-www-form-urlencoded"), 415,
     "application/json"),
    (dict(raw=b"name=x.test", content_type="application/x-www-form-urlencoded"), 415,
     "application/json"),
    (dict(raw=b'{"name": "x.test"}', content_type=None), 415, "application/json"),
])
def test_bad_bodies(world, sysadmin, kw, status, why):
    r = sysadmin.request("POST", "/api/v1/domains", **kw)
    assert r.status == status, r
    assert why.lower() in r.error.lower(), r
    assert world.sql("SELECT name FROM domains WHERE name LIKE 'x.test%'") == []


def test_other_bad_requests(world, sysadmin):
    r = sysadmin.post("/api/v1/domains", raw=b'{"name": "' + b"x" * 70000 + b'.test"}')
    assert r.status == 413 and "larger" in r.error, r
    r = sysadmin.get("/api/v1/no-such-thing")
    assert r.status == 404 and r.error, r
    r = sysadmin.request("PATCH", "/api/v1/domains", {"name": "x.test"})
    assert r.status == 405, r
    r = sysadmin.delete("/api/v1/domains")
    assert r.status == 405, r
    r = sysadmin.get("/api/v1/hamr/system/reset")
    assert r.status == 405, r
    # Types the commands take: strings, integers, booleans (on/off).
    for body, why in (({"max": 2.5}, "max must be"), ({"enabled": "sometimes"}, "enabled"),
                      ({"max": "lots"}, "max"), ({"max": -1}, "max"),
                      ({"action": "explode"}, "action"), ({"maximum": 3}, "unknown member")):
        r = sysadmin.put(f"/api/v1/hamr/users/{UA}", body)
        assert r.status == 400 and why in r.error, (body, r)
    r = sysadmin.put(f"/api/v1/hamr/users/{UA}", {})
    assert r.status == 400, r
    assert world.sql("SELECT 1 FROM settings WHERE scope = 'user' AND key LIKE 'hamr.%%'"
                     " AND scope_id = (SELECT id FROM users WHERE address = %s)", (UA,)) == []
    # Missing query parameters, unknown fields.
    r = sysadmin.delete("/api/v1/relay/networks")
    assert r.status == 400 and "network" in r.error, r
    r = sysadmin.delete("/api/v1/harvest/exemptions")
    assert r.status == 400 and "network" in r.error, r
    r = sysadmin.delete(f"/api/v1/hamr/users/{UA}?fields=bogus")
    assert r.status == 400, r
    r = sysadmin.get(f"/api/v1/users/{UA}/logins?limit=0")
    assert r.status == 400 and "limit" in r.error, r
    # A password member that is missing, empty or no string.
    for body in ({"address": f"nopw@{DOM_A}"}, {"address": f"nopw@{DOM_A}", "password": ""},
                 {"address": f"nopw@{DOM_A}", "password": 12345678}):
        r = sysadmin.post("/api/v1/users", body)
        assert r.status == 400 and "password" in r.error, (body, r)
    assert world.sql("SELECT 1 FROM users WHERE address = %s", (f"nopw@{DOM_A}",)) == []


# --- permissions of a domain admin -----------------------------------------------------------

def test_domain_admin_session_and_filtered_lists(world, domadmin):
    s = domadmin.ok("GET", "/api/v1/session")
    assert (s["role"], s["domains"]) == ("domain", [DOM_A]), s
    names = [d["name"] for d in domadmin.ok("GET", "/api/v1/domains")["domains"]]
    assert names == [DOM_A], names
    users = [u["address"] for u in domadmin.ok("GET", "/api/v1/users")["users"]]
    assert UA in users and all(u.endswith("@" + DOM_A) for u in users), users
    users = [u["address"] for u in domadmin.ok("GET", f"/api/v1/users?domain={DOM_A}")["users"]]
    assert users == [UA], users
    users = [u["address"] for u in
             domadmin.ok("GET", f"/api/v1/users?domain={DOM_A.upper()}")["users"]]
    assert users == [UA], users
    for d in (DOM_B, DOMAIN, "nothere.test"):
        r = domadmin.get(f"/api/v1/users?domain={d}")
        assert r.status == 403, (d, r)
    # A system admin sees everything.
    sys_names = {d["name"] for d in admin(world).ok("GET", "/api/v1/domains")["domains"]}
    assert {DOM_A, DOM_B, DOMAIN} <= sys_names


def test_domain_admin_cannot_call_system_routes(world, domadmin):
    system = [(m, p) for m, p, _w, perm, _s in api_routes() if perm == "PERM_SYSTEM"]
    assert len(system) > 30
    mark = audit_mark(world)
    for method, path in system:
        r = domadmin.request(method, fill(path))
        assert r.status == 403 and "system admin" in r.error, (method, path, r)
    r = domadmin.get("/api/v1/dashboard")
    assert r.status == 403, r
    # With a body too (checked before anything runs).
    r = domadmin.post("/api/v1/domains", {"name": "by-domain-admin.test"})
    assert r.status == 403, r
    r = domadmin.post("/api/v1/admins", {"name": "sneaky", "role": "system", "password": "x" * 12})
    assert r.status == 403, r
    assert audit_since(world, mark) == []
    assert world.sql("SELECT 1 FROM web_admins WHERE name = 'sneaky'") == []


def test_domain_admin_cannot_touch_another_domain(world, domadmin):
    scoped = [(m, p, s) for m, p, _w, perm, s in api_routes() if perm == "PERM_SCOPE"]
    assert len(scoped) >= 13
    mark = audit_mark(world)
    for method, path, scope in scoped:
        body = NO_BODY
        if scope == "$address":
            body = {"address": f"new@{DOM_B}", "password": USER_PW}
        for target in ({"domain": DOM_B, "address": UB}, {"domain": DOMAIN, "address": ALICE},
                       {"domain": DOM_B.upper(), "address": UB.upper()}):
            r = domadmin.request(method, fill(path, target), body)
            assert r.status == 403 and "domain you do not manage" in r.error, (method, path, r)
    # Address tricks: the domain is what follows the last @.
    for address in (f"ub@{DOM_B}@{DOM_A}", f"{DOM_A}@{DOM_B}", f"ub@{DOM_B}."):
        r = domadmin.put(f"/api/v1/hamr/users/{address}", {"max": 1})
        assert r.status in (400, 403, 404), (address, r)
    r = domadmin.post("/api/v1/users", {"address": f"x@{DOM_A}@{DOM_B}", "password": USER_PW})
    assert r.status == 403, r
    r = domadmin.post("/api/v1/users", {"address": 7, "password": USER_PW})
    assert r.status in (400, 403), r
    assert audit_since(world, mark) == []
    assert world.sql("SELECT address FROM users WHERE address LIKE 'new@%'") == []
    assert world.sql("SELECT 1 FROM settings s JOIN users u ON s.scope = 'user'"
                     " AND s.scope_id = u.id WHERE u.address = %s", (UB,)) == []
    assert world.sql("SELECT 1 FROM settings s JOIN domains d ON s.scope = 'domain'"
                     " AND s.scope_id = d.id WHERE d.name = %s", (DOM_B,)) == []


def test_domain_admin_manages_its_own_domain(world, domadmin, needs_limiter):
    address = f"dom-{uuid.uuid4().hex[:8]}@{DOM_A}"
    mark = audit_mark(world)
    added = domadmin.ok("POST", "/api/v1/users", {"address": address, "password": USER_PW})
    assert added == {"ok": True, "action": "user add", "address": address}, added
    try:
        assert rcpt_code(world, address) == 250
        domadmin.ok("PUT", f"/api/v1/users/{address}/password", {"password": USER_PW + "x"})
        assert isinstance(domadmin.ok("GET", f"/api/v1/users/{address}/logins"), list)
        ch = domadmin.ok("PUT", f"/api/v1/hamr/users/{address}", {"max": 5, "interval": 300})
        assert [c["key"] for c in ch["changes"]] == ["hamr.max_messages", "hamr.interval"], ch
        shown = domadmin.ok("GET", f"/api/v1/hamr/users/{address}")
        eff = {s["key"]: (s["value"], s["source"]) for s in shown["settings"]}
        assert eff["hamr.max_messages"] == ("5", "user"), eff
        domadmin.ok("PUT", f"/api/v1/hamr/domains/{DOM_A}", {"interval": 120})
        assert domadmin.ok("GET", f"/api/v1/hamr/domains/{DOM_A}")["target"] == DOM_A
        domadmin.ok("DELETE", f"/api/v1/hamr/users/{address}?fields=max")
        assert domadmin.ok("POST", f"/api/v1/hamr/users/{address}/reset")["settings_deleted"] == 1
        domadmin.ok("POST", f"/api/v1/hamr/users/{address}/enable")
        domadmin.ok("DELETE", f"/api/v1/hamr/domains/{DOM_A}")
        domadmin.ok("POST", f"/api/v1/hamr/domains/{DOM_A}/reset")
        deleted = domadmin.ok("DELETE", f"/api/v1/users/{address}")
        assert deleted["messages_deleted"] == 0, deleted
        assert rcpt_code(world, address) == 550
    finally:
        world.mailctl("user", "del", address, check=False)
    rows = audit_since(world, mark)
    assert rows and all(actor == f"web:{DOM} from {LOCAL}" for actor, _, _ in rows), rows
    assert {"user add", "user passwd", "hamr set", "hamr unset", "hamr reset",
            "user del"} <= {a for _, a, _ in rows}, rows


# --- the routes, as a system admin -------------------------------------------------------------

def test_domains_and_users(world, sysadmin):
    domain = f"d{uuid.uuid4().hex[:8]}.test"
    address = f"carol@{domain}"
    mark = audit_mark(world)
    try:
        assert sysadmin.ok("POST", "/api/v1/domains", {"name": domain.upper()}) == {
            "ok": True, "action": "domain add", "domain": domain}
        r = sysadmin.post("/api/v1/domains", {"name": domain})
        assert r.status == 400 and "already" in r.error, r
        listed = {d["name"]: d for d in sysadmin.ok("GET", "/api/v1/domains")["domains"]}
        assert listed[domain]["users"] == 0 and listed[domain]["created_at"], listed

        # A new user receives mail at once: smtpd asks the database.
        assert rcpt_code(world, address) == 550
        assert sysadmin.ok("POST", "/api/v1/users", {"address": address, "password": USER_PW}) \
            == {"ok": True, "action": "user add", "address": address}
        assert rcpt_code(world, address) == 250
        r = sysadmin.post("/api/v1/users", {"address": address, "password": USER_PW})
        assert r.status == 400 and "already exists" in r.error, r
        r = sysadmin.post("/api/v1/users", {"address": "x@nothere.test", "password": USER_PW})
        assert r.status == 404 and "not hosted" in r.error, r
        users = sysadmin.ok("GET", f"/api/v1/users?domain={domain}")["users"]
        assert [u["address"] for u in users] == [address], users
        assert address in {u["address"] for u in sysadmin.ok("GET", "/api/v1/users")["users"]}
        r = sysadmin.get("/api/v1/users?domain=nothere.test")
        assert r.status == 404, r

        # The password works for SMTP AUTH at once, and so does the new one.
        fe = world.frontend()
        assert login_attempt(fe, address, USER_PW)[0] == 235
        sysadmin.ok("PUT", f"/api/v1/users/{address}/password", {"password": "Carol-new-pw-2"})
        assert login_attempt(fe, address, USER_PW)[0] == 535
        assert login_attempt(fe, address, "Carol-new-pw-2")[0] == 235
        r = sysadmin.put("/api/v1/users/nobody@example.test/password", {"password": USER_PW})
        assert r.status == 404, r

        logins = wait_until(lambda: sysadmin.ok("GET", f"/api/v1/users/{address}/logins"),
                            timeout=30, what="the logins to be recorded")
        assert {"time", "service", "client_addr", "mechanism", "tls", "result"} <= set(logins[0])
        assert logins[0]["service"] == "smtp", logins
        one = sysadmin.ok("GET", f"/api/v1/users/{address}/logins?limit=1")
        assert len(one) == 1

        deleted = sysadmin.ok("DELETE", f"/api/v1/users/{address}")
        assert deleted["address"] == address, deleted
        assert rcpt_code(world, address) == 550
        r = sysadmin.delete(f"/api/v1/users/{address}")
        assert r.status == 404 and "no user" in r.error, r
        sysadmin.ok("POST", "/api/v1/users", {"address": address, "password": USER_PW})
        deleted = sysadmin.ok("DELETE", f"/api/v1/domains/{domain}")
        assert deleted == {"ok": True, "action": "domain del", "domain": domain,
                           "users_deleted": 1}, deleted
        assert rcpt_code(world, address) in (550, 554)  # no longer local: relaying refused
        r = sysadmin.delete(f"/api/v1/domains/{domain}")
        assert r.status == 404 and "not hosted" in r.error, r
    finally:
        world.mailctl("domain", "del", domain, check=False)
    rows = audit_since(world, mark)
    assert [a for _, a, _ in rows] == ["domain add", "user add", "user passwd", "user del",
                                       "user add", "domain del"], rows
    assert all(actor == ACTOR for actor, _, _ in rows), rows
    assert domain in rows[0][2] and address in rows[1][2], rows


@pytest.mark.client_addresses
def test_relay_changes_reach_smtpd_at_once(world, sysadmin):
    client, other = "127.0.5.7", "127.0.5.8"
    assert sysadmin.ok("GET", "/api/v1/relay") == {"mode": "none", "networks": []}
    assert world.relay_refused_from(client)
    ch = sysadmin.ok("PUT", "/api/v1/relay/mode", {"mode": "select"})
    assert (ch["mode"], ch["previous"]) == ("select", "none"), ch
    ch = sysadmin.ok("POST", "/api/v1/relay/networks", {"network": client})
    assert (ch["network"], ch["changed"]) == (f"{client}/32", True), ch
    wait_until(lambda: not world.relay_refused_from(client), timeout=10,
               what=f"smtpd to relay for {client}")
    assert world.relay_refused_from(other)
    listed = sysadmin.ok("GET", "/api/v1/relay")
    assert listed["mode"] == "select" and [n["network"] for n in listed["networks"]] == \
        [f"{client}/32"], listed
    assert sysadmin.ok("POST", "/api/v1/relay/networks", {"network": client})["changed"] is False

    for body in ({"mode": "sometimes"}, {"mode": ""}, {"mode": 1}):
        assert sysadmin.put("/api/v1/relay/mode", body).status == 400, body
    for net in ("not-a-network", "300.1.2.3", "10.0.0.0/33", "10.0.0.1/8"):
        r = sysadmin.post("/api/v1/relay/networks", {"network": net})
        assert r.status == 400, (net, r)

    ch = sysadmin.ok("DELETE", f"/api/v1/relay/networks?network={client}")
    assert ch["action"] == "relay deny" and ch["changed"] is True, ch
    wait_until(lambda: world.relay_refused_from(client), timeout=10,
               what=f"smtpd to refuse relaying for {client} again")
    r = sysadmin.delete(f"/api/v1/relay/networks?network={client}")
    assert r.status == 404, r
    sysadmin.ok("PUT", "/api/v1/relay/mode", {"mode": "none"})


def test_tls_policies_and_transports(world, sysadmin):
    far = f"far-{uuid.uuid4().hex[:6]}.example"
    try:
        assert sysadmin.ok("GET", "/api/v1/relay/tls-policies")["default"] in \
            ("may", "encrypt", "verify")
        ch = sysadmin.ok("PUT", f"/api/v1/relay/tls-policies/{far}", {"policy": "encrypt"})
        assert (ch["domain"], ch["policy"], ch["changed"]) == (far, "encrypt", True), ch
        listed = sysadmin.ok("GET", "/api/v1/relay/tls-policies")["tls_policies"]
        assert {"domain": far, "policy": "encrypt"}.items() <= \
            [p for p in listed if p["domain"] == far][0].items(), listed
        r = sysadmin.put(f"/api/v1/relay/tls-policies/{far}", {"policy": "sometimes"})
        assert r.status == 400, r
        r = sysadmin.put(f"/api/v1/relay/tls-policies/{DOM_A}", {"policy": "verify"})
        assert r.status == 400 and "hosted here" in r.error, r
        ch = sysadmin.ok("DELETE", f"/api/v1/relay/tls-policies/{far}")
        assert (ch["policy"], ch["previous"]) == (None, "encrypt"), ch

        ch = sysadmin.ok("PUT", f"/api/v1/transports/{far}", {"destination": "127.0.0.1:2525"})
        assert (ch["host"], ch["port"], ch["changed"]) == ("127.0.0.1", 2525, True), ch
        listed = sysadmin.ok("GET", "/api/v1/transports")["transports"]
        assert [(t["domain"], t["host"], t["port"]) for t in listed if t["domain"] == far] == \
            [(far, "127.0.0.1", 2525)], listed
        for dest in ("nowhere", "127.0.0.1:0", "127.0.0.1:99999", ""):
            r = sysadmin.put(f"/api/v1/transports/{far}", {"destination": dest})
            assert r.status == 400, (dest, r)
        r = sysadmin.put(f"/api/v1/transports/{DOM_A}", {"destination": "127.0.0.1:2525"})
        assert r.status == 400 and "hosted here" in r.error, r
        ch = sysadmin.ok("DELETE", f"/api/v1/transports/{far}")
        assert ch["previous"] == "127.0.0.1:2525", ch
        r = sysadmin.delete(f"/api/v1/transports/{far}")
        assert r.status == 404, r
    finally:
        world.mailctl("transport", "del", far, check=False)
        world.mailctl("relay", "tls-policy", far, "--unset", check=False)


def test_config_reaches_smtpd_at_once(world, sysadmin):
    settings = {s["key"]: s for s in sysadmin.ok("GET", "/api/v1/config")["settings"]}
    assert {"value", "is_default", "default"} <= set(settings["smtp.max_message_size"])
    size = 12_345_678
    ch = sysadmin.ok("PUT", "/api/v1/config/smtp.max_message_size", {"value": size})
    assert (ch["key"], ch["value"]) == ("smtp.max_message_size", str(size)), ch
    wait_until(lambda: world.ehlo_size() == size, timeout=10, what=f"smtpd to announce {size}")
    r = sysadmin.put("/api/v1/config/smtp.max_message_size", {"value": "huge"})
    assert r.status == 400, r
    r = sysadmin.put("/api/v1/config/no.such.key", {"value": "1"})
    assert r.status == 400 and "unknown setting" in r.error, r
    ch = sysadmin.ok("DELETE", "/api/v1/config/smtp.max_message_size")
    assert ch["changed"] is True, ch
    wait_until(lambda: world.ehlo_size() == world.default_size, timeout=10,
               what="smtpd to announce the default size again")


HAMR_PW = "Web-hamr-pw-1"


def send_until_refused(fe, user, n):
    """n messages from user, every one accepted; then the reply to one more."""
    with Submitter(fe, user, HAMR_PW) as sub:
        for i in range(n):
            reply = sub.send(user, token())
            assert reply[0] == 250, (i, reply)
        return sub.send(user, token())


def test_hamr_limits_through_the_api_reach_the_limiter(world, sysadmin, new_user,
                                                        needs_limiter):
    user = new_user(HAMR_PW)
    fe = world.frontend()
    ch = sysadmin.ok("PUT", f"/api/v1/hamr/users/{user}",
                     {"enabled": True, "max": 2, "interval": 60, "action": "throttle",
                      "alert": False})
    assert ch["scope"] == "user" and ch["target"] == user and ch["changed"] is True, ch
    assert {c["key"]: c["value"] for c in ch["changes"]} == {
        "hamr.enabled": "on", "hamr.max_messages": "2", "hamr.interval": "60",
        "hamr.action": "throttle", "hamr.alert": "off"}, ch
    world.limiter_sync()
    code, text = send_until_refused(fe, user, 2)
    assert code == 451 and text.startswith("4.7.1") and "2 messages (user level)" in text, text

    # A higher limit applies to the very next sends.
    sysadmin.ok("PUT", f"/api/v1/hamr/users/{user}", {"max": 4})
    world.limiter_sync()
    code, text = send_until_refused(fe, user, 2)
    assert code == 451 and "4 messages (user level)" in text, text

    shown = sysadmin.ok("GET", f"/api/v1/hamr/users/{user}")
    eff = {s["key"]: (s["value"], s["source"]) for s in shown["settings"]}
    assert eff["hamr.max_messages"] == ("4", "user") and eff["hamr.enabled"] == ("on", "user")
    assert shown["send_disabled"] is None and shown["domain"] == DOMAIN, shown
    wait_until(lambda: user in [t["address"] for t in
                                sysadmin.ok("GET", "/api/v1/hamr/status")["throttled"]],
               timeout=30, what=f"{user} listed as throttled")
    ch = sysadmin.ok("DELETE", f"/api/v1/hamr/users/{user}?fields=max,max_recipients")
    assert {c["key"] for c in ch["changes"]} == {"hamr.max_messages", "hamr.max_recipients"}
    eff = {s["key"]: s["source"] for s in sysadmin.ok("GET", f"/api/v1/hamr/users/{user}")[
        "settings"]}
    assert eff["hamr.max_messages"] != "user" and eff["hamr.enabled"] == "user", eff
    reset = sysadmin.ok("POST", f"/api/v1/hamr/users/{user}/reset")
    assert reset["settings_deleted"] == 4 and reset["users"] == 1, reset


def test_hamr_disable_and_enable_through_the_api(world, sysadmin, new_user, needs_limiter):
    user = new_user(HAMR_PW)
    fe = world.frontend()
    sysadmin.ok("PUT", f"/api/v1/hamr/users/{user}",
                {"enabled": "on", "max": 1, "interval": 60, "action": "disable",
                 "alert": "off"})
    world.limiter_sync()
    code, text = send_until_refused(fe, user, 1)
    assert code == 550 and text.startswith("5.7.1") and "disabled" in text.lower(), text
    status = wait_until(lambda: (lambda s: s if user in [d["address"] for d in s["disabled"]]
                                 else None)(sysadmin.ok("GET", "/api/v1/hamr/status")),
                        timeout=30, what=f"{user} listed as disabled")
    assert "limiter" in status
    shown = sysadmin.ok("GET", f"/api/v1/hamr/users/{user}")
    assert shown["send_disabled"] and shown["send_disabled"]["since"], shown

    # The settings go (reset) but the account stays disabled until enabled.
    reset = sysadmin.ok("POST", f"/api/v1/hamr/users/{user}/reset")
    assert reset["still_disabled"] == 1, reset
    world.limiter_sync()
    with Submitter(fe, user, HAMR_PW) as sub:
        assert sub.send(user, token())[0] == 550
    ch = sysadmin.ok("POST", f"/api/v1/hamr/users/{user}/enable")
    assert ch["changed"] is True and ch["disabled_since"], ch
    wait_until(lambda: submit(fe, user, HAMR_PW, user, token())[0] == 250, timeout=30,
               what=f"{user} to send again")
    assert sysadmin.ok("POST", f"/api/v1/hamr/users/{user}/enable")["changed"] is False
    r = sysadmin.post("/api/v1/hamr/users/nobody@example.test/enable")
    assert r.status == 404, r


def test_hamr_system_and_domain_levels(world, sysadmin, needs_limiter):
    shown = sysadmin.ok("GET", "/api/v1/hamr/system")
    assert shown["scope"] == "system" and shown["target"] is None, shown
    ch = sysadmin.ok("PUT", "/api/v1/hamr/system", {"max": 321, "interval": 900})
    assert {c["key"] for c in ch["changes"]} == {"hamr.max_messages", "hamr.interval"}, ch
    eff = {s["key"]: (s["value"], s["source"]) for s in
           sysadmin.ok("GET", f"/api/v1/hamr/domains/{DOM_B}")["settings"]}
    assert eff["hamr.max_messages"] == ("321", "system"), eff
    sysadmin.ok("PUT", f"/api/v1/hamr/domains/{DOM_B}", {"max": 11})
    eff = {s["key"]: (s["value"], s["source"]) for s in
           sysadmin.ok("GET", f"/api/v1/hamr/users/{UB}")["settings"]}
    assert eff["hamr.max_messages"] == ("11", "domain"), eff
    assert eff["hamr.interval"] == ("900", "system"), eff
    sysadmin.ok("PUT", f"/api/v1/hamr/users/{UB}", {"max": 3})
    reset = sysadmin.ok("POST", f"/api/v1/hamr/domains/{DOM_B}/reset")
    assert (reset["settings_deleted"], reset["users"]) == (1, 1), reset
    ch = sysadmin.ok("DELETE", f"/api/v1/hamr/domains/{DOM_B}")
    assert [c["key"] for c in ch["changes"] if c["changed"]] == ["hamr.max_messages"], ch
    sysadmin.ok("PUT", f"/api/v1/hamr/users/{UA}", {"max": 3})
    reset = sysadmin.ok("POST", "/api/v1/hamr/system/reset")
    assert reset["settings_deleted"] >= 1 and reset["scope"] == "system", reset
    ch = sysadmin.ok("DELETE", "/api/v1/hamr/system?fields=max,interval")
    assert {c["key"] for c in ch["changes"]} == {"hamr.max_messages", "hamr.interval"}, ch
    r = sysadmin.get("/api/v1/hamr/domains/nothere.test")
    assert r.status == 404, r
    r = sysadmin.get("/api/v1/hamr/users/nobody@example.test")
    assert r.status == 404, r


def test_limiter_status(world, sysadmin, needs_limiter):
    doc = sysadmin.ok("GET", "/api/v1/limiter")
    assert doc["error"] is None and doc["lease"]["state"] == "leading", doc
    assert doc["stream"]["name"] and doc["bucket"]["name"], doc


def test_harvest_settings_exemptions_and_blocks(world, sysadmin, needs_limiter):
    try:
        shown = sysadmin.ok("GET", "/api/v1/harvest")
        assert {"smtp", "pop3", "imap"} <= set(shown["services"]), shown
        assert shown["services"]["smtp"]["max_failures"]["source"] in ("default", "system")
        ch = sysadmin.ok("PUT", "/api/v1/harvest", {"max_failures": 7, "interval": 120})
        assert {c["key"] for c in ch["changes"]} == {"harvest.max_failures", "harvest.interval"}
        ch = sysadmin.ok("PUT", "/api/v1/harvest", {"service": "imap", "block": 90})
        assert [c["key"] for c in ch["changes"]] == ["harvest.imap.block"], ch
        shown = sysadmin.ok("GET", "/api/v1/harvest")["services"]
        assert shown["imap"]["block"] == {"value": "90", "source": "imap"}, shown
        assert shown["pop3"]["max_failures"] == {"value": "7", "source": "system"}, shown
        for body in ({"service": "gopher", "block": 5}, {"max_failures": "many"},
                     {"interval": 0}, {"service": "imap", "hard_limit": 5}, {"blocks": 5}):
            r = sysadmin.put("/api/v1/harvest", body)
            assert r.status == 400, (body, r)
        sysadmin.ok("DELETE", "/api/v1/harvest?service=imap")
        ch = sysadmin.ok("DELETE", "/api/v1/harvest?fields=max_failures,interval")
        assert {c["key"] for c in ch["changes"]} == {"harvest.max_failures", "harvest.interval"}
        shown = sysadmin.ok("GET", "/api/v1/harvest")["services"]
        assert shown["imap"]["block"]["source"] != "imap", shown

        listed = sysadmin.ok("GET", "/api/v1/harvest/exemptions")["exempt"]
        assert "10.9.0.0/16" not in [e["network"] for e in listed], listed
        ch = sysadmin.ok("POST", "/api/v1/harvest/exemptions", {"network": "10.9.0.0/16"})
        assert (ch["network"], ch["changed"]) == ("10.9.0.0/16", True), ch
        listed = sysadmin.ok("GET", "/api/v1/harvest/exemptions")["exempt"]
        assert "10.9.0.0/16" in [e["network"] for e in listed], listed
        r = sysadmin.post("/api/v1/harvest/exemptions", {"network": "10.9.0.1/16"})
        assert r.status == 400, r
        sysadmin.ok("DELETE", "/api/v1/harvest/exemptions?network=10.9.0.0/16")
        r = sysadmin.delete("/api/v1/harvest/exemptions?network=10.9.0.0/16")
        assert r.status == 404, r

        assert isinstance(sysadmin.ok("GET", "/api/v1/harvest/blocks")["blocks"], list)
        r = sysadmin.post("/api/v1/harvest/unblock", {"network": "192.0.2.77"})
        assert r.status == 404 and "not blocked" in r.error, r
        r = sysadmin.post("/api/v1/harvest/unblock", {"network": "nowhere"})
        assert r.status == 400, r
    finally:
        world.mailctl("harvest", "unset", "--service", "imap", "--all", check=False)
        world.mailctl("harvest", "exempt", "del", "10.9.0.0/16", check=False)


@pytest.mark.client_addresses
def test_failed_web_logins_block_the_address(world, sysadmin, pb, nats, needs_limiter):
    attacker = "127.0.4.21"
    mailctl = world.mailctl
    events = nats("postern.event.auth", pb.AuthEvent)
    try:
        mailctl("harvest", "set", "--enabled", "on", "--max-failures", "10", "--interval", "60",
                "--block", "60")
        web_own = mailctl("harvest", "set", "--service", "web", "--max-failures", "3",
                          check=False).returncode == 0
        if not web_own:  # no harvesting settings of web's own yet: the system's
            mailctl("harvest", "set", "--max-failures", "3")
        world.limiter_sync()

        w = Web(world, source=attacker)
        for i in range(3):  # three different guesses (a repeated one counts once)
            r = w.login(SYS, f"guess-{i}-{uuid.uuid4().hex[:6]}")
            assert r.status == 401, (i, r)
        ev = events.wait_for(lambda e: e.client_addr == attacker
                             and e.service == pb.SERVICE_WEB
                             and e.result == pb.AUTH_BAD_CREDENTIALS)
        assert ev.user == SYS and ev.attempt_digest and ev.tls, ev

        # The limiter blocks the address (and tells the front ends, then PostgreSQL).
        blocks = wait_until(lambda: [b for b in sysadmin.ok("GET", "/api/v1/harvest/blocks")[
            "blocks"] if b["network"] == f"{attacker}/32"], timeout=30, what="the block listed")
        assert blocks[0]["service"] == "web", blocks
        assert "failed logins" in blocks[0]["reason"], blocks
        # webd refuses it before any password check, even the right one.
        r = w.login(SYS, SYS_PW)
        assert r.status == 403 and "blocked" in r.error and attacker in r.error, r
        assert not w.cookies
        # So does every other service: smtpd refuses the address at connect.
        wait_until(lambda: greeting(world.frontend(), attacker).code == 554, timeout=30,
                   what=f"smtpd to refuse {attacker}")
        # Only that address.
        assert admin(world, source="127.0.4.22").get("/api/v1/session").status == 200
        assert sysadmin.ok("GET", "/api/v1/dashboard")["blocks"] >= 1

        lifted = sysadmin.ok("POST", "/api/v1/harvest/unblock", {"network": attacker})
        assert [b["network"] for b in lifted["lifted"]] == [f"{attacker}/32"], lifted
        r = wait_until(lambda: (lambda r: r if r.status == 200 else None)(w.login(SYS, SYS_PW)),
                       timeout=30, what=f"webd to let {attacker} log in again")
        assert w.get("/api/v1/session").json["name"] == SYS
    finally:
        mailctl("harvest", "unblock", attacker, check=False)
        mailctl("harvest", "unset", "--service", "web", "--all", check=False)


def test_alert_addresses(world, sysadmin):
    try:
        assert sysadmin.ok("GET", "/api/v1/alert-addresses") == {"alert_addresses": []}, \
            "the baseline has no alert addresses"
        ch = sysadmin.ok("POST", "/api/v1/alert-addresses", {"address": ALICE})
        assert (ch["address"], ch["changed"], ch["delivery"]) == (ALICE, True, "mailbox"), ch
        listed = sysadmin.ok("GET", "/api/v1/alert-addresses")["alert_addresses"]
        assert [a["address"] for a in listed] == [ALICE], listed
        r = sysadmin.post("/api/v1/alert-addresses", {"address": "not an address"})
        assert r.status == 400, r
        ch = sysadmin.ok("DELETE", f"/api/v1/alert-addresses/{ALICE}")
        assert ch["changed"] is True and "warning" in ch, ch  # none left
        r = sysadmin.delete(f"/api/v1/alert-addresses/{ALICE}")
        assert r.status == 404, r
    finally:
        world.mailctl("alert-address", "del", ALICE, check=False)


@pytest.fixture
def queued(world):
    made = []

    def add():
        qid = "WEB" + uuid.uuid4().hex[:9].upper()
        raw = (f"From: <{ALICE}>\r\nTo: <someone@far.example>\r\nSubject: web {qid}\r\n"
               f"\r\nqueued for test_web_api\r\n").encode()
        world.sql("INSERT INTO outbound_queue (queue_id, sender, recipients, raw)"
                  " VALUES (%s, %s, %s, %s)", (qid, ALICE, ["someone@far.example"],
                                               psycopg2.Binary(raw)))
        made.append(qid)
        return qid

    yield add
    if made:
        world.sql("DELETE FROM outbound_queue WHERE queue_id = ANY(%s)", (made,))


def test_queue(world, sysadmin, queued):
    a, b = queued(), queued()
    listed = {m["queue_id"]: m for m in sysadmin.ok("GET", "/api/v1/queue")["messages"]}
    assert {a, b} <= set(listed), listed
    assert listed[a]["pending_recipients"] == ["someone@far.example"], listed[a]
    shown = sysadmin.ok("GET", f"/api/v1/queue/{a}")["messages"]
    assert [m["queue_id"] for m in shown] == [a], shown
    assert shown[0]["recipients"][0]["state"] == "pending" and "Subject: web" in \
        shown[0]["headers"], shown
    r = sysadmin.get("/api/v1/queue/NOSUCHQUEUEID")
    assert r.status == 404 and "no message" in r.error, r

    ch = sysadmin.ok("POST", f"/api/v1/queue/{a}/retry")
    assert (ch["queue_id"], ch["all"], ch["retried"]) == (a, False, 1), ch
    ch = sysadmin.ok("POST", "/api/v1/queue/retry")
    assert ch["all"] is True and ch["retried"] >= 2, ch
    r = sysadmin.post("/api/v1/queue/NOSUCHQUEUEID/retry")
    assert r.status == 404, r

    ch = sysadmin.ok("DELETE", f"/api/v1/queue/{a}", {"silent": True})
    assert (ch["silent"], ch["changed"], ch["returned_to_sender"]) == (True, True, False), ch
    assert world.sql("SELECT 1 FROM outbound_queue WHERE queue_id = %s", (a,)) == []
    ch = sysadmin.ok("DELETE", f"/api/v1/queue/{b}")
    assert (ch["silent"], ch["returned_to_sender"]) == (False, True), ch
    assert world.sql("SELECT cancelled_by IS NOT NULL FROM outbound_queue WHERE queue_id = %s",
                     (b,)) == [(True,)]
    r = sysadmin.delete(f"/api/v1/queue/{a}")
    assert r.status == 404, r


def test_admin_accounts(world, sysadmin):
    name = "webtmp"
    pw, pw2 = "Webtmp-pass-1", "Webtmp-pass-2"
    try:
        listed = sysadmin.ok("GET", "/api/v1/admins")
        assert {"name": SYS, "role": "system", "domains": []}.items() <= \
            [a for a in listed if a["name"] == SYS][0].items(), listed
        for body in ({"name": name, "role": "domain", "domains": DOM_A},  # no password
                     {"name": name, "role": "king", "password": pw},
                     {"name": "-bad-", "password": pw},
                     {"name": name, "role": "domain", "domains": DOM_A, "password": pw,
                      "extra": True}):
            r = sysadmin.post("/api/v1/admins", body)
            assert r.status == 400, (body, r)
        r = sysadmin.post("/api/v1/admins", {"name": name, "role": "domain",
                                             "domains": "nothere.test", "password": pw})
        assert r.status in (400, 404) and "not hosted" in r.error, r
        assert world.sql("SELECT 1 FROM web_admins WHERE name = %s", (name,)) == []

        ch = sysadmin.ok("POST", "/api/v1/admins", {"name": name, "role": "domain",
                                                    "domains": f"{DOM_A},{DOM_B}",
                                                    "password": pw})
        assert (ch["name"], ch["role"]) == (name, "domain"), ch
        listed = {a["name"]: a for a in sysadmin.ok("GET", "/api/v1/admins")}
        assert sorted(listed[name]["domains"]) == [DOM_A, DOM_B], listed
        tmp = admin(world, name, pw)
        s = tmp.ok("GET", "/api/v1/session")
        assert (s["role"], s["domains"]) == ("domain", [DOM_A, DOM_B]), s

        # A new password ends the admin's sessions.
        sysadmin.ok("PUT", f"/api/v1/admins/{name}/password", {"password": pw2})
        assert tmp.get("/api/v1/session").status == 401
        assert Web(world).login(name, pw).status == 401
        tmp = admin(world, name, pw2)
        r = sysadmin.put(f"/api/v1/admins/{name}/password", {})
        assert r.status == 400, r
        r = sysadmin.put("/api/v1/admins/nobody/password", {"password": pw})
        assert r.status == 404, r

        assert sysadmin.ok("DELETE", f"/api/v1/admins/{name}")["name"] == name
        assert tmp.get("/api/v1/session").status == 401
        assert Web(world).login(name, pw2).status == 401
        r = sysadmin.delete(f"/api/v1/admins/{name}")
        assert r.status == 404 and "no admin" in r.error, r
    finally:
        world.mailctl("admin", "del", name, check=False)


def test_dashboard(world, sysadmin):
    doc = sysadmin.ok("GET", "/api/v1/dashboard")
    assert set(doc) == {"messages_hour", "logins_hour", "failures_hour", "blocks",
                        "exemptions", "throttled", "disabled", "queue", "queue_age_s",
                        "domains", "users"}, doc
    assert all(isinstance(v, int) and v >= 0 for v in doc.values()), doc
    assert doc["domains"] >= 3 and doc["users"] >= 4, doc


def test_changes_are_audited_with_the_web_actor(world, sysadmin):
    mark = audit_mark(world)
    domain = f"audit-{uuid.uuid4().hex[:6]}.test"
    sysadmin.ok("POST", "/api/v1/domains", {"name": domain})
    sysadmin.ok("DELETE", f"/api/v1/domains/{domain}")
    # A refusal changes nothing, and is not audited.
    assert sysadmin.post("/api/v1/domains", {"name": DOM_A}).status == 400
    rows = audit_since(world, mark)
    assert [(actor, action) for actor, action, _ in rows] == [
        (ACTOR, "domain add"), (ACTOR, "domain del")], rows
    assert all(domain in detail for _, _, detail in rows), rows


# --- self-service ---------------------------------------------------------------------------

def imap_login(stack, user, password):
    c = imaplib.IMAP4_SSL(LOCAL, stack.port("imaps"), ssl_context=stack.tls_context())
    try:
        c.login(user, password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def pop3_login(stack, user, password):
    c = poplib.POP3_SSL(LOCAL, stack.pop3s, context=stack.tls_context(), timeout=30)
    try:
        c.user(user)
        c.pass_(password)
        return True
    except poplib.error_proto:
        return False
    finally:
        try:
            c.quit()
        except (poplib.error_proto, OSError):
            pass


def test_self_service(world, new_user):
    old, new = "Self-old-pw-1", "Self-new-pw-2"
    address = new_user(old)
    u = Web(world)
    r = u.login(address.upper(), "wrong-password", path="/api/v1/self/login", key="address")
    assert r.status == 401 and r.error == "wrong address or password", r
    r = u.post("/api/v1/self/login", {"user": address, "password": old})
    assert r.status == 400, r
    r = u.login(address, old, path="/api/v1/self/login", key="address")
    assert r.status == 200 and r.json["name"] == address, r
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("postern_user=") and "HttpOnly" in cookie and \
        "SameSite=Strict" in cookie and "Secure" in cookie, cookie

    def with_web_login():
        doc = u.ok("GET", "/api/v1/self")
        return doc if any(lg["service"] == "web" and lg["result"] == "ok"
                          for lg in doc["logins"]) else None

    doc = wait_until(with_web_login, timeout=30, what="the web login in the history")
    assert doc["address"] == address and doc["csrf"] == u.csrf, doc
    assert (doc["hamr"]["scope"], doc["hamr"]["target"]) == ("user", address), doc["hamr"]
    assert {s["key"] for s in doc["hamr"]["settings"]} >= {"hamr.max_messages",
                                                          "hamr.interval"}, doc["hamr"]
    assert doc["logins"][0]["client_addr"] == LOCAL, doc["logins"]

    mark = audit_mark(world)
    path = "/api/v1/self/password"
    r = u.put(path, {"current": "not-it-at-all", "new": new})
    assert r.status == 403 and "current password is wrong" in r.error, r
    for body in ({"current": old}, {"new": new}, {"current": old, "new": new, "x": 1},
                 {"current": old, "new": 12345678}, ["x"]):
        assert u.put(path, body).status == 400, body
    r = u.put(path, {"current": old, "new": "short"})
    assert r.status == 400 and "too short" in r.error, r
    r = u.put(path, raw=json.dumps({"current": old, "new": new}).encode(),
              content_type="text/plain")
    assert r.status == 415, r
    r = u.put(path, {"current": old, "new": new}, csrf=False)
    assert r.status == 403, r
    r = u.put(path, {"current": old, "new": new}, headers={"Origin": "https://evil.example"})
    assert r.status == 403, r
    assert audit_since(world, mark) == []
    assert login_attempt(world.frontend(), address, old)[0] == 235

    ch = u.ok("PUT", path, {"current": old, "new": new})
    assert (ch["action"], ch["address"]) == ("user passwd", address), ch
    rows = audit_since(world, mark)
    assert [(a, d) for _, a, d in rows] == [("user passwd", address)], rows
    assert rows[0][0] == f"self:{address} from {LOCAL}", rows

    # The new password works on every protocol at once, the old one nowhere.
    fe = world.frontend()
    assert login_attempt(fe, address, new)[0] == 235
    assert login_attempt(fe, address, old)[0] == 535
    if world.has_imapd:
        assert imap_login(world, address, new)
        assert not imap_login(world, address, old)
    if world.has_pop3d:
        assert pop3_login(world, address, new)
        assert not pop3_login(world, address, old)
    assert Web(world).login(address, old, path="/api/v1/self/login",
                            key="address").status == 401
    user_session(world, address, new)

    # The session goes on after the change; logging out ends it.
    assert u.get("/api/v1/self").status == 200
    assert u.request("DELETE", "/api/v1/self").status == 405
    assert u.request("GET", "/api/v1/self/nothing").status == 404
    assert u.post("/api/v1/self/logout", csrf=False).status == 403
    r = u.post("/api/v1/self/logout")
    assert r.status == 200 and "Max-Age=0" in r.headers["Set-Cookie"], r
    assert not u.cookies
    r = u.get("/api/v1/self")
    assert r.status == 401, r


# --- last: nothing in the table went untried ---------------------------------------------------

def test_every_route_answered_200(request, world, needs_limiter):
    """Every route of api.c's table succeeded at least once in the tests above (a route added
    to the table without a test fails here). Only meaningful when the whole module ran."""
    others = {name for name in globals() if name.startswith("test_")} - {request.node.name}
    if not others <= RAN:
        pytest.skip("only when every test of the module ran (and none was skipped)")
    missing = {(m, p) for m, p, *_ in api_routes()} - SUCCEEDED
    assert not missing, f"never answered 200 here: {sorted(missing)}"
