"""webd answers over HTTPS: an admin logs in and lists the domains (the thinnest path)."""
import json
import ssl
import urllib.request

import pytest


def test_login_and_list(postern):
    stack = postern
    if not stack.has_webd:
        pytest.skip("webd is not built")
    stack.mailctl("admin", "add", "smoke", "--password-stdin", input="smoke-pass-1\n", check=False)
    ctx = ssl.create_default_context(cafile=str(stack.cert))
    jar = urllib.request.HTTPCookieProcessor()
    op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), jar)
    req = urllib.request.Request(stack.web_url + "/api/v1/login", method="POST",
                                 data=json.dumps({"user": "smoke", "password": "smoke-pass-1"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with op.open(req) as r:
        assert r.status == 200
        assert "csrf" in json.load(r)
    with op.open(stack.web_url + "/api/v1/domains") as r:
        assert isinstance(json.load(r)["domains"], list)
