"""PostgreSQL stopped while pop3d runs: logins and commands that need the database get
-ERR [SYS/TEMP], sessions survive, nothing is deleted, and pop3d recovers on its own."""

import pytest

from support import plain_response, token, wait_until
from test_pop3 import Pop3, deliver, tricky_message


@pytest.fixture
def pg_restored(postern):
    """PostgreSQL runs again after the test, and pop3d and smtpd use it again."""
    try:
        yield
    finally:
        postern.pg_start()


def can_log_in(postern, address, password):
    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, timeout=60) as p:
        r = p.auth_plain(address, password)
        if r.startswith("+OK"):
            p.ok("QUIT")
            return True
        return False


def test_database_down_gives_sys_temp(postern, new_user, pg_restored):
    if not postern.has_pop3d:
        pytest.skip(f"pop3d is not built in {postern.bin}")
    password = "Pg-down-pw-1"
    address = new_user(password)
    deliver(postern, address, tricky_message(token()))
    uids = [uid for uid, _, _ in postern.inbox(address)]

    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, timeout=60) as p:
        p.login(address, password)
        p.ok("DELE 1")
        postern.pg_stop()
        # Listing commands work from the session's copy; reading needs the database.
        assert p.ok("STAT").startswith("+OK 0 ")
        p.err("RETR 1")
        p.ok("RSET")
        p.err("RETR 1", "SYS/TEMP")
        p.ok("NOOP")  # the session survives
        p.ok("DELE 1")
        r = p.err("QUIT", "SYS/TEMP")
        assert "no messages were deleted" in r, r
        assert p.closed_by_server()

    with Pop3(postern.pop3s, postern.tls_context(), implicit_tls=True, timeout=60) as p:
        p.err(f"AUTH PLAIN {plain_response(address, password)}", "SYS/TEMP")
        p.ok("CAPA")  # still talking
        p.multi()
    assert postern.services["pop3d"].alive()

    postern.pg_start()
    other_pw = "Pg-down-pw-2"
    other = new_user(other_pw)
    wait_until(lambda: can_log_in(postern, other, other_pw), timeout=90,
               what="pop3d to serve logins again")
    # The lock of the session whose QUIT failed could not be given back while the database
    # was down: pop3d keeps trying, so its user is not locked out for the lease (120 s).
    wait_until(lambda: can_log_in(postern, address, password), timeout=30,
               what="the lock of the session cut off by the outage to be released")
    assert [uid for uid, _, _ in postern.inbox(address)] == uids
