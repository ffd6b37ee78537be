"""Schemathesis hooks for tests/schemathesis/run: authenticate every case as a logged-in
operator, and keep that login alive while schemathesis exercises the routes that end it.

The fuzzed API is free to log out (DELETE /api/v1/session), revoke its own token
(DELETE /api/v1/tokens/{id}) or set its own password (PATCH /api/v1/users/{id},
PUT /api/v1/me/password). Each of those is a correct answer from the server, but it ends
the credential schemathesis was using, and every later case would be a 401. So:

- the credential is a Bearer API token minted from a session of a dedicated operator
  (OUTPOST_ST_EMAIL), which the fuzzer never learns (the spec's own examples name
  admin@outpost.local, whose e-mail throttle the fuzzer may well trip);
- our own logins go out from 127.0.0.2, so the per-address login throttle that the
  fuzzer's wrong-password logins (from 127.0.0.1) run into never refuses them;
- after_call watches for the four events above and marks the token stale (learning the
  new password when the fuzzer set one); the next case mints a fresh token.

Nothing here changes what schemathesis checks: every check runs on every case.
"""

import json
import os
import sys
import threading
import http.client
from urllib.parse import urlsplit

import schemathesis

BASE = os.environ["OUTPOST_ST_URL"]  # e.g. http://127.0.0.1:PORT
EMAIL = os.environ["OUTPOST_ST_EMAIL"]
SOURCE_ADDR = os.environ.get("OUTPOST_ST_SOURCE", "127.0.0.2")

_u = urlsplit(BASE)
_lock = threading.Lock()
_state = {
    "password": os.environ["OUTPOST_ST_PASSWORD"],
    "cookie": None,  # our session (never handed to schemathesis)
    "user_id": None,
    "token": None,  # the Bearer secret schemathesis uses
    "token_id": None,
    "stale": True,
    "mints": 0,
    "logins": 0,
}


def _request(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(_u.hostname, _u.port, timeout=30, source_address=(SOURCE_ADDR, 0))
    h = {"content-type": "application/json", "user-agent": "outpost-st-harness"}
    h.update(headers or {})
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
    r = conn.getresponse()
    data = r.read()
    out = (r.status, r.getheader("set-cookie"), data)
    conn.close()
    return out


def _login():
    status, set_cookie, data = _request(
        "POST", "/api/v1/session", {"email": EMAIL, "password": _state["password"]}
    )
    if status != 200 or not set_cookie:
        raise RuntimeError(f"harness login as {EMAIL} failed: {status} {data[:300]!r}")
    _state["cookie"] = set_cookie.split(";", 1)[0]
    _state["user_id"] = json.loads(data)["user"]["id"]
    _state["logins"] += 1


def _mint():
    for attempt in range(2):
        if _state["cookie"] is None:
            _login()
        status, _, data = _request(
            "POST",
            "/api/v1/tokens",
            {"name": f"schemathesis-{_state['mints']}"},
            {"cookie": _state["cookie"]},
        )
        if status == 201:
            t = json.loads(data)
            _state.update(token=t["secret"], token_id=t["id"], stale=False)
            _state["mints"] += 1
            return
        if status == 401 and attempt == 0:  # our session was ended too: log in again
            _state["cookie"] = None
            continue
        raise RuntimeError(f"harness could not mint an API token: {status} {data[:300]!r}")


@schemathesis.auth(refresh_interval=None)
class OperatorToken:
    def get(self, case, ctx):
        with _lock:
            if _state["stale"]:
                _mint()
            return _state["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@schemathesis.hook
def after_call(context, case, response):
    op = f"{case.method.upper()} {case.path}"
    code = response.status_code
    body = case.body if isinstance(case.body, dict) else {}
    pid = _int((case.path_parameters or {}).get("id"))
    sent = (case.headers or {}).get("Authorization", "")
    ours = _state["token"] is not None and sent == f"Bearer {_state['token']}"
    with _lock:
        if op == "DELETE /api/v1/session" and code == 204 and ours:
            _state["stale"] = True
        elif op == "DELETE /api/v1/tokens/{id}" and code == 204 and pid == _state["token_id"]:
            _state["stale"] = True
        elif op == "PATCH /api/v1/users/{id}" and code == 200 and pid == _state["user_id"]:
            if isinstance(body.get("password"), str):
                # Our own password was set: every session and token of ours has ended.
                _state.update(password=body["password"], cookie=None, stale=True)
        elif op == "PUT /api/v1/me/password" and code == 204:
            if isinstance(body.get("new_password"), str):
                _state.update(password=body["new_password"], cookie=None, stale=True)
