"""The outbound queue's depth on the notifier's /metrics: postern_outbound_queue_messages and
postern_outbound_queue_oldest_seconds follow the table outbound_queue, and keep their last
value while PostgreSQL is down.

The harness's notifier has no HEALTH_PORT, so this module starts a notifier of its own with
one and QUEUE_REFRESH=1 (a refresh every second instead of every 15), and stops it (clean
exit and sanitizer-clean log checked) when the module is done: it would take every alert a
second time."""

import time
import urllib.request

import pytest

from support import ALICE, ALICE_PW, OUTSIDE, free_ports, submit, token, wait_until

NAME = "notifier-metrics"
MESSAGES = "postern_outbound_queue_messages"
OLDEST = "postern_outbound_queue_oldest_seconds"


def scrape(port):
    """{series: value} from /metrics, or None when it does not answer 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            if r.status != 200:
                return None
            text = r.read().decode()
    except OSError:
        return None
    out = {"#": text}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


@pytest.fixture(scope="module")
def queue_metrics(postern):
    """The health port of a notifier of the module's own; running while the module runs."""
    base = postern.services.get("notifier")
    if base is None:
        pytest.skip("no notifier binary in $POSTERN_BIN")
    for attempt in range(3):
        [port] = free_ports(1)
        env = postern.client_env()
        env.update({"HEALTH_PORT": str(port), "QUEUE_REFRESH": "1"})
        # The harness's Service: the check for dead services after each test and the
        # session's log collection see it too.
        svc = type(base)(NAME, base.exe, env, postern.dir / f"{NAME}.log",
                         lambda: scrape(port) is not None)
        try:
            svc.start()
            break
        except RuntimeError:
            svc.kill()
            # Another program took the port between the pick and the bind: pick again.
            if attempt == 2 or 'msg="health endpoint not started"' not in svc.since(svc.started_at):
                raise
    postern.services[NAME] = svc
    try:
        yield port
    finally:
        try:
            postern.stop_service(NAME)
        finally:
            postern.services.pop(NAME, None)


def gauges(port):
    m = scrape(port)
    return m if m and MESSAGES in m and OLDEST in m else None


def test_depth_follows_the_queue(postern, queue_metrics):
    port = queue_metrics
    m = wait_until(lambda: (g := gauges(port)) and g[MESSAGES] == postern.queue_count() and g,
                   what="the gauge to show the rows in outbound_queue")
    assert f"# TYPE {MESSAGES} gauge" in m["#"]
    assert f"# TYPE {OLDEST} gauge" in m["#"]
    before = m[MESSAGES]

    # Mail for another host, submitted by a real client, waits in the queue.
    tok = token()
    code, text = submit(postern.frontend(), ALICE, ALICE_PW, OUTSIDE, tok)
    assert code == 250, text
    [(queue_id, _, _, _)] = postern.queued(tok)
    wait_until(lambda: gauges(port)[MESSAGES] == before + 1, what=f"{MESSAGES} {before + 1}")

    # Its age: the oldest row is two hours old now.
    postern.sql("UPDATE outbound_queue SET created_at = now() - interval '2 hours'"
                " WHERE queue_id = %s", (queue_id,))
    wait_until(lambda: gauges(port)[OLDEST] >= 7200, what=f"{OLDEST} of two hours or more")


def test_database_down_keeps_the_last_value(postern, queue_metrics):
    port = queue_metrics
    svc = postern.services[NAME]
    last = wait_until(lambda: (g := gauges(port)) and g[MESSAGES] == postern.queue_count() and g,
                      what="the gauge to show the rows in outbound_queue")[MESSAGES]
    offset = svc.size()
    postern.pg_stop()
    try:
        wait_until(lambda: 'msg="outbound queue depth unknown' in svc.since(offset), timeout=60,
                   what="the notifier to log that the depth is unknown")
        time.sleep(3)   # a few more refreshes, all failing
        log = svc.since(offset)
        assert log.count('msg="outbound queue depth unknown') == 1, log
        assert gauges(port)[MESSAGES] == last
        assert svc.alive()
    finally:
        postern.pg_start()
    wait_until(lambda: 'msg="outbound queue depth known again"' in svc.since(offset), timeout=60,
               what="the notifier to read the depth again")
    assert gauges(port)[MESSAGES] == postern.queue_count()
    # The front end is back on the database too before the next test goes on.
    wait_until(lambda: submit(postern.frontend(), ALICE, ALICE_PW, ALICE, token())[0] == 250,
               timeout=90, what="smtpd to take mail again")
