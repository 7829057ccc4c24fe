"""The webmail (Roundcube, docker-compose.yml's profile `webmail`) end to end in a headless
Chromium: tests/deploy/e2e_webmail.sh, run here so that `make test` (tests/run.sh deploy,
which runs pytest over tests/deploy) and `make test-deploy` include it. Skipped, with the
reason, only when no Docker engine answers (`docker info`). Screenshots of every step:
build/test-artifacts/webmail/. A few minutes (the first run also builds the images).
Run: /usr/bin/python3 -m pytest -q -rs tests/deploy/test_webmail.py
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "deploy" / "e2e_webmail.sh"


def docker_answers():
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_webmail_in_a_browser():
    if not docker_answers():
        pytest.skip("no Docker engine answers (docker info): the webmail test needs one")
    r = subprocess.run(["sh", str(SCRIPT)], cwd=ROOT, env=dict(os.environ),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=3600)
    print(r.stdout)
    assert r.returncode == 0, f"tests/deploy/e2e_webmail.sh failed:\n{r.stdout[-6000:]}"
