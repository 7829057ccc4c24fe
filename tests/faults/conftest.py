"""The fault matrix stands on the end-to-end harness (tests/e2e/conftest.py): the same
private PostgreSQL and nats-server, the same services from $POSTERN_BIN, or the running
compose project named by POSTERN_E2E_COMPOSE. Its session fixtures are loaded here under a
name of their own, so that both directories can be collected in one run."""

import ctypes
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))
_spec = importlib.util.spec_from_file_location("postern_e2e_harness", E2E / "conftest.py")
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)

pb = harness.pb
postern = harness.postern


# PostgreSQL and nats-server detach (their own sessions) and are reparented to whatever reaps
# orphans; after a SIGKILL, a server whose pid is not reaped looks alive to its own restart
# (pg_ctl, the postmaster's lock file, localstack.sh) until it is. On machines whose init reaps
# slowly that would add seconds to every "back after" figure that are not the server's. So this
# process becomes the subreaper of what it starts, and reaps at once the orphans that come to
# it: only those in a session other than its own (the servers and their children), never the
# programs it started itself (their Popen objects read their exit status).
PR_SET_CHILD_SUBREAPER = 36


def _reap_orphans():
    me, my_sid = os.getpid(), os.getsid(0)
    while True:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields: state ppid pgrp session ...
            if fields[0] == "Z" and int(fields[1]) == me and int(fields[3]) != my_sid:
                try:
                    os.waitpid(int(stat.parent.name), os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.05)


if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
    threading.Thread(target=_reap_orphans, name="reaper", daemon=True).start()
