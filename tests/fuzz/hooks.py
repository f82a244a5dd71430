"""Schemathesis hooks of the API fuzz run (tests/fuzz/run.sh).

- `golem_no_server_error`: fails on any 5xx except the documented 501s
  (property queries, encrypted ExeScript calls, the Net API's listen-tcp),
  which must still carry a JSON `message`.
- Real ids: before the first call an offer and a demand that match each other
  (so a proposal exists), an allocation and a VPN network are created on the
  daemon; every other call that has such a path parameter gets the real id
  instead of the generated one, so that the handlers behind the 404s are
  fuzzed too.
- Long-polls: every generated `timeout`/`pollTimeout` query value is cut to
  `GOLEM_FUZZ_POLL_TIMEOUT` seconds (default 0.5) before the call, so that a
  poll ends inside schemathesis' request timeout; a request that still times
  out or loses its connection is reported by schemathesis as an error.
"""

import itertools
import json
import os
import re
import time
import urllib.request

import schemathesis

POLL_TIMEOUT = float(os.environ.get("GOLEM_FUZZ_POLL_TIMEOUT", "0.5"))

# Operations documented to answer 501 (README "REST API limits", the modules' docs).
DOCUMENTED_501 = [
    re.compile(r"^POST /(offers|demands)/\{[^}]+\}/propertyQuery/\{[^}]+\}$"),
    re.compile(r"^POST /activity/\{[^}]+\}/encrypted$"),
    re.compile(r"^GET /net/\{[^}]+\}/listen-tcp/\{[^}]+\}$"),
]

POLL_PARAMETERS = ("timeout", "pollTimeout")

API = os.environ.get("GOLEM_FUZZ_API", "")
APP_KEY = os.environ.get("GOLEM_FUZZ_APPKEY", "")
_real_ids = None
_turn = itertools.count()


def _call(method, path, body=None):
    request = urllib.request.Request(
        API + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def _seed():
    """Resources whose ids replace generated ones (see the module's doc)."""
    ids = {}
    if not API:
        return ids
    subnet = {"golem.node.debug.subnet": "fuzz"}
    ids["offer"] = _call("POST", "/market-api/v1/offers", {"properties": subnet, "constraints": ""})
    ids["demand"] = _call(
        "POST",
        "/market-api/v1/demands",
        {"properties": dict(subnet, **{"golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000}), "constraints": ""},
    )
    deadline = time.time() + 5
    while time.time() < deadline and "proposal" not in ids:
        events = _call("GET", f"/market-api/v1/demands/{ids['demand']}/events?timeout=1&maxEvents=5") or []
        for event in events:
            proposal = (event or {}).get("proposal") or {}
            if proposal.get("proposalId"):
                ids["proposal"] = proposal["proposalId"]
    allocation = _call(
        "POST",
        "/payment-api/v1/allocations",
        {"totalAmount": "10", "paymentPlatform": "dummy-local-tglm", "makeDeposit": False},
    )
    ids["allocation"] = (allocation or {}).get("allocationId")
    network = _call("POST", "/net-api/v1/net", {"ip": "192.168.77.0", "mask": "255.255.255.0"})
    ids["network"] = (network or {}).get("id")
    return ids


def _with_real_ids(case):
    global _real_ids
    if _real_ids is None:
        try:
            _real_ids = _seed()
        except Exception as error:  # the fuzz run goes on with generated ids only
            print(f"hooks: cannot create the resources for real ids: {error}")
            _real_ids = {}
    if not case.path_parameters or next(_turn) % 2:
        return
    path = case.operation.path
    side = "offer" if path.startswith("/offers") else "demand"
    wanted = {
        "subscriptionId": _real_ids.get(side),
        "proposalId": _real_ids.get("proposal"),
        "allocationId": _real_ids.get("allocation"),
        "networkId": _real_ids.get("network"),
    }
    for name, value in wanted.items():
        if value and name in case.path_parameters:
            case.path_parameters[name] = value


def _documented_501(label: str) -> bool:
    return any(pattern.match(label) for pattern in DOCUMENTED_501)


@schemathesis.check
def golem_no_server_error(ctx, response, case):
    """No 5xx, except a documented 501 with a message."""
    status = response.status_code
    if status < 500:
        return None
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if status == 501 and _documented_501(label):
        body = response.json() if response.content else {}
        if isinstance(body, dict) and body.get("message"):
            return None
        raise AssertionError(f"{label}: 501 without a message: {response.text!r}")
    raise AssertionError(f"{label} answered {status}: {response.text[:300]!r}")


@schemathesis.hook
def before_call(context, case, kwargs):
    _with_real_ids(case)
    if not case.query:
        return
    for name in POLL_PARAMETERS:
        value = case.query.get(name)
        if value is None:
            continue
        try:
            if float(value) > POLL_TIMEOUT or float(value) != float(value):
                case.query[name] = POLL_TIMEOUT
        except (TypeError, ValueError):
            pass  # not a number: the daemon must answer 400
