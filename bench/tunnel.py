"""A minimal asyncio CONNECT tunnel: the baseline for Halton Meter's edge hop.

    python -m bench.tunnel --resolve api.anthropic.com:443=127.0.0.1:PORT

It reads one `CONNECT host:port` head, connects to the target (or to where a `--resolve` rule sends it),
answers `200`, then copies bytes both ways with the same asyncio streams, read size and back-pressure the
edge uses, and nothing else: no policy, no accounting, no drain. Whatever the edge costs beyond this is the
price of its features. Prints `READY <port>`; stops on SIGTERM/SIGINT or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bench._child import stop_event

READ_SIZE = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


def handler(resolve: dict[tuple[str, int], tuple[str, int]]):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3 or parts[0] != b"CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            host, _, port = parts[1].decode("latin-1").rpartition(":")
            target = resolve.get((host.lower(), int(port)), (host, int(port)))
            up_reader, upstream = await asyncio.open_connection(*target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (upstream, writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    return handle


def parse_rule(text: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """`host:port=address:port`."""
    left, _, right = text.partition("=")
    host, _, port = left.rpartition(":")
    address, _, address_port = right.rpartition(":")
    return (host.lower(), int(port)), (address, int(address_port))


async def serve(resolve: dict[tuple[str, int], tuple[str, int]], port: int = 0) -> None:
    server = await asyncio.start_server(handler(resolve), "127.0.0.1", port, backlog=2048)
    stop = stop_event()
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tunnel", description=__doc__.split("\n")[0])
    parser.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT=ADDRESS:PORT")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    resolve = dict(parse_rule(rule) for rule in args.resolve)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(resolve, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
