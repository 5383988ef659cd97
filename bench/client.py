"""The load client: raw asyncio streams speaking just enough HTTP/1.1, direct or through a CONNECT proxy.

No HTTP library sits between the clock and the socket: a call is timed from just before its request bytes
are written to just after the last byte of its answer is read (for streams, also when the first and the
last SSE event completed). Connections are kept alive and reused; `fresh_call` opens a new one per call
(TCP connect, CONNECT through the proxy, TLS handshake) to price connection setup.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass

from bench.fake import EVENTS, HOST, PATH

HEADS_LIMIT = 64 * 1024
TIMEOUT = 60.0

_BODY_JSON = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": False,
                         "messages": [{"role": "user", "content": "benchmark call"}]},
                        separators=(",", ":")).encode()
_BODY_SSE = _BODY_JSON.replace(b'"stream":false', b'"stream":true')


def request_bytes(mode: str, close: bool = False) -> bytes:
    body = _BODY_JSON if mode == "json" else _BODY_SSE
    head = (
        f"POST {PATH} HTTP/1.1\r\n"
        f"host: {HOST}\r\n"
        "user-agent: halton-bench/1\r\n"
        "x-api-key: sk-ant-api03-bench-not-a-real-key\r\n"
        "anthropic-version: 2023-06-01\r\n"
        "content-type: application/json\r\n"
        "accept: application/json\r\n"
        f"x-bench: {mode}\r\n"
        f"content-length: {len(body)}\r\n"
        + ("connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Route:
    """How to reach the fake on one path.

    `proxy` is a CONNECT proxy on loopback (None: straight to `address`). `authority` is what the CONNECT
    asks for. TLS always names `HOST` (SNI and certificate check); `ssl` trusts whichever CA signs the
    certificate the client will see on this path (the fake's, mitmproxy's or Halton Meter's)."""

    name: str
    ssl: ssl.SSLContext
    address: tuple[str, int] | None = None
    proxy: tuple[str, int] | None = None
    authority: str = f"{HOST}:443"


def client_context(*ca_files: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for ca in ca_files:
        ctx.load_verify_locations(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def issuer_of(cert: dict | None) -> tuple:  # type: ignore[type-arg]
    if not cert:
        return ()
    return tuple(sorted(item for rdn in cert.get("issuer", ()) for item in rdn))


def subject_of_pem(path: str) -> tuple:  # type: ignore[type-arg]
    """The subject of a CA certificate file, in the form `issuer_of` returns."""
    decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    return tuple(sorted(item for rdn in decoded.get("subject", ()) for item in rdn))


class BadResponse(Exception):
    pass


@dataclass
class SSEResult:
    total: float
    first_event: float
    last_event: float
    events: int


class Conn:
    """One TLS connection to the fake (through `route.proxy` when set), for sequential calls."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.calls = 0
        """Calls started on this connection."""
        cert = (writer.get_extra_info("ssl_object") or writer.get_extra_info("peercert"))
        if isinstance(cert, ssl.SSLObject):
            cert = cert.getpeercert()
        self.issuer = issuer_of(cert)
        """Who signed the certificate this connection got: tells a metered tunnel (the meter's CA) from one
        the edge passed through unmetered (the fake's own CA)."""

    @classmethod
    async def open(cls, route: Route) -> Conn:
        return await asyncio.wait_for(cls._open(route), TIMEOUT)

    @classmethod
    async def _open(cls, route: Route) -> Conn:
        if route.proxy is None:
            assert route.address is not None
            reader, writer = await asyncio.open_connection(
                *route.address, ssl=route.ssl, server_hostname=HOST, limit=HEADS_LIMIT)
            return cls(reader, writer)
        reader, writer = await asyncio.open_connection(*route.proxy, limit=HEADS_LIMIT)
        writer.write(f"CONNECT {route.authority} HTTP/1.1\r\nhost: {route.authority}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            writer.close()
            raise BadResponse(f"CONNECT via {route.name}: {head.split(b'\r\n', 1)[0]!r}")
        await writer.start_tls(route.ssl, server_hostname=HOST)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, TimeoutError, ssl.SSLError):
            pass

    # ---- calls -------------------------------------------------------------------------------------

    async def _head(self) -> tuple[int | None, bool]:
        """Reads a response head; returns (content length or None, chunked)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise BadResponse(head.split(b"\r\n", 1)[0].decode("latin-1"))
        length: int | None = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        return length, chunked

    async def json_call(self, close: bool = False) -> float:
        """One keep-alive JSON call; returns its latency in seconds."""
        self.calls += 1
        t0 = time.perf_counter()
        self.writer.write(request_bytes("json", close))
        length, chunked = await self._head()
        if chunked:
            async for _ in self._chunks():
                pass
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            raise BadResponse("JSON answer without length")
        return time.perf_counter() - t0

    async def sse_call(self, spacing_ms: int) -> SSEResult:
        """One streamed call; times when the first and the last SSE event completed."""
        self.calls += 1
        t0 = time.perf_counter()
        self.writer.write(request_bytes(f"sse:{spacing_ms}"))
        length, chunked = await self._head()
        events = 0
        first = last = 0.0
        tail = b""

        def feed(data: bytes) -> None:
            nonlocal events, first, last, tail
            found = (tail + data).count(b"\n\n")
            tail = data[-1:]
            if found:
                now = time.perf_counter()
                if not events:
                    first = now
                events += found
                last = now

        if chunked:
            async for data in self._chunks():
                feed(data)
        elif length is not None:  # a proxy may re-frame; accept a length too
            remaining = length
            while remaining:
                data = await self.reader.read(min(remaining, 65536))
                if not data:
                    raise BadResponse("stream ended early")
                remaining -= len(data)
                feed(data)
        else:
            raise BadResponse("stream without framing")
        end = time.perf_counter()
        if events != EVENTS:
            raise BadResponse(f"got {events} SSE events, expected {EVENTS}")
        return SSEResult(end - t0, first - t0, last - t0, events)

    async def _chunks(self):  # type: ignore[no-untyped-def]
        reader = self.reader
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                # trailers (none expected) end with an empty line
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]


async def fresh_call(route: Route) -> tuple[float, tuple]:  # type: ignore[type-arg]
    """A JSON call on a brand-new connection (connect, CONNECT, TLS, call, close); returns seconds and the
    issuer of the certificate it got."""
    t0 = time.perf_counter()
    conn = await Conn.open(route)
    try:
        await conn.json_call(close=True)
    finally:
        conn.close()
    return time.perf_counter() - t0, conn.issuer
