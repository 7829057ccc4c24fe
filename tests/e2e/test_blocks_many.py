"""100,000 active blocks (issue 11). Past about 15,000 blocks the block list no longer fits in
one NATS message, so the limiter hands it out in pages (BlockListRequest paged): every page
stays well under the payload limit, and together they hold every block once, in order. A
front end started afterwards holds all of them from its resync alone: with the limiter
stopped, it refuses at connect an address blocked in the last page (and in the first), serves
one that is not blocked, and a block lifted while it fetched the pages stays lifted.

The blocks go straight into PostgreSQL (one INSERT ... SELECT generate_series) while the
limiter is stopped; it reads them when it starts. The front end of this module is an smtpd of
its own behind a trusted PROXY address, so the test can connect "from" any address. The
figures (resync time, the limiter's CPU for it) are printed: run with -s to see them."""

import os
import re
import time

import pytest

from support import SMTPClient, nats_request, wait_until

pytestmark = [pytest.mark.client_addresses, pytest.mark.own_processes]

N = 100_000
V4 = 90_000              # 10.a.b.c/32 below this index, then IPv6 /64s as the limiter blocks them
REASON = "e2e-many-blocks"
PROXY = "127.0.0.10"     # the trusted proxy of this module's smtpd
NAME = "smtpd-many"
PAGE_LIMIT = 256 * 1024 + 1024  # EV_BLOCK_PAGE_BYTES, and room for the other fields
SYNC_RE = re.compile(r'msg="blocks synchronised" blocks=(\d+) exempt=(\d+) pages=(\d+) '
                     r'changes_meanwhile=(\d+) ms=(\d+)')

INSERT_SQL = """
INSERT INTO blocks (network, service, reason, since, until, offense)
SELECT CASE WHEN i < %(v4)s
            THEN ('10.' || (i >> 16) || '.' || ((i >> 8) & 255) || '.' || (i & 255))::cidr
            ELSE ('2001:db8:' || to_hex(i >> 16) || ':' || to_hex(i & 65535) || '::/64')::cidr
       END,
       'smtp', %(reason)s || ' #' || i, now(), now() + interval '2 hours', 1
FROM generate_series(0, %(n)s - 1) AS i
"""


def cpu_seconds(pid):
    """User and system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limiter_pid(postern):
    return postern.services["limiter"].proc.pid


@pytest.fixture
def many_blocks(postern):
    """N active blocks in PostgreSQL and in the limiter (read at its start, so nothing is
    broadcast); afterwards deleted the same way, and the limiter restarted. Per test, after
    the harness's reset of the limiter's state (which lifts blocks one by one)."""
    if "limiter" not in postern.services:
        pytest.skip(f"no limiter in {postern.bin}")
    svc = postern.services["limiter"]
    postern.stop_limiter()
    try:
        postern.sql(INSERT_SQL, {"v4": V4, "n": N, "reason": REASON})
        started = time.monotonic()
        postern.start_limiter()  # ready: it answers the first page
        ready_s = time.monotonic() - started
        log = svc.since(svc.started_at)
        m = re.search(r'msg="blocks loaded" count=(\d+)', log)
        assert m and int(m.group(1)) == N, log[-3000:]
        print(f"\nlimiter start with {N} blocks in PostgreSQL: ready after {ready_s:.2f} s")
        yield
    finally:
        postern.remove_service(NAME)
        postern.stop_limiter()
        postern.sql("DELETE FROM blocks WHERE reason LIKE %s", (REASON + " #%",))
        postern.start_limiter()


def fetch_pages(postern):
    """Every page of the list, asked as a front end asks: [(payload bytes, BlockList)]."""
    pb = postern.pb
    pages, after = [], ""
    while True:
        raw = nats_request(postern.env["NATS_URL"], "postern.limiter.blocks",
                           pb.BlockListRequest(paged=True, after=after).SerializeToString())
        assert raw is not None, f"no answer for the page after {after!r}"
        page = pb.BlockList.FromString(raw)
        pages.append((len(raw), page))
        assert len(pages) < 10_000, "the pages do not end"
        if not page.more:
            return pages
        assert page.next_after > after and page.next_after == page.blocks[-1].network
        after = page.next_after


def proxied_greeting(fe, client):
    """The greeting a connection through the trusted proxy, from client, gets."""
    c = SMTPClient(fe.mx, source=PROXY, timeout=30)
    try:
        family = "TCP6" if ":" in client else "TCP4"
        local = "::1" if family == "TCP6" else "127.0.0.1"
        c.send(f"PROXY {family} {client} {local} 40000 25\r\n".encode())
        return c.reply()
    finally:
        c.close()


def start_frontend(postern):
    """This module's smtpd, started (or started again) now; returns (Frontend, Service)."""
    if NAME in postern.services:
        postern.stop_service(NAME)
        postern.start_service(NAME)
    else:
        postern.add_smtpd(NAME, env={"PROXY_TRUSTED_NETWORKS": f"{PROXY}/32"})
    return postern.frontend(NAME), postern.services[NAME]


def synchronised(svc):
    """The figures of the front end's first resync since it started, or None yet."""
    m = SYNC_RE.search(svc.since(svc.started_at))
    return m and {k: int(v) for k, v in zip(("blocks", "exempt", "pages", "changes", "ms"),
                                            m.groups())}


def test_block_list_in_pages(postern, many_blocks):
    pages = fetch_pages(postern)
    networks = [b.network for _, page in pages for b in page.blocks]
    assert len(networks) == N and len(set(networks)) == N
    assert networks == sorted(networks)
    assert all(size <= PAGE_LIMIT for size, _ in pages), max(size for size, _ in pages)
    assert all(page.total >= N for _, page in pages)
    assert all(not page.exempt for _, page in pages[1:])
    print(f"\n{N} blocks in {len(pages)} pages, largest {max(s for s, _ in pages)} bytes")


def test_front_end_copy_from_resync(postern, many_blocks):
    pages = fetch_pages(postern)
    first_net = pages[0][1].blocks[0].network           # 10.0.0.0/32
    lifted_net = pages[0][1].blocks[1].network          # lifted during the front end's resync
    last_net = pages[-1][1].blocks[-1].network          # an IPv6 /64 of the last page
    last_addr = last_net.split("/")[0].rstrip(":") + "::7"
    lifted_addr = lifted_net.split("/")[0]
    assert ":" in last_net and first_net.startswith("10."), (first_net, last_net)

    # One resync of N blocks, alone: its time at the front end, the limiter's CPU for it.
    cpu_before = cpu_seconds(limiter_pid(postern))
    fe, svc = start_frontend(postern)
    first = wait_until(lambda: synchronised(svc), timeout=120,
                       what=f"{NAME} to synchronise its blocks")
    cpu = cpu_seconds(limiter_pid(postern)) - cpu_before
    assert first["blocks"] == N, first
    print(f"\nresync of {first['blocks']} blocks: {first['pages']} pages in {first['ms']} ms at "
          f"the front end; limiter CPU {cpu * 1000:.0f} ms")

    # Again, and a block of the first page lifted by an administrator as the front end
    # starts: it must not come back with the pages (whether the lift comes during or after
    # the resync).
    fe, svc = start_frontend(postern)
    postern.mailctl("harvest", "unblock", lifted_addr)
    second = wait_until(lambda: synchronised(svc), timeout=120,
                        what=f"{NAME} to synchronise its blocks again")
    print(f"second resync: {second}")
    wait_until(lambda: proxied_greeting(fe, lifted_addr).code == 220, timeout=60,
               what=f"the lifted {lifted_addr} to be served")

    # Without the limiter, from the front end's copy alone.
    postern.stop_limiter()
    try:
        for addr in (last_addr, "10.0.0.0"):
            g = proxied_greeting(fe, addr)
            assert g.code == 554 and "blocked" in g.text, (addr, g)
        for addr in ("10.200.0.1", "2001:db8:7:1::1", lifted_addr):
            assert proxied_greeting(fe, addr).code == 220, addr
    finally:
        postern.start_limiter()
