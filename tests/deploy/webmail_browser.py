"""The webmail (Roundcube) in a headless Chromium, as a user would use it; run by
tests/deploy/e2e_webmail.sh against the compose stack, with Debian's chromium, chromium-driver
and python3-selenium:

    /usr/bin/python3 tests/deploy/webmail_browser.py --url https://127.0.0.1:PORT/ \\
        --tls-name NAME --ca CERT.pem --user alice@D --password PW --subject S --body B \\
        --to bob@D --to-password PW2 --imaps-port PORT --artifacts DIR

1. HTTPS: the webmail presents the stack's certificate (checked against CA for NAME), speaks
   TLS 1.2 and 1.3, and refuses TLS 1.1 and plain HTTP.
2. Logs in as --user, finds the message with --subject in the list, opens it and reads --body.
3. Writes a message to --to and sends it (Roundcube: smtpd's submission port, STARTTLS, AUTH),
   and finds it in the Sent folder.
4. Over IMAPS (imaplib, the certificate checked), --to has it in INBOX; --user's Sent folder
   has the copy Roundcube saved.
A screenshot of every step goes to --artifacts (and one of the failure, when there is one).
"""

import argparse
import http.client
import imaplib
import socket
import ssl
import sys
import time
import warnings
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30   # seconds for any one thing to show in the page


def say(msg):
    print(f"   {msg}", flush=True)


# ---- 1. HTTPS ------------------------------------------------------------------------------
def check_https(host, port, tls_name, ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    seen = []
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection((host, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=tls_name) as tls:
                seen.append(tls.version())
    say(f"HTTPS with the stack's certificate for {tls_name}: {', '.join(seen)}")

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")   # so that this side would speak TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with old.wrap_socket(raw) as tls:
                sys.exit(f"the webmail accepted {tls.version()}")
    except ssl.SSLError as e:
        say(f"TLS 1.1 refused ({e.reason})")

    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/")
    status = conn.getresponse().status
    conn.close()
    if status != 400:
        sys.exit(f"plain HTTP on the HTTPS port answered {status}, not 400")
    say("plain HTTP refused (400)")


# ---- 2, 3. the browser ---------------------------------------------------------------------
class Browser:
    def __init__(self, artifacts):
        self.artifacts = artifacts
        self.shots = 0
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,900", "--lang=en-US", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking"):
            opts.add_argument(arg)
        # The stack's certificate is checked above (check_https); Chromium is given no CA.
        opts.set_capability("acceptInsecureCerts", True)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.driver.set_page_load_timeout(60)
        self.wait = WebDriverWait(self.driver, WAIT)

    def shot(self, name):
        self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        say(f"screenshot {path}")

    def find(self, css, visible=True):
        cond = EC.visibility_of_element_located if visible else EC.presence_of_element_located
        return self.wait.until(cond((By.CSS_SELECTOR, css)))

    def text_in(self, css, text):
        self.wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))

    def quit(self):
        self.driver.quit()


def login(b, url, user, password):
    b.driver.get(url)
    b.find("#rcmloginuser")
    b.shot("login-page")
    b.find("#rcmloginuser").send_keys(user)
    b.find("#rcmloginpwd").send_keys(password)
    b.shot("login-filled")
    b.find("#rcmloginsubmit").click()
    try:
        b.find("#messagelist")
    except TimeoutException:
        errors = b.driver.find_elements(By.CSS_SELECTOR, "#messagestack div")
        raise SystemExit("no mailbox after logging in: "
                         + (" / ".join(e.text for e in errors) or b.driver.title))
    say(f"logged in as {user}")


def open_message(b, subject, body):
    row = None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        rows = [r for r in b.driver.find_elements(By.CSS_SELECTOR, "#messagelist tbody tr")
                if subject in r.text]
        if rows:
            row = rows[0]
            break
        # Not listed yet: ask Roundcube to look again (its Refresh command).
        b.driver.execute_script("rcmail.command('checkmail')")
        time.sleep(2)
    if row is None:
        raise SystemExit(f"no message with subject {subject!r} in the list")
    b.shot("inbox")
    say(f"listed: {subject!r}")
    # A double click opens the message on its own page.
    webdriver.ActionChains(b.driver).double_click(row).perform()
    b.text_in("h2.subject", subject)
    b.text_in("#messagebody", body)
    b.shot("message-open")
    say(f"opened: subject and body ({body!r}) shown")


def compose_and_send(b, url, to, subject, body):
    b.driver.get(url.rstrip("/") + "/?_task=mail&_action=compose")
    b.find("#compose-subject")
    # The recipient widget of the Elastic skin: type the address, then a comma.
    to_input = b.find(".recipient-input input")
    to_input.send_keys(to + ",")
    b.find("#compose-subject").send_keys(subject)
    text = b.find("#composebody")
    text.click()
    text.send_keys(body)
    b.shot("compose")
    b.find("button.send, a.send").click()
    try:
        b.wait.until(lambda d: "_action=compose" not in d.current_url)
    except TimeoutException:
        errors = b.driver.find_elements(By.CSS_SELECTOR, "#messagestack div")
        b.shot("send-failed")
        raise SystemExit("the message was not sent: "
                         + (" / ".join(e.text for e in errors) or "no message from Roundcube"))
    say(f"sent to {to}: {subject!r}")
    # Roundcube saved a copy in Sent (made on the first login: create_default_folders).
    b.driver.get(url.rstrip("/") + "/?_task=mail&_mbox=Sent")
    b.text_in("#messagelist tbody", subject)
    b.shot("sent-folder")
    say(f"listed in Sent: {subject!r}")


# ---- 4. IMAP -------------------------------------------------------------------------------
class IMAPS(imaplib.IMAP4_SSL):
    """IMAPS to 127.0.0.1 (the published port), the certificate checked for the stack's name."""

    def __init__(self, port, ctx, tls_name):
        self.tls_name = tls_name
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=30)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.tls_name)


def imap_find(port, tls_name, ca, user, password, folder, subject, body, timeout=60):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    deadline = time.monotonic() + timeout
    while True:
        m = IMAPS(port, ctx, tls_name)
        try:
            m.login(user, password)
            typ, data = m.select(folder, readonly=True)
            found = False
            if typ == "OK" and int(data[0]):
                typ, data = m.fetch(f"1:{int(data[0])}", "(BODY.PEEK[])")
                found = any(isinstance(p, tuple) and subject.encode() in p[1] and body.encode() in p[1]
                            for p in data)
        finally:
            m.logout()
        if found:
            say(f"IMAPS: {user} has {subject!r} in {folder}")
            return
        if time.monotonic() >= deadline:
            raise SystemExit(f"{user} has no {subject!r} in {folder} after {timeout}s")
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    for opt in ("url", "tls-name", "ca", "user", "password", "subject", "body", "to",
                "to-password", "artifacts"):
        ap.add_argument(f"--{opt}", required=True)
    ap.add_argument("--imaps-port", type=int, required=True)
    a = ap.parse_args()
    artifacts = Path(a.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    host_port = a.url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)

    check_https(host, int(port), a.tls_name, a.ca)

    b = Browser(artifacts)
    reply_subject = f"Re: {a.subject} (webmail)"
    reply_body = f"written in Roundcube: {a.body}"
    try:
        login(b, a.url, a.user, a.password)
        open_message(b, a.subject, a.body)
        compose_and_send(b, a.url, a.to, reply_subject, reply_body)
    except (WebDriverException, SystemExit) as e:
        try:
            b.shot("failure")
            (artifacts / "failure.html").write_text(b.driver.page_source)
        except WebDriverException:
            pass
        b.quit()
        if isinstance(e, SystemExit):
            raise
        sys.exit(f"browser: {e.__class__.__name__}: {getattr(e, 'msg', e)}")
    b.quit()

    imap_find(a.imaps_port, a.tls_name, a.ca, a.to, a.to_password, "INBOX", reply_subject, reply_body)
    imap_find(a.imaps_port, a.tls_name, a.ca, a.user, a.password, "Sent", reply_subject, reply_body,
              timeout=10)


if __name__ == "__main__":
    main()
