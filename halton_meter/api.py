"""The loopback API (default 127.0.0.1:8765). For now only `GET /health`.

Defences from the first line: only loopback `Host` values naming our port are served (DNS rebinding gets
421), no CORS or Private-Network-Access headers are ever sent, headers have a size and time limit, and
every response closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from halton_meter import __version__

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT = 5.0


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


class Api:
    def __init__(self, port: int) -> None:
        self.port = port
        self._hosts = allowed_hosts(port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _send(writer, 431, {"error": "request header too large"})
            return
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            status, body = self.route(head)
        except Exception as exc:  # pragma: no cover - a bug answers 500, never kills the API
            status, body = 500, {"error": f"internal error: {type(exc).__name__}"}
        await _send(writer, status, body)

    def route(self, head: bytes) -> tuple[int, dict[str, Any]]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return 400, {"error": "bad request line"}
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("host", "").lower() not in self._hosts:
            return 421, {"error": "this API only answers to 127.0.0.1, localhost or [::1] with its port"}
        path = target.split("?", 1)[0]
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return 405, {"error": "use GET"}
            # Unauthenticated, so it says nothing beyond "alive" and the version.
            return 200, {"status": "ok", "version": __version__}
        return 404, {"error": f"no such endpoint: {path}"}


async def _send(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    phrases = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               421: "Misdirected Request", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}
    payload = json.dumps(body).encode()
    with contextlib.suppress(Exception):
        writer.write(
            f"HTTP/1.1 {status} {phrases.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n".encode()
            + payload
        )
        await asyncio.wait_for(writer.drain(), 5)
    with contextlib.suppress(Exception):
        writer.close()
