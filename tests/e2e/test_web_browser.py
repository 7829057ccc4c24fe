"""The web console and the self-service page in a real browser: headless Chromium driven by
chromedriver through Debian's python3-selenium, against the harness's webd (self-signed
certificate accepted). An administrator logs in, adds a domain and a user, sets a HAMR
limit at the domain and sees the user inherit it (with the level it comes from), resets the
domain and sees the user's own value gone, lifts a harvesting block and sees the next SMTP
connection from that address served; a mailbox user changes the password on the
self-service page and logs in over IMAP with the new one. A domain admin sees only its
domains' users and HAMR.

Every test waits for what the page shows (WebDriverWait), never for time to pass. Each step
leaves a screenshot in build/test-artifacts/web/ (TEST-NN-STEP.png; TEST-NN-failed.png when a
test fails); the walk through every section also saves console.png there, the README's
picture of the dashboard, and copies it to docs/console.png when that does not exist yet or
POSTERN_WEB_DOCS_SHOT=1 is set. The pages run under webd's strict Content-Security-Policy: a
test fails on any CSP violation or script error the browser logs.

Skipped when webd is not built, or when chromium or chromedriver (Debian packages chromium,
chromium-driver) or selenium (python3-selenium) are not installed."""

import imaplib
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from support import ALICE, DOMAIN, login_attempt, submit, token, wait_until
from test_harvest import fail_logins, refused_at_connect, served

try:
    from selenium import webdriver
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException, WebDriverException)
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported by the fixture
    webdriver = None

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "web"
DOCS_SHOT = ROOT / "docs" / "console.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

ADMIN, ADMIN_PW = "browser-admin", "Browser-admin-pw-1"
USER_PW = "Web-user-pw-1"
WAIT = 30  # seconds a page gets to show what a test waits for
# What the browser may log without the test failing: the answers the pages expect
# (401 before login, 4xx the page shows as a message).
EXPECTED_CONSOLE = re.compile(
    r"Failed to load resource: the server responded with a status of 4\d\d")

_seq = itertools.count(1)


def unique(prefix):
    return f"{prefix}{next(_seq)}-{int(time.time() * 1000) % 10_000_000}"


# --- the browser -----------------------------------------------------------------------------

class Page:
    """One browser on webd: navigation, waiting for what the page shows, screenshots."""

    def __init__(self, driver, base, name):
        self.d = driver
        self.base = base
        self.name = name
        self.shots = itertools.count(1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{name}-*.png"):  # an earlier run's
            old.unlink()

    # finding and waiting
    def wait(self, condition, what, timeout=WAIT):
        return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException)).until(
            lambda d: condition(), message=f"waiting for {what}")

    def find(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css, what=None):
        return self.wait(lambda: self.find(css) if self.find(css).is_displayed() else None,
                         what or f"{css} to show")

    def gone(self, css, what=None):
        self.wait(lambda: not [e for e in self.finds(css) if e.is_displayed()],
                  what or f"{css} to go")

    def text(self, css):
        return self.find(css).text

    def wait_text(self, css, want, what=None):
        """Waits until the element's text contains want; returns the text."""
        return self.wait(lambda: (lambda t: t if want in t else None)(self.text(css)),
                         what or f"{css} to say {want!r}")

    def fill(self, css, value):
        e = self.visible(css)
        e.clear()
        e.send_keys(value)
        return e

    def click(self, css):
        e = self.visible(css)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
        e.click()
        return e

    def select(self, css, value):
        Select(self.visible(css)).select_by_value(value)

    # messages
    def message(self, kind, want=""):
        """The text of a shown message (ok, error, warning) containing want, waited for."""
        css = f'#messages [data-test="msg-{kind}"]'
        return self.wait(lambda: next((e.text for e in self.finds(css)
                                       if want in e.text and e.is_displayed()), None),
                         f"a {kind} message saying {want!r}")

    def no_errors_shown(self):
        errors = [e.text for e in self.finds('#messages [data-test="msg-error"]')]
        assert not errors, errors

    # console
    def open(self, path="/"):
        self.d.get(self.base + path)

    def login(self, user=ADMIN, password=ADMIN_PW):
        self.open("/")
        self.fill("#login-user", user)
        self.fill("#login-password", password)
        self.click("#login-submit")
        self.wait_text("#whoami", user)

    def section(self, name):
        self.click(f'#nav a[data-section="{name}"]')
        self.visible(f"#sec-{name}")
        self.wait(lambda: self.find(f'#nav a[data-section="{name}"]').get_attribute("class")
                  .find("active") >= 0, f"{name} to be the active section")

    def shot(self, step, full=True):
        """A screenshot of the page (full: all of it, the window stretched to its height)."""
        path = ARTIFACTS / f"{self.name}-{next(self.shots):02d}-{step}.png"
        size = self.d.get_window_size()
        height = self.d.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        if full and height > size["height"]:
            self.d.set_window_size(size["width"], min(height + 140, 6000))
        try:
            self.d.save_screenshot(str(path))
        finally:
            if full and height > size["height"]:
                self.d.set_window_size(size["width"], size["height"])
        return path

    # what the browser logged
    def problems(self):
        """Script errors and CSP violations the browser logged since the last call."""
        try:
            entries = self.d.get_log("browser")
        except WebDriverException:
            return []
        return [e["message"] for e in entries
                if not EXPECTED_CONSOLE.search(e["message"])
                and (e.get("level") == "SEVERE" or "Content Security Policy" in e["message"]
                     or "Refused to" in e["message"] or "Uncaught" in e["message"])]


@pytest.fixture(scope="module")
def web(postern):
    """webd's URL, with the console's administrator created."""
    if not postern.has_webd:
        pytest.skip(f"webd is not built in {postern.bin}")
    if webdriver is None:
        pytest.skip("selenium is not installed (Debian: apt-get install python3-selenium)")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium or chromedriver is not installed "
                    "(Debian: apt-get install chromium chromium-driver)")
    r = postern.mailctl("admin", "add", ADMIN, "--password-stdin", input=ADMIN_PW + "\n",
                        check=False)
    assert r.returncode == 0 or "exists" in r.stderr, r.stderr
    if r.returncode != 0:  # from an earlier module in this session: its password again
        postern.mailctl("admin", "passwd", ADMIN, "--password-stdin", input=ADMIN_PW + "\n")
    return postern.web_url


@pytest.fixture
def page(web, request):
    """A fresh headless Chromium (no cookies) on webd; closed after the test, which fails on
    any CSP violation or script error the browser logged."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--ignore-certificate-errors", "--window-size=1366,900", "--lang=en-US",
                "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    p = Page(driver, web, request.node.name.replace("test_", "", 1))
    failed_before = request.session.testsfailed
    try:
        yield p
        problems = p.problems()
        assert not problems, "the browser logged:\n  " + "\n  ".join(problems)
    finally:
        if request.session.testsfailed > failed_before:  # the test failed: how the page looked
            try:
                p.shot("failed")
            except WebDriverException:
                pass
        driver.quit()


def web_changed(postern):
    """Settings changed through webd rather than mailctl: the harness resets them before the
    next test (mailctl marks that itself)."""
    postern.dirty = postern.limiter_dirty = True


def hamr_show(mailctl, address):
    out = json.loads(mailctl("--json", "hamr", "show", "--user", address).stdout)
    return {s["key"]: s for s in out["settings"]}


# --- console: steps used by several tests ------------------------------------------------------

def add_domain_and_user(page, domain, address, password):
    """Through the console: the domain, then the user in it."""
    page.section("domains")
    page.fill("#domain-add-name", domain)
    page.click("#domain-add-submit")
    page.message("ok", domain)
    row = f'[data-test="domain-row"][data-name="{domain}"]'
    page.visible(row, f"the row of {domain}")
    page.click(row + ' [data-test="domain-users"]')
    page.wait_text("#users-domain", domain)
    page.fill("#user-add-address", address.split("@")[0])  # the domain is added
    page.fill("#user-add-password", password)
    page.click("#user-add-submit")
    page.message("ok", address)
    page.visible(f'[data-test="user-row"][data-address="{address}"]', f"the row of {address}")
    page.wait(lambda: page.text(row).split()[1] == "1", f"{domain} to count one user")


def hamr_value(page, level, field):
    """(value, source) of a HAMR cell."""
    e = page.find(f"#hamr-{level}-{field}")
    return e.text, e.get_attribute("data-source")


def wait_hamr(page, level, field, value, source):
    page.wait(lambda: hamr_value(page, level, field) == (value, source),
              f"HAMR {level} {field} to show {value} from {source}")


# --- tests -----------------------------------------------------------------------------------

def test_login_refused_then_domain_user_and_password(page, postern, mailctl):
    """A wrong password is refused on the login form; then the admin adds a domain and a
    user, changes the user's password (which works over SMTP AUTH afterwards) and sees the
    user's recent logins."""
    domain = unique("console-") + ".test"
    address = f"carol@{domain}"
    page.open("/")
    page.visible("#login-form")
    page.shot("login-form")
    page.fill("#login-user", ADMIN)
    page.fill("#login-password", "wrong-password")
    page.click("#login-submit")
    assert "wrong name or password" in page.wait_text("#login-error", "wrong")
    page.shot("login-refused")

    page.fill("#login-password", ADMIN_PW)
    page.click("#login-submit")
    page.wait_text("#whoami", ADMIN)
    page.visible("#sec-dashboard", "the dashboard, a system admin's first section")

    add_domain_and_user(page, domain, address, USER_PW)
    page.shot("domain-and-user-added")
    assert [d["name"] for d in json.loads(mailctl("--json", "domain", "list").stdout)["domains"]
            if d["name"] == domain] == [domain]

    # A new password, through the console; the old one stops working.
    row = f'[data-test="user-row"][data-address="{address}"]'
    page.click(row + ' [data-test="user-passwd"]')
    page.wait_text("#user-passwd-address", address)
    page.fill("#user-passwd-new", "Changed-pw-22")
    page.click("#user-passwd-submit")
    page.message("ok", "Password of " + address)
    page.shot("password-changed")
    fe = postern.frontend()
    assert login_attempt(fe, address, "Changed-pw-22")[0] == 235
    assert login_attempt(fe, address, USER_PW)[0] == 535

    # That login, listed in the user's recent logins (the limiter records it a moment later).
    def smtp_login_listed():
        page.click(row + ' [data-test="user-logins"]')
        page.wait_text("#logins-user", address)
        rows = page.finds('#logins-table [data-test="login-row"]')
        return rows if any("smtp" in r.text and "ok" in r.text for r in rows) else None
    page.wait(smtp_login_listed, "the SMTP login in the user's logins")
    page.shot("user-logins")

    # A refusal shows the API's message: the domain exists already.
    page.fill("#domain-add-name", domain)
    page.click("#domain-add-submit")
    page.message("error", domain)
    page.shot("error-shown")

    # Deleting asks first.
    page.click(row + ' [data-test="user-delete"]')
    page.click(row + ' [data-test="confirm-yes"]')
    page.message("ok", f"User {address} deleted")
    page.gone(row, f"the row of {address}")
    page.click("#logout")
    page.visible("#login-form", "the login form after logging out")


def test_hamr_domain_limit_inherited_then_domain_reset(page, postern, mailctl):
    """A limit set at the domain shows in the user's column with source domain; a user-level
    override beats it until the domain's reset removes it; unsetting the domain's value
    hands the user back the system's (or the default)."""
    domain = unique("hamr-") + ".test"
    address = f"dave@{domain}"
    web_changed(postern)
    page.login()
    add_domain_and_user(page, domain, address, USER_PW)

    # The user's HAMR button opens the three levels with this domain and user chosen.
    page.click(f'[data-test="user-row"][data-address="{address}"] [data-test="user-hamr"]')
    page.visible("#sec-hamr")
    page.wait_text('[data-test="hamr-head-user"]', address)
    page.wait_text('[data-test="hamr-head-domain"]', domain)
    system_max = hamr_value(page, "system", "max")
    assert system_max[1] in ("system", "default"), system_max
    wait_hamr(page, "user", "max", system_max[0], system_max[1])

    # The domain's limit, inherited by the user.
    page.fill("#hamr-domain-input-max", "42")
    page.click("#hamr-domain-save")
    page.message("ok", "max_messages=42")
    wait_hamr(page, "domain", "max", "42", "domain")
    wait_hamr(page, "user", "max", "42", "domain")
    assert hamr_value(page, "system", "max") == system_max
    page.shot("domain-limit-inherited")
    shown = hamr_show(mailctl, address)["hamr.max_messages"]
    assert (shown["value"], shown["source"], shown["domain"]) == ("42", "domain", "42"), shown

    # The user's own value wins.
    page.fill("#hamr-user-input-max", "7")
    page.select("#hamr-user-input-action", "disable")
    page.click("#hamr-user-save")
    page.message("ok", "max_messages=7")
    wait_hamr(page, "user", "max", "7", "user")
    wait_hamr(page, "user", "action", "disable", "user")
    wait_hamr(page, "domain", "max", "42", "domain")
    page.shot("user-override")

    # The domain's reset removes the user-level settings of its users: the domain's shows again.
    page.click("#hamr-domain-reset")
    page.click('#hamr-table [data-test="confirm-yes"]')
    page.message("ok", "2 user-level setting(s) of 1 user(s) removed")
    wait_hamr(page, "user", "max", "42", "domain")
    assert hamr_value(page, "user", "action")[1] != "user"
    page.shot("domain-reset")
    shown = hamr_show(mailctl, address)
    assert shown["hamr.max_messages"]["user"] is None, shown
    assert shown["hamr.action"]["user"] is None, shown
    assert shown["hamr.max_messages"]["source"] == "domain", shown

    # Unsetting the domain's own value: the user falls back to the level above.
    page.click("#hamr-domain-unset-max")
    page.click("#hamr-domain-unset")
    page.message("ok", "unset max")
    wait_hamr(page, "user", "max", *system_max)
    wait_hamr(page, "domain", "max", *system_max)
    page.shot("domain-unset")

    # Saving nothing says so rather than calling the API.
    page.click("#hamr-user-save")
    page.message("error", "Nothing to save")


@pytest.mark.client_addresses
def test_unblock_in_console_serves_the_next_connection(page, postern, mailctl, new_user):
    """Failed logins from one address block it; the console lists the block with its reason
    and end, and its Unblock button lifts it: the next SMTP connection from there is
    served."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: harvesting needs it")
    attacker = "127.0.7.1"
    mailctl("harvest", "set", "--enabled", "on", "--max-failures", "3", "--interval", "600",
            "--block", "3600")
    seen = postern.limiter_sync()
    assert (seen["harvest.enabled"], seen["harvest.max_failures"]) == ("on", "3"), seen
    fe = postern.frontend()
    try:
        user = new_user("Harvest-pw-7!")
        fail_logins(fe, user, attacker, ["guess-1", "guess-2", "guess-3"])
        wait_until(lambda: refused_at_connect(fe, attacker), timeout=30,
                   what=f"smtpd to refuse {attacker} at connect")

        page.login()
        page.section("harvest")
        row = f'[data-test="block-row"][data-network^="{attacker}"]'

        def listed():
            # The limiter tells the front ends first and writes PostgreSQL next: refresh.
            if not [e for e in page.finds(row) if e.is_displayed()]:
                page.click("#blocks-refresh")
                return None
            return page.find(row)
        block = page.wait(listed, f"the block of {attacker} in the console")
        assert "smtp" in block.text and "failed logins" in block.text, block.text
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", block.text), block.text  # until
        page.shot("blocked")

        page.click(row + ' [data-test="unblock"]')
        page.message("ok", "Unblocked " + attacker)
        page.gone(row, f"the block of {attacker}")
        page.shot("unblocked")
        wait_until(lambda: served(fe, attacker), timeout=30,
                   what=f"smtpd to serve {attacker} after the console's unblock")
        assert served(fe, attacker)

        # Unblocking what is not blocked is refused, and the page says why.
        page.fill("#unblock-network", attacker)
        page.click('#unblock-form button[type="submit"]')
        page.message("error", "not blocked")
    finally:
        mailctl("harvest", "unblock", attacker, check=False)


def test_self_service_password_change_then_imap(page, postern, mailctl, new_user):
    """A mailbox user logs in on /self/, sees the HAMR values in effect with their source and
    the recent logins, changes the password (a wrong current one is refused), and logs in
    over IMAP with the new password."""
    if not postern.has_imapd:
        pytest.skip(f"imapd is not built in {postern.bin}")
    old_pw, new_pw = "Self-old-pw-1", "Self-new-pw-2"
    address = new_user(old_pw)
    ctx = postern.tls_context()
    with imaplib.IMAP4_SSL("127.0.0.1", postern.port("imaps"), ssl_context=ctx) as c:
        c.login(address, old_pw)
        c.logout()
    wait_until(lambda: "imap" in mailctl("user", "logins", address).stdout, timeout=30,
               what=f"the IMAP login of {address} recorded")
    mailctl("hamr", "set", "--domain", DOMAIN, "--max-recipients", "33")

    page.open("/self/")
    page.visible("#self-login-form")
    page.fill("#self-login-address", address)
    page.fill("#self-login-password", "not-the-password")
    page.click("#self-login-submit")
    page.wait_text("#self-login-error", "wrong address or password")
    page.shot("self-login-refused")
    page.fill("#self-login-password", old_pw)
    page.click("#self-login-submit")
    page.wait_text("#self-address", address)
    page.visible('[data-test="send-allowed"]')
    cell = '[data-test="self-hamr-value"][data-key="hamr.max_recipients"]'
    page.wait_text(cell, "33")
    assert page.find(cell).get_attribute("data-source") == "domain"
    assert "your domain" in page.text('[data-test="self-hamr-row"][data-key="hamr.max_recipients"]')
    page.wait(lambda: [r for r in page.finds('[data-test="self-login-row"]') if "imap" in r.text],
              "the IMAP login among the recent logins")
    page.shot("self-page")

    # Refused: the wrong current password; too short a new one.
    page.fill("#self-pw-current", "wrong-current")
    page.fill("#self-pw-new", new_pw)
    page.fill("#self-pw-new2", new_pw)
    page.click("#self-pw-submit")
    page.message("error", "current password is wrong")
    page.shot("self-wrong-current")
    page.d.execute_script("document.getElementById('self-pw-new').removeAttribute('minlength');"
                          "document.getElementById('self-pw-new2').removeAttribute('minlength');")
    page.fill("#self-pw-current", old_pw)
    page.fill("#self-pw-new", "short")
    page.fill("#self-pw-new2", "short")
    page.click("#self-pw-submit")
    page.message("error", "at least 8 characters")

    # Changed.
    page.fill("#self-pw-current", old_pw)
    page.fill("#self-pw-new", new_pw)
    page.fill("#self-pw-new2", new_pw)
    page.click("#self-pw-submit")
    page.message("ok", "password has been changed")
    page.shot("self-password-changed")

    with imaplib.IMAP4_SSL("127.0.0.1", postern.port("imaps"), ssl_context=ctx) as c:
        typ, _ = c.login(address, new_pw)
        assert typ == "OK"
        c.logout()
    with imaplib.IMAP4_SSL("127.0.0.1", postern.port("imaps"), ssl_context=ctx) as c:
        with pytest.raises(imaplib.IMAP4.error):
            c.login(address, old_pw)

    page.click("#self-logout")
    page.visible("#self-login-form", "the login form after logging out")
    page.shot("self-logged-out")


def test_domain_admin_sees_only_its_domains(page, postern, mailctl):
    """An admin of role domain sees Domains & users and HAMR only, for its own domains; the
    system level is shown but not editable."""
    mine = unique("mine-") + ".test"
    name, pw = unique("domadmin-"), "Dom-admin-pw-1"
    mailctl("domain", "add", mine)
    mailctl("user", "add", f"erin@{mine}", "--password-stdin", input=USER_PW + "\n")
    mailctl("admin", "add", name, "--role", "domain", "--domains", mine, "--password-stdin",
            input=pw + "\n")
    page.login(name, pw)
    page.wait_text("#whoami", mine)
    page.visible("#sec-domains", "Domains & users, a domain admin's first section")
    shown = [a.get_attribute("data-section") for a in page.finds("#nav a") if a.is_displayed()]
    assert shown == ["domains", "hamr"], shown
    page.visible(f'[data-test="domain-row"][data-name="{mine}"]')
    names = [r.get_attribute("data-name") for r in page.finds('[data-test="domain-row"]')]
    assert names == [mine], names
    assert not page.find("#domain-add-form").is_displayed()
    page.visible(f'[data-test="user-row"][data-address="erin@{mine}"]')
    page.shot("domain-admin-domains")

    page.section("hamr")
    page.wait_text('[data-test="hamr-head-user"]', f"erin@{mine}")
    assert not page.finds("#hamr-system-input-max") and not page.finds("#hamr-system-reset")
    assert page.finds("#hamr-domain-input-max") and page.finds("#hamr-user-input-max")
    page.shot("domain-admin-hamr")

    # A system-only section asked for by its address: back to Domains & users.
    page.open("/#queue")
    page.visible("#sec-domains")
    assert not page.find("#sec-queue").is_displayed()


def test_errors_warnings_and_expired_session(page, postern, sql):
    """The API's refusals and warnings are shown as they come; when the session is gone the
    next request brings the login form back."""
    web_changed(postern)
    page.login()
    page.section("relay")
    page.fill("#relay-network", "not-a-network")
    page.click('#relay-network-form button[type="submit"]')
    error = page.message("error", "not-a-network")
    page.shot("relay-error")
    # Allowed while the mode is none: done, with the command's warning.
    page.fill("#relay-network", "198.51.100.0/24")
    page.click('#relay-network-form button[type="submit"]')
    page.message("ok", "198.51.100.0/24")
    assert "relay.mode is none" in page.message("warning", "relay")
    page.visible('[data-test="relay-network-row"][data-network="198.51.100.0/24"]')
    page.shot("relay-warning")
    assert "not-a-network" in error
    assert not page.finds('#messages [data-test="msg-error"]')  # replaced by this outcome

    # The session ends on the server: the next request shows the login form.
    sql("DELETE FROM web_sessions WHERE admin_id = (SELECT id FROM web_admins WHERE name = %s)",
        (ADMIN,))
    page.click('#nav a[data-section="domains"]')
    page.visible("#login-form", "the login form once the session is gone")
    assert "session has ended" in page.text("#login-error")
    page.shot("session-ended")
    page.fill("#login-user", ADMIN)
    page.fill("#login-password", ADMIN_PW)
    page.click("#login-submit")
    page.wait_text("#whoami", ADMIN)


def test_hamr_status_reenables_a_disabled_account(page, postern, mailctl, new_user):
    """An account HAMR disabled shows in the HAMR section (the user's column) and in HAMR
    status; the status page's Re-enable lets it send again."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}: HAMR needs it")
    pw = "Hamr-status-pw-1"
    user = new_user(pw)
    mailctl("hamr", "set", "--user", user, "--enabled", "on", "--max", "1", "--interval", "600",
            "--action", "disable", "--alert", "off")
    postern.limiter_sync()
    fe = postern.frontend()
    assert submit(fe, user, pw, user, token())[0] == 250
    refused = submit(fe, user, pw, user, token())
    assert refused[0] == 550 and "disabled" in refused[1].lower(), refused

    page.login()
    page.section("hamr")
    page.select("#hamr-domain", DOMAIN)
    page.wait(lambda: [o for o in page.finds("#hamr-user option")
                       if o.get_attribute("value") == user],
              f"{user} among the users")
    page.select("#hamr-user", user)
    page.wait_text('[data-test="hamr-send-disabled"]', user + " may not send")
    wait_hamr(page, "user", "action", "disable", "user")
    page.shot("hamr-user-disabled")

    page.section("hamr-status")
    row = f'[data-test="disabled-row"][data-address="{user}"]'
    page.visible(row, f"{user} among the disabled accounts")
    page.shot("hamr-status-disabled")
    page.click(row + ' [data-test="enable"]')
    page.message("ok", user + " may send again")
    page.gone(row, f"{user} off the disabled accounts")
    page.shot("hamr-status-reenabled")
    shown = json.loads(mailctl("--json", "hamr", "show", "--user", user).stdout)
    assert shown["send_disabled"] is None, shown
    mailctl("hamr", "set", "--user", user, "--max", "100")
    postern.limiter_sync()
    wait_until(lambda: submit(fe, user, pw, user, token())[0] == 250, timeout=30,
               what=f"{user} to send again after the console's re-enable")


def test_system_forms_round_trip(page, postern, mailctl):
    """The forms of the other sections do what they say, as mailctl shows: relay mode, TLS
    policy, transport, exempt network, a service's harvesting setting, alert address, admin;
    the queue's retry of an empty queue."""
    web_changed(postern)
    tls_domain, tr_domain = unique("tls-") + ".example", unique("tr-") + ".example"
    other_admin = unique("second-admin-")
    page.login()
    try:
        page.section("relay")
        page.select("#relay-mode", "select")
        page.click("#relay-mode-save")
        page.message("ok", "Relay mode: select")
        assert json.loads(mailctl("--json", "relay", "list").stdout)["mode"] == "select"

        page.fill("#tls-domain", tls_domain)
        page.select("#tls-policy", "verify")
        page.click('#tls-form button[type="submit"]')
        tls_row = f'[data-test="tls-row"][data-domain="{tls_domain}"]'
        assert "verify" in page.visible(tls_row).text
        policies = json.loads(mailctl("--json", "relay", "tls-policy").stdout)["tls_policies"]
        assert {"domain": tls_domain, "policy": "verify"}.items() <= \
            next(p for p in policies if p["domain"] == tls_domain).items()

        page.fill("#transport-domain", tr_domain)
        page.fill("#transport-destination", "192.0.2.25:2525")
        page.click('#transport-form button[type="submit"]')
        tr_row = f'[data-test="transport-row"][data-domain="{tr_domain}"]'
        assert "192.0.2.25" in page.visible(tr_row).text and "2525" in page.text(tr_row)
        page.shot("relay-forms")
        page.click(tls_row + " button")
        page.gone(tls_row)
        page.click(tr_row + ' button.danger')
        page.click(tr_row + ' [data-test="confirm-yes"]')
        page.gone(tr_row)
        assert tr_domain not in mailctl("transport", "list").stdout

        page.section("harvest")
        page.fill("#exempt-network", "192.0.2.0/24")
        page.click('#exempt-form button[type="submit"]')
        ex_row = '[data-test="exempt-row"][data-network="192.0.2.0/24"]'
        page.visible(ex_row)
        page.select("#harvest-service", "web")
        page.fill("#harvest-input-max_failures", "4")
        page.click("#harvest-save")
        page.message("ok", "(web)")
        page.wait(lambda: (page.text("#harvest-web-max_failures"),
                           page.find("#harvest-web-max_failures").get_attribute("data-source"))
                  == ("4", "web"), "web's max_failures to show 4 from web")
        shown = json.loads(mailctl("--json", "harvest", "show").stdout)["services"]
        assert shown["web"]["max_failures"] == {"value": "4", "source": "web"}, shown
        page.shot("harvest-forms")
        page.select("#harvest-service", "web")
        page.click("#harvest-unset-max_failures")
        page.click("#harvest-unset")
        page.message("ok", "Unset max_failures (web)")
        page.wait(lambda: page.find("#harvest-web-max_failures").get_attribute("data-source")
                  != "web",
                  "web's max_failures back to the system's")
        page.click(ex_row + " button.danger")
        page.click(ex_row + ' [data-test="confirm-yes"]')
        page.gone(ex_row)

        page.section("alerts")
        address = "ops-" + unique("a") + "@" + DOMAIN
        page.fill("#alert-address", address)
        page.click('#alert-form button[type="submit"]')
        page.message("ok", address)
        al_row = f'[data-test="alert-address-row"][data-address="{address}"]'
        page.visible(al_row)
        page.click(al_row + " button.danger")
        page.click(al_row + ' [data-test="confirm-yes"]')
        page.gone(al_row)

        page.section("admins")
        page.fill("#admin-add-name", other_admin)
        page.select("#admin-add-role", "domain")
        page.fill("#admin-add-domains", DOMAIN)
        page.fill("#admin-add-password", "Second-admin-pw-1")
        page.click('#admin-add-form button[type="submit"]')
        page.message("ok", other_admin)
        ad_row = f'[data-test="admin-row"][data-name="{other_admin}"]'
        assert DOMAIN in page.visible(ad_row).text and "domain" in page.text(ad_row)
        page.click(ad_row + " button")
        page.fill("#admin-passwd-new", "Second-admin-pw-2")
        page.click('#admin-passwd-form button[type="submit"]')
        page.message("ok", "Password of " + other_admin)
        page.shot("admins-forms")
        page.click(ad_row + " button.danger")
        page.click(ad_row + ' [data-test="confirm-yes"]')
        page.gone(ad_row)
        assert other_admin not in mailctl("admin", "list").stdout

        page.section("queue")
        page.visible("#queue-table table")
        page.click("#queue-retry-all")
        page.message("ok", "retried now")
        page.no_errors_shown()
    finally:
        mailctl("relay", "tls-policy", tls_domain, "--unset", check=False)
        mailctl("transport", "del", tr_domain, check=False)
        mailctl("harvest", "unset", "--service", "web", "--all", check=False)
        mailctl("admin", "del", other_admin, check=False)


def test_every_section_renders(page, postern, mailctl):
    """Every section of the console loads without an error message or a CSP violation; the
    dashboard refreshes by itself. Saves a screenshot of each, and docs/console.png."""
    mailctl("alert-address", "add", "postmaster@" + DOMAIN, check=False)
    with postern.smtplib_client("mx") as s:  # something to count
        for i in range(3):
            s.sendmail("news@sender.example", [ALICE], f"Subject: figure {i}\r\n\r\nHello.\r\n")
    page.login()
    page.visible("#fig-users")
    first = page.text("#dash-updated")
    page.wait(lambda: page.text("#dash-updated") not in (first, "")
              and "Updated" in page.text("#dash-updated"),
              "the dashboard to refresh by itself", timeout=20)
    users = postern.sql("SELECT count(*) FROM users")[0][0]
    page.wait(lambda: page.text('#fig-users [data-test="fig-value"]') == str(users),
              f"the dashboard to count {users} users")
    page.wait(lambda: int(page.find('#fig-messages_hour [data-test="fig-value"]').text) >= 3,
              "the dashboard to count the messages")
    page.no_errors_shown()
    page.shot("dashboard")
    # The README's picture: the dashboard in a window of a usual size, kept with the other
    # screenshots; copied to docs/ when there is none yet or when asked to.
    size = page.d.get_window_size()
    page.d.set_window_size(1366, 680)
    try:
        page.d.save_screenshot(str(ARTIFACTS / "console.png"))
    finally:
        page.d.set_window_size(size["width"], size["height"])
    if os.environ.get("POSTERN_WEB_DOCS_SHOT") or not DOCS_SHOT.exists():
        DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "console.png", DOCS_SHOT)

    expect = {
        "domains": f'[data-test="domain-row"][data-name="{DOMAIN}"]',
        "relay": "#relay-networks-table table",
        "hamr": "#hamr-system-max",
        "hamr-status": "#hamr-disabled-table table",
        "harvest": "#harvest-smtp-max_failures",
        "alerts": f'[data-test="alert-address-row"][data-address="postmaster@{DOMAIN}"]',
        "queue": "#queue-table table",
        "admins": f'[data-test="admin-row"][data-name="{ADMIN}"]',
    }
    for section, ready in expect.items():
        page.section(section)
        page.visible(ready, f"{section} to load")
        page.no_errors_shown()
        page.shot(section)
    assert not page.finds('[data-test="load-error"]')
