"""HTTP/1 pieces the edge's CONNECT and plain-HTTP paths share: the headers it tells the core, the project in
a client's proxy URL, and its own short answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import urllib.parse

from halton_meter.config import valid_project_name
from halton_meter.protocol import AUTH_HEADER_B, PEER_HEADER_B, PROJECT_HEADER_B, PROXY_HEADER_B

HOP_BY_HOP = frozenset({b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive", b"te",
                        b"trailer", b"upgrade", b"proxy-authenticate"})


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def proxy_project(header_block: bytes) -> str | None:
    """The project in `Proxy-Authorization: Basic base64(project:NAME)` — what a client sends for a proxy
    URL `http://project:NAME@127.0.0.1:PORT` (`halton-meter run --project`). Any other credentials are
    ignored: the edge asks for none."""
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"proxy-authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        project = urllib.parse.unquote(password).strip()
        return project if user == "project" and valid_project_name(project) else None
    return None


def meter_headers(peer: object, project: str | None, server: object = None, secret: bytes = b"") -> list[bytes]:
    """What the edge tells the core about a client: its address and the edge address it connected to (for
    the process lookup: a local port is only unique together with its remote end), the project from its
    proxy URL, percent-encoded so any name fits in a header line, and the core's secret."""
    out = [AUTH_HEADER_B + b": " + secret]
    if isinstance(peer, tuple) and len(peer) >= 2:
        out.append(PEER_HEADER_B + f": {format_host(str(peer[0]))}:{peer[1]}".encode())
        if isinstance(server, tuple) and len(server) >= 2:
            out.append(PROXY_HEADER_B + f": {format_host(str(server[0]))}:{server[1]}".encode())
    if project:
        out.append(PROJECT_HEADER_B + b": " + urllib.parse.quote(project, safe="").encode("ascii"))
    return out


async def answer(writer: asyncio.StreamWriter, status: int, phrase: str, body: bytes) -> None:
    with contextlib.suppress(Exception):
        writer.write(f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                     "connection: close\r\n\r\n".encode() + body)
        await asyncio.wait_for(writer.drain(), 5)


async def reply(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    """The edge's own error answer (the connection closes after it)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = f"halton-meter edge: {reason}\n".encode()
    with contextlib.suppress(Exception):
        writer.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await asyncio.wait_for(writer.drain(), 5)
