"""Schemathesis hooks for tests/schemathesis/run: authenticate every case as a logged-in
operator, and keep that login alive while schemathesis exercises the routes that end it.

The fuzzed API is free to log out (DELETE /api/v1/session), revoke its own token
(DELETE /api/v1/tokens/{id}) or set its own password (PATCH /api/v1/users/{id},
PUT /api/v1/me/password). Each of those is a correct answer from the server, but it ends
the credential schemathesis was using, and every later case would be a 401. So:

- the credential is a Bearer API token minted from a session of a dedicated operator
  (OUTPOST_ST_EMAIL), not admin@outpost.local (the fuzzer replays e-mails it has seen in
  responses on POST /api/v1/session and trips their per-e-mail throttle). If our own
  login is refused all the same, a fresh operator is created with
  `outpost-controller user create-operator` (OUTPOST_ST_BIN, OUTPOST_ST_DATA) and used;
- our own logins go out from 127.0.0.2, so the per-address login throttle that the
  fuzzer's wrong-password logins (from 127.0.0.1) run into never refuses them;
- after_call watches for the four events above and marks the token stale (learning the
  new password when the fuzzer set one); the next case mints a fresh token.

Nothing here changes what schemathesis checks: every check runs on every case.
"""

import atexit
import base64
import json
import os
import secrets
import subprocess
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
    "email": EMAIL,
    "password": os.environ["OUTPOST_ST_PASSWORD"],
    "operators": 1,
    "cookie": None,  # our session (never handed to schemathesis)
    "user_id": None,
    "token": None,  # the Bearer secret schemathesis uses
    "token_id": None,
    "stale": True,
    "retired": set(),  # our earlier secrets, ended by the fuzzer
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


def _new_operator():
    """Our operator's login was refused (throttled by the fuzzer's guesses): make another."""
    binary, data_dir = os.environ.get("OUTPOST_ST_BIN"), os.environ.get("OUTPOST_ST_DATA")
    if not binary or not data_dir:
        return False
    n = _state["operators"] + 1
    email = EMAIL.replace("@", f"+{n}@", 1)
    password = "St-" + secrets.token_urlsafe(18)
    r = subprocess.run(
        [binary, "user", "create-operator", "--data-dir", data_dir, "--email", email,
         "--name", f"Schemathesis operator {n}"],
        input=password + "\n", text=True, capture_output=True, timeout=60,
    )
    if r.returncode != 0:
        print(f"st_hooks: create-operator failed: {r.stderr.strip()}", file=sys.stderr)
        return False
    _state.update(email=email, password=password, operators=n, cookie=None)
    return True


def _login():
    for attempt in range(2):
        status, set_cookie, data = _request(
            "POST", "/api/v1/session", {"email": _state["email"], "password": _state["password"]}
        )
        if status == 200 and set_cookie:
            break
        if attempt == 0 and status in (401, 403, 429) and _new_operator():
            continue
        raise RuntimeError(f"harness login as {_state['email']} failed: {status} {data[:300]!r}")
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
            if _state["token"] is not None:
                _state["retired"].add(_state["token"])
            _state.update(token=t["secret"], token_id=t["id"], stale=False)
            _state["mints"] += 1
            return
        if status == 401 and attempt == 0:  # our session was ended too: log in again
            _state["cookie"] = None
            continue
        raise RuntimeError(f"harness could not mint an API token: {status} {data[:300]!r}")


_agent = {"credential": None, "site_id": None, "enrollments": 0}


def _enroll_agent():
    """An agent of our own: a site of the operator, a single-use token for it, and the
    enrollment that trades the token for the agent's credential (`opa_…`)."""
    with _lock:
        if _state["cookie"] is None:
            _login()
        cookie = {"cookie": _state["cookie"]}
    if _agent["site_id"] is None:
        status, _, data = _request("POST", "/api/v1/sites", {"name": f"schemathesis agent site {secrets.token_hex(4)}"}, cookie)
        if status != 201:
            raise RuntimeError(f"harness could not create the agent's site: {status} {data[:300]!r}")
        _agent["site_id"] = json.loads(data)["id"]
    status, _, data = _request("POST", f"/api/v1/sites/{_agent['site_id']}/enrollment-tokens", {}, cookie)
    if status != 201:
        raise RuntimeError(f"harness could not create an enrollment token: {status} {data[:300]!r}")
    token = json.loads(data)["secret"]
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    status, _, data = _request(
        "POST",
        "/agent/v1/enroll",
        {"token": token, "wireguard_public_key": key, "hostname": "schemathesis-agent",
         "agent_version": "schemathesis", "protocol_version": 1},
    )
    if status != 200:
        raise RuntimeError(f"harness could not enroll its agent: {status} {data[:300]!r}")
    _agent["credential"] = json.loads(data)["credential"]
    _agent["enrollments"] += 1
    return _agent["credential"]


@schemathesis.auth(refresh_interval=None).apply_to(path_regex=r"^/agent/v1/(state|ack|events|rotate-key|rotate-key/confirm)$")
class AgentCredential:
    """The `agent` security scheme: an enrolled agent's own credential, for the routes
    agents call after enrolling (re-enrolled when the server stops taking it)."""

    def get(self, case, ctx):
        return _agent["credential"] or _enroll_agent()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth(refresh_interval=None).skip_for(path_regex=r"^/agent/v1/(state|ack|events|rotate-key|rotate-key/confirm)$")
class OperatorToken:
    def get(self, case, ctx):
        return _current()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _current():
    with _lock:
        if _state["stale"]:
            _mint()
        return _state["token"]


@schemathesis.hook
def before_call(context, case, kwargs):
    # Some phases build a batch of cases before sending any: a case built before the
    # logout that preceded it still carries the ended secret. Swap in the live one
    # (only our own ended secrets; a credential the fuzzer made up is left alone).
    # A valid long poll waits as long as it asks (up to 60 s), longer than schemathesis
    # waits for an answer (10 s): send those with wait=0. The wait itself is tested by the
    # agent's sync tests; values the schema refuses are left as generated, so the server
    # is still seen refusing them.
    if case.operation.path == "/agent/v1/state" and isinstance(case.query, dict):
        w = case.query.get("wait")
        if isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 60:
            case.query["wait"] = 0
    headers = case.headers or {}
    for name in list(headers):
        sent = headers[name]
        if name.lower() != "authorization" or not isinstance(sent, str) or not sent.startswith("Bearer "):
            continue
        secret = sent[len("Bearer "):]
        if secret in _state["retired"] or (_state["stale"] and secret == _state["token"]):
            headers[name] = f"Bearer {_current()}"


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


@atexit.register
def _report():
    print(
        f"st_hooks: {_state['mints']} API token(s) minted, {_state['logins']} harness login(s) "
        f"from {SOURCE_ADDR}, {_state['operators']} operator(s) (each re-mint follows the fuzzer ending the previous credential), "
        f"{_agent['enrollments']} agent enrollment(s)",
        file=sys.stderr,
    )
