"""Reading `runtime.json`: is a meter running for this home, and what environment routes a client to it."""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import Any

from halton_meter.errors import NotRunningError
from halton_meter.paths import Paths

NO_PROXY = "localhost,127.0.0.1,::1"


def read_runtime(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(paths.runtime.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("edge_port"), int) else None


def port_answers(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def require_running(paths: Paths) -> dict[str, Any]:
    """The runtime of a live meter, or NotRunningError (exit 5) naming the fix."""
    runtime = read_runtime(paths)
    if runtime is None:
        raise NotRunningError(
            f"no meter is running for {paths.home}; start one with `halton-meter serve` (in another terminal)"
        )
    if not port_answers(runtime["edge_port"]):
        raise NotRunningError(
            f"the meter's proxy port 127.0.0.1:{runtime['edge_port']} does not answer (stale {paths.runtime}); "
            "start it again with `halton-meter serve`"
        )
    return runtime


def metering_env(runtime: dict[str, Any], project: str | None = None) -> dict[str, str]:
    """Environment that sends a client's HTTPS through the edge and makes it trust our CA.

    Both spellings of the proxy variables: curl reads only the lowercase `http_proxy`, and some tools only
    the uppercase ones. The bundle is certifi's roots plus our CA, so other hosts still verify normally.

    With a project, it rides in the proxy URL's credentials (`http://project:NAME@127.0.0.1:PORT`: clients
    send it as Proxy-Authorization on every CONNECT, the edge strips it) and in HALTON_METER_PROJECT, so
    it survives child processes either way.
    """
    userinfo = f"project:{urllib.parse.quote(project, safe='')}@" if project else ""
    proxy = f"http://{userinfo}127.0.0.1:{runtime['edge_port']}"
    bundle = runtime["client_bundle"]
    env = {
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "NODE_EXTRA_CA_CERTS": bundle,
    }
    if project:
        env["HALTON_METER_PROJECT"] = project
    return env
