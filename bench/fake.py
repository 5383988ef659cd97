"""The benchmark's fake provider: a lean HTTPS/1.1 server on 127.0.0.1 that answers like api.anthropic.com.

Run as its own process (so its CPU never competes with the load client for one GIL):

    python -m bench.fake --cert CERT_AND_KEY.pem

It prints `READY <port>` once listening and stops on SIGTERM/SIGINT or when stdin closes.

Unlike `halton_meter.testing.fake_provider` (a scripted test double that records every request and every
byte it sends), this one keeps nothing: every answer is precomputed bytes, so its cost per call is as low
as plain asyncio allows and stays constant over a long run. The answers are real Anthropic Messages bodies
(from `halton_meter.testing.bodies`), so the meter parses and prices them exactly as it would in real use.

Which answer a request gets is chosen by the `x-bench` request header:

* absent or `json`: a ~1 KB JSON message (Content-Length framing);
* `sse:<ms>`: a `text/event-stream` of `EVENTS` events, chunked, one event per chunk, `<ms>` milliseconds
  apart (0 = written back to back).

Keep-alive is the default; `Connection: close` is honoured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

from bench._child import stop_event
from halton_meter.testing import bodies

HOST = "api.anthropic.com"
PATH = "/v1/messages"
EVENTS = 50
JSON_BYTES = 1024
JSON_TOKENS = (120, 30)
SSE_TOKENS = (900, 140)


def json_body(size: int = JSON_BYTES) -> bytes:
    """An Anthropic `Message` padded (in its text) to exactly `size` bytes."""
    base = bodies.anthropic_message(input_tokens=JSON_TOKENS[0], output_tokens=JSON_TOKENS[1], text="")
    pad = max(0, size - len(base))
    return bodies.anthropic_message(input_tokens=JSON_TOKENS[0], output_tokens=JSON_TOKENS[1], text="x" * pad)


def sse_events(count: int = EVENTS) -> list[bytes]:
    """`count` complete SSE events of a streamed Anthropic message (6 framing events + text deltas)."""
    events = bodies.anthropic_stream_events(
        input_tokens=SSE_TOKENS[0], output_tokens=SSE_TOKENS[1],
        chunks=tuple(f"token{i} " for i in range(count - 6)),
    )
    assert len(events) == count, len(events)
    return events


JSON_BODY = json_body()
JSON_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    "content-type: application/json\r\n"
    "request-id: req_bench\r\n"
    f"content-length: {len(JSON_BODY)}\r\n"
).encode()
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"request-id: req_bench\r\n"
    b"transfer-encoding: chunked\r\n"
)
SSE_CHUNKS = [b"%x\r\n%s\r\n" % (len(event), event) for event in sse_events()]
LAST_CHUNK = b"0\r\n\r\n"
MAX_HEAD = 64 * 1024
IDLE_TIMEOUT = 120.0


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            length = 0
            mode = b"json"
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-bench":
                    mode = value.strip()
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            connection = b"connection: close\r\n\r\n" if close else b"\r\n"
            if mode == b"json":
                writer.write(JSON_HEAD + connection + JSON_BODY)
                await writer.drain()
            elif mode.startswith(b"sse:"):
                spacing = int(mode[4:]) / 1000
                writer.write(SSE_HEAD + connection)
                if spacing:
                    for chunk in SSE_CHUNKS:
                        writer.write(chunk)
                        await writer.drain()
                        if chunk is not SSE_CHUNKS[-1]:
                            await asyncio.sleep(spacing)
                    writer.write(LAST_CHUNK)
                else:
                    for chunk in SSE_CHUNKS:
                        writer.write(chunk)
                    writer.write(LAST_CHUNK)
                await writer.drain()
            else:
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                await writer.drain()
                return
            if close:
                return
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def server_context(cert_and_key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_and_key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def serve(cert_and_key: str, port: int = 0) -> None:
    server = await asyncio.start_server(
        _handle, "127.0.0.1", port, ssl=server_context(cert_and_key), backlog=2048, limit=MAX_HEAD,
        ssl_handshake_timeout=30,
    )
    stop = stop_event()
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake", description=__doc__.split("\n")[0])
    parser.add_argument("--cert", required=True, help="PEM with the server certificate chain and its key")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.cert, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
