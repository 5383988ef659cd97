"""`doctor --curl`: one real request through edge and core to the loopback canary, read hop by hop.

The row it adds, `check.end-to-end`, is not read-only (the request's self-test record lands in the
database), so it is not a plugin check: the runner adds it only when asked. With curl on the PATH the
request is curl's, and its exit code, `-w` line, headers and `-v` trace say which hop failed; without curl,
Python's http.client sends the same request.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from typing import Any

from halton_meter.errors import HaltonError
from halton_meter.types import Check, CheckContext, CheckResult

PROBE_ID = "check.end-to-end"
PROBE_TIMEOUT = 30.0
PROBE_CURL_MAX_TIME = 10
PROBE_RECORD_TIMEOUT = 10.0

HOPS = ("edge", "tls", "core", "record")
HOP_FIX = {
    "edge": "halton-meter start  (or `halton-meter restart`; why it is down: halton-meter logs)",
    "tls": "halton-meter init  (rewrites the trust bundle), then `halton-meter restart`",
    "core": "halton-meter restart  (why the core failed: halton-meter logs)",
    "record": "halton-meter doctor --only check.db.writes  (why writes fail), and halton-meter logs",
}
_MARKER = "__halton_meter_probe__"
_TLS_EXITS = {35, 51, 53, 54, 58, 59, 60, 66, 77, 80, 82, 83, 90, 91}
"""curl exit codes that mean the TLS handshake or certificate verification failed."""


def _hop(name: str, status: str, detail: str) -> dict[str, str]:
    return {"hop": name, "status": status, "detail": detail}


def _curl_argv(curl: str, paths: Any, port: int) -> list[str]:
    from halton_meter.lifecycle.selftest import CANARY_URL

    body = json.dumps({"model": "halton-meter-selftest", "nonce": str(uuid.uuid4())})
    return [curl, "-sS", "-v", "--noproxy", "", "--proxy", f"http://127.0.0.1:{port}",
            "--cacert", str(paths.client_bundle), "--max-time", str(PROBE_CURL_MAX_TIME),
            "-X", "POST", "-H", "content-type: application/json", "-A", "halton-meter-selftest", "--data", body,
            "-D", "-", "-o", os.devnull,
            "-w", f"{_MARKER} connect=%{{http_connect}} code=%{{http_code}} verify=%{{ssl_verify_result}}",
            CANARY_URL]


def _curl_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("curl: (")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["no output"])[-1]


def curl_hops(result: Any, port: int) -> list[dict[str, str]]:
    """Read what happened at each hop from curl's exit code, its `-w` line, headers and `-v` trace."""
    from halton_meter.ca import CA_COMMON_NAME
    from halton_meter.lifecycle.selftest import CANARY_HOST

    stdout, stderr, code = result.stdout or "", result.stderr or "", result.returncode
    found = re.search(rf"{_MARKER} connect=(\d+) code=(\d+) verify=(\d+)", stdout)
    connect, status, verify = (int(g) for g in found.groups()) if found else (0, 0, -1)
    hops: list[dict[str, str]] = []
    if connect == 200:
        hops.append(_hop("edge", "ok", f"CONNECT {CANARY_HOST}:443 accepted by 127.0.0.1:{port}"))
    else:
        why = f"answered the CONNECT with HTTP {connect}" if connect else _curl_error(stderr)
        hops.append(_hop("edge", "fail", f"127.0.0.1:{port} {why}" if connect else f"127.0.0.1:{port}: {why}"))
        return hops
    issuer_line = re.search(r"^\*\s+issuer:\s*(.+)$", stderr, re.M)
    issuer = issuer_line.group(1).strip() if issuer_line else "an unknown issuer"
    if code in _TLS_EXITS or (verify not in (0, -1)):
        hops.append(_hop("tls", "fail", f"TLS to {CANARY_HOST} failed ({_curl_error(stderr)}); certificate issued by "
                         f"{issuer}"))
        return hops
    if issuer_line and CA_COMMON_NAME not in issuer:
        hops.append(_hop("tls", "fail", f"certificate issued by {issuer}, not this meter's CA: something else "
                         "intercepts TLS"))
        return hops
    hops.append(_hop("tls", "ok", f"certificate for {CANARY_HOST} issued by {issuer}, trusted via the bundle"))
    answered_by_core = re.search(r"^x-halton-meter:\s*selftest\s*$", stdout, re.M | re.I) is not None
    if code == 0 and status == 200 and answered_by_core:
        hops.append(_hop("core", "ok", "answered HTTP 200 itself (x-halton-meter: selftest)"))
    elif code == 28:
        hops.append(_hop("core", "fail", f"no answer within {PROBE_CURL_MAX_TIME} s"))
    elif code != 0:
        hops.append(_hop("core", "fail", f"the request failed: {_curl_error(stderr)}"))
    else:
        hops.append(_hop("core", "fail", f"HTTP {status} from something other than the core"))
    return hops


def python_hops(paths: Any, port: int) -> list[dict[str, str]]:
    """The same request with Python's http.client (`halton_meter.lifecycle.selftest`), when curl is absent."""
    from halton_meter.lifecycle.selftest import canary_request

    try:
        answers = canary_request(paths, port, timeout=PROBE_CURL_MAX_TIME)
    except HaltonError as exc:
        message = exc.message
        hop = "edge" if message.startswith("the proxy") else "tls" if message.startswith("TLS") else "core"
        done = HOPS[: HOPS.index(hop)]
        return [_hop(h, "ok", "passed") for h in done] + [_hop(hop, "fail", message)]
    return [_hop(h, "ok", answers[h]) for h in ("edge", "tls", "core")]


def probe_through_proxy(ctx: CheckContext, runner: Any) -> CheckResult:
    from halton_meter.lifecycle.selftest import utc_stamp, wait_for_record
    from halton_meter.serve.runtime import read_runtime

    data = read_runtime(ctx.paths)
    if data is None:
        return CheckResult("fail", f"no meter is running for {ctx.paths.home}", fix=HOP_FIX["edge"])
    port = int(data["edge_port"])
    since = utc_stamp(-1)
    details: dict[str, Any] = {}
    curl = runner.which("curl") if runner is not None else None
    if curl:
        argv = _curl_argv(curl, ctx.paths, port)
        details["tool"], details["command"] = "curl", shlex.join(argv)
        hops = curl_hops(runner.run(argv, check=False, timeout=PROBE_CURL_MAX_TIME + 5), port)
    else:
        details["tool"] = "python"
        hops = python_hops(ctx.paths, port)
    if all(h["status"] == "ok" for h in hops) and len(hops) == 3:
        try:
            row = wait_for_record(ctx.paths, since, timeout=PROBE_RECORD_TIMEOUT)
            hops.append(_hop("record", "ok", f"landed in {ctx.paths.db} (id {str(row['id'])[:8]}…)"))
        except HaltonError as exc:
            hops.append(_hop("record", "fail", exc.message))
    reached = {h["hop"] for h in hops}
    hops += [_hop(h, "skip", "not reached") for h in HOPS if h not in reached]
    details["hops"] = hops
    failed = next((h for h in hops if h["status"] == "fail"), None)
    if failed is None:
        return CheckResult("ok", f"edge → TLS → core → database: every hop passed ({details['tool']})",
                           details=details)
    return CheckResult("fail", f"{failed['hop']} hop failed: {failed['detail']}", fix=HOP_FIX[failed["hop"]],
                       details=details)


def end_to_end_check(runner: Any, requires: tuple[str, ...] = ("check.edge",)) -> Check:
    return Check(PROBE_ID, "end-to-end probe", lambda ctx: probe_through_proxy(ctx, runner), requires=requires)
