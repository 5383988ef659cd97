"""The self-test canary: a real HTTPS call through the edge and the core to a host the core answers
itself (`selftest.halton-meter.invalid` never resolves), then a look for its record. Used by `init`'s last
step and by `doctor --curl`."""

from __future__ import annotations

import http.client
import json
import sqlite3
import ssl
import time
import uuid
from typing import Any

from halton_meter.errors import HaltonError
from halton_meter.paths import Paths
from halton_meter.protocol import CANARY_HOST

CANARY_PATH = "/v1/selftest"
CANARY_URL = f"https://{CANARY_HOST}{CANARY_PATH}"
SELF_TEST_TIMEOUT = 15.0


def utc_stamp(offset_seconds: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + offset_seconds)) + ".000000Z"


def canary_request(paths: Paths, edge_port: int, timeout: float = 10.0) -> dict[str, str]:
    """Call the canary through the proxy. Returns one line per hop; HaltonError names the hop that failed."""
    hops: dict[str, str] = {}
    context = ssl.create_default_context(cafile=str(paths.client_bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", edge_port, timeout=timeout, context=context)
    conn.set_tunnel(CANARY_HOST, 443)
    try:
        try:
            conn.connect()
        except ssl.SSLError as exc:
            raise HaltonError(f"TLS to {CANARY_HOST} through the meter failed ({exc.reason}); the CA bundle "
                              f"{paths.client_bundle} does not match the running meter") from None
        except OSError as exc:
            raise HaltonError(f"the proxy at 127.0.0.1:{edge_port} did not open the tunnel ({exc}); "
                              "is the meter running? (halton-meter status)") from None
        hops["edge"] = f"CONNECT {CANARY_HOST}:443 accepted by 127.0.0.1:{edge_port}"
        cert = conn.sock.getpeercert() if conn.sock else None
        # `issuer` is a tuple of RDNs, each ((name, value),); typeshed types every field of the dict as one union
        issuer = dict(x[0] for x in (cert or {}).get("issuer", ()))  # type: ignore[misc]
        hops["tls"] = f"certificate for {CANARY_HOST} issued by {issuer.get('commonName', '?')}"
        body = json.dumps({"model": "halton-meter-selftest", "nonce": str(uuid.uuid4())})
        try:
            conn.request("POST", CANARY_PATH, body=body,
                         headers={"content-type": "application/json", "user-agent": "halton-meter-selftest"})
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HaltonError(f"the core did not answer the self-test ({exc}); see `halton-meter logs`") from None
    finally:
        conn.close()
    if response.status != 200 or response.getheader("x-halton-meter") != "selftest":
        raise HaltonError(f"the self-test got HTTP {response.status} from something other than the core")
    hops["core"] = f"answered HTTP {response.status} itself ({len(payload)} bytes)"
    return hops


def wait_for_record(paths: Paths, since: str, timeout: float = SELF_TEST_TIMEOUT) -> dict[str, Any]:
    """The newest self-test row started at or after `since`; HaltonError if none lands in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = None
        try:
            conn = sqlite3.connect(f"file:{paths.db}?mode=ro", uri=True, timeout=2)
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute("SELECT * FROM calls WHERE endpoint_kind = 'self_test' AND started_at >= ? "
                                   "ORDER BY started_at DESC LIMIT 1", (since,)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            pass
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise HaltonError(f"the self-test call was answered but its record did not land within {timeout:g} s; "
                      "database writes may be failing (halton-meter status)")


def run_self_test(paths: Paths, edge_port: int) -> dict[str, str]:
    since = utc_stamp(-1)
    hops = canary_request(paths, edge_port)
    row = wait_for_record(paths, since)
    hops["record"] = f"landed in {paths.db} (id {row['id'][:8]}…)"
    return hops
