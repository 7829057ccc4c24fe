"""Memory: what a session holds is bounded by what it is doing now, and a process over its
memory budget (MEMORY_BUDGET) refuses new sessions with a temporary error.

Each test runs an smtpd of its own, so that its resident size (VmRSS in /proc/PID/status)
is its sessions' doing. POSTERN_MEMORY_SESSIONS (default 50) sets how many sessions send a
message just over smtp.max_message_size (1 MiB here) at once and stay open.

The bounds (per session, over the resident size before the sessions):
  while the messages arrive: LIMIT + 1 MiB  (the message buffer never grows past the limit;
                             the rest is the input buffer, at most 256 KiB, and the session)
  once each has had its 552: 256 KiB        (the message buffer is gone; what is left is the
                             session, its connection and an input buffer that has drained)
Over the budget, the memory a burst of closed TLS sessions left in the heap is handed back
before anyone is refused (the third test).
Under AddressSanitizer freed memory stays in its quarantine and its shadow adds an eighth, so
there every byte a session allocated stays counted: 3 x LIMIT + 1 MiB per session for both.
"""

import os
import re
import resource
import threading
import time

import pytest

from support import ALICE, wait_until

pytestmark = pytest.mark.own_processes

SESSIONS = int(os.environ.get("POSTERN_MEMORY_SESSIONS", "50"))
LIMIT = 1 << 20
MiB = 1 << 20
KiB = 1 << 10
SENDER = "sender@outside.example"
LINE = b"x" * 76 + b"\r\n"


def rss(pid):
    """Resident bytes of a process (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * KiB


def asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def body(size):
    return LINE * (size // len(LINE) + 1)


def open_transaction(fe):
    """A session in DATA, its 354 read."""
    c = fe.connect("mx")
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{ALICE}>", 250)
    c.expect("DATA", 354)
    return c


def drop(c):
    """Hangs up on a session in the middle of its message."""
    if c.sock is not None:
        c.sock.close()
        c.sock = None


def set_limit(postern, mailctl, fe, limit):
    mailctl("config", "set", "smtp.max_message_size", str(limit))
    wait_until(lambda: fe.ehlo_size() == limit, timeout=30, what=f"SIZE {limit} at {fe.name}")


def test_sessions_over_the_size_limit_keep_no_message(postern, mailctl):
    fe = postern.add_smtpd("smtpd-memory")
    pid = fe.service.proc.pid
    clients = []
    try:
        set_limit(postern, mailctl, fe, LIMIT)
        # Warm-up: a message refused and one session gone, so that what is made once per
        # process (database connections, the configuration) is in the baseline.
        with open_transaction(fe) as c:
            c.send(body(LIMIT + 64 * KiB) + b".\r\n")
            c.expect_reply(552, "5.3.4")
        time.sleep(0.5)
        base = rss(pid)
        sanitized = asan(pid)
        peak_per_session = 3 * LIMIT + MiB if sanitized else LIMIT + MiB
        idle_per_session = 3 * LIMIT + MiB if sanitized else 256 * KiB

        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        clients = [open_transaction(fe) for _ in range(SESSIONS)]
        errors = []

        def send(c):
            try:
                c.send(body(LIMIT + 64 * KiB) + b".\r\n")
                c.expect_reply(552, "5.3.4", context="end of an oversized DATA")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        senders = [threading.Thread(target=send, args=(c,)) for c in clients]
        for t in senders:
            t.start()
        for t in senders:
            t.join(120)
        time.sleep(0.5)
        after = rss(pid)
        done.set()
        sampler.join()
        assert not errors, errors[:3]

        print(f"\nsmtpd RSS: baseline {base / MiB:.1f} MiB, peak {peak[0] / MiB:.1f} MiB, "
              f"{SESSIONS} sessions open after 552 {after / MiB:.1f} MiB "
              f"({(after - base) / SESSIONS / KiB:.0f} KiB a session)"
              f"{' (AddressSanitizer)' if sanitized else ''}")
        assert peak[0] <= base + SESSIONS * peak_per_session, (base, peak[0])
        assert after <= base + SESSIONS * idle_per_session, (base, after)
        # Every session is still there and still serves.
        for c in clients:
            c.expect("NOOP", 250)
    finally:
        for c in clients:
            c.close()
        postern.remove_service("smtpd-memory")


def budgeted_smtpd(postern, name, use, headroom):
    """An smtpd whose MEMORY_BUDGET is headroom over the resident size of a first, fresh
    smtpd after use(it); returns it and the budget."""
    probe = postern.add_smtpd(f"{name}-probe")
    use(probe)
    time.sleep(0.5)
    budget = rss(probe.service.proc.pid) + headroom
    postern.remove_service(f"{name}-probe")
    return postern.add_smtpd(name, env={"MEMORY_BUDGET": str(budget)}), budget


def greeting_code(fe):
    with fe.connect("mx") as c:
        return c.greeting.code


def fill_until_refused(fe, one_more, budget):
    """Calls one_more() until a new session gets 421: smtpd going over its budget. (Not
    until the resident size is over it: smtpd hands freed heap back before it refuses.)"""
    def refused():
        if greeting_code(fe) == 421:
            return True
        one_more()
        return False

    wait_until(refused, timeout=60,
               what=f"a new session refused with 421 (budget {budget}, RSS {rss(fe.service.proc.pid)})")


def test_over_the_memory_budget_new_sessions_get_421(postern):
    # The resident size of a fresh smtpd after one transaction, from a first process...
    def one_transaction(probe):
        with open_transaction(probe) as c:
            c.send(body(64 * KiB) + b".\r\n")
            c.expect_reply(250)

    # ...sets the budget of a second one just above it: 16 MiB of headroom.
    fe, budget = budgeted_smtpd(postern, "smtpd-budget", one_transaction, 16 * MiB)
    pid = fe.service.proc.pid
    holders = []
    try:
        with open_transaction(fe) as c:
            c.send(body(64 * KiB) + b".\r\n")
            c.expect_reply(250)
        assert rss(pid) < budget, (rss(pid), budget)
        with fe.connect("mx") as c:
            assert c.greeting.code == 220

        # Messages under way, 4 MiB each and not finished, take it over the budget.
        def one_more():
            c = open_transaction(fe)
            holders.append(c)
            c.send(body(4 * MiB))  # smtpd reads it as it arrives and keeps it
            time.sleep(0.2)

        fill_until_refused(fe, one_more, budget)
        with fe.connect("mx") as c:
            assert c.greeting.code == 421, c.greeting
            assert c.greeting.enh == "4.3.2", c.greeting
            assert c.closed_by_server(5)

        if not asan(pid):
            # The messages' memory goes with their sessions; new sessions are served again.
            for c in holders:
                drop(c)
            holders = []
            wait_until(lambda: greeting_code(fe) == 220, timeout=20,
                       what="new sessions served again")
        log = fe.service.since(fe.service.started_at)
        assert log.count('msg="over the memory budget') == 1, log[-3000:]
    finally:
        for c in holders:
            drop(c)
        postern.remove_service("smtpd-budget")


def test_memory_closed_tls_sessions_freed_does_not_keep_new_ones_out(postern):
    """A burst of TLS sessions takes smtpd over its budget; once they have closed, the heap
    they left in pieces is given back before the budget refuses anyone (glibc keeps it
    resident otherwise), and new sessions are served again."""
    def one_tls_session(probe):
        with probe.connect("smtps") as c:
            assert c.greeting.code == 220

    fe, budget = budgeted_smtpd(postern, "smtpd-tls-budget", one_tls_session, 6 * MiB)
    pid = fe.service.proc.pid
    if asan(pid):
        postern.remove_service("smtpd-tls-budget")
        pytest.skip("under AddressSanitizer freed memory stays in its quarantine: "
                    "nothing is given back to trim")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    held = []
    try:
        def more_tls_sessions():
            assert len(held) < 3000, f"RSS {rss(pid)} still under {budget}"
            for _ in range(25):
                try:
                    c = fe.connect("smtps")
                except (OSError, EOFError):  # refused over the budget (ssl.SSLError is an OSError)
                    return
                held.append(c)
                if c.greeting.code != 220:
                    return

        fill_until_refused(fe, more_tls_sessions, budget)
        for c in held:
            drop(c)
        held = []
        wait_until(lambda: greeting_code(fe) == 220, timeout=20,
                   what=f"new sessions served again once the TLS sessions closed "
                        f"(RSS {rss(pid)}, budget {budget})")
    finally:
        for c in held:
            drop(c)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        postern.remove_service("smtpd-tls-budget")
