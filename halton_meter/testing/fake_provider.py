"""A scripted HTTPS server that answers for the real LLM provider host names, for end-to-end tests.

The fake listens on 127.0.0.1 (ephemeral port) with a certificate from its own `trustme` CA that is valid
for every name in `PROVIDER_HOSTS` plus any `extra_hosts`. Point a proxy at it with `upstream.resolve`
rules (`fake.resolve_rules()`) and `upstream.ca_bundle = fake.ca_pem`, or talk to it directly with
`fake.http_client()`, an httpx client that connects to the fake whatever provider host a URL names while
keeping that name in SNI, certificate check and `Host`:

    from halton_meter.testing import bodies
    from halton_meter.testing.fake_provider import FakeProvider, Pause, Reply

    with FakeProvider() as fake:
        events = bodies.anthropic_stream_events(input_tokens=10, output_tokens=5)
        fake.add("POST", "/v1/messages", Reply(pieces=[events[0], Pause(0.1), *events[1:]], sse=True))
        with fake.http_client() as client:
            response = client.post("https://api.anthropic.com/v1/messages?beta=true", json={"stream": True})
        [received] = fake.requests                  # method, path, query, host, headers, body, tls_sni, ...
        [sent] = fake.sent_log                      # the exact body bytes written, with a time per piece
        assert response.content == sent.wire_body

`fake.async_http_client()` is its `AsyncClient` twin; pass either to an SDK as `http_client=`.

A `Reply` scripts one answer: a whole `body`, or `pieces` written one by one (with `Pause`s and `Gate`s
between them), optionally compressed (`encoding`), framed by length, chunked or connection close, and
optionally cut short (`cut_after`) by a TCP reset or a clean close. `fake.add()` also takes a callable
that gets the `Received` request and returns a `Reply` (plain function or coroutine function; it runs on
the fake's event loop, so it must not block). Unmatched requests get a 404 with the JSON body
`{"error": {"type": "not_found_error", "message": "no fake reply for METHOD PATH"}}`.

The server speaks HTTP/1.1 only (ALPN offers `http/1.1`), with keep-alive, `Content-Length` and chunked
request bodies, `Expect: 100-continue` and `Connection: close`. It runs its own asyncio loop in a daemon
thread; `close()` (or leaving the `with` block) stops it within `STOP_TIMEOUT` seconds. Every read and
write is bounded in size and time (see the `MAX_*` constants and `io_timeout`).

Why this module is long: it is one self-contained HTTP/1.1 server (request parsing, framing, compression,
pauses, gates and cuts) whose parts share one connection's state; the reply scripts above the server are
what tests import, and splitting the server itself would spread one protocol state machine over files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import http
import inspect
import itertools
import json
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import trustme

if TYPE_CHECKING:
    import httpx

__all__ = [
    "PROVIDER_HOSTS",
    "FakeProvider",
    "Gate",
    "Pause",
    "Received",
    "Reply",
    "SentReply",
]

PROVIDER_HOSTS: tuple[str, ...] = (
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "cloudcode-pa.googleapis.com",
    "chatgpt.com",
    "api.x.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.mistral.ai",
    "openrouter.ai",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "bedrock-runtime.eu-central-1.amazonaws.com",
    "us-east5-aiplatform.googleapis.com",
    "europe-west1-aiplatform.googleapis.com",
    "aiplatform.googleapis.com",
    "contoso.openai.azure.com",
    "contoso-ai.cognitiveservices.azure.com",
)
"""Host names the fake's certificate is valid for (plus `extra_hosts`) and `resolve_rules()` covers."""

MAX_HEADER_BYTES = 64 * 1024
"""Largest request head (request line + headers); more gets 431."""
MAX_BODY_BYTES = 128 * 1024 * 1024
"""Largest request body; more gets 413."""
MAX_REQUEST_CHUNKS = 1 << 20
"""Most chunks in one chunked request body; more gets 400."""
MAX_TRAILER_LINES = 100
MAX_REQUESTS_PER_CONNECTION = 10_000
DEFAULT_IO_TIMEOUT = 30.0
"""Seconds one request may take to arrive (including keep-alive idle time) and one write may take."""
STOP_TIMEOUT = 5.0
"""Seconds `close()` waits for the server thread."""
DEFAULT_GATE_TIMEOUT = 10.0

type Encoding = Literal["gzip", "deflate", "br", "zstd"]
type Framing = Literal["length", "chunked", "close"]
type CutMode = Literal["reset", "close"]
type HeaderInput = dict[str, str] | list[tuple[str, str]]

_ENCODINGS = ("gzip", "deflate", "br", "zstd")
_FRAMINGS = ("length", "chunked", "close")
_CUT_MODES = ("reset", "close")
_LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------------------
# What the fake received and sent
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the fake read it."""

    method: str
    path: str
    """Request path without the query string (for an absolute-form target, the URL's path)."""
    query: str
    """Raw query string without the `?`; empty when there is none."""
    host: str
    """`Host` header value, as sent (may include a port)."""
    headers: list[tuple[str, str]]
    """Every header in arrival order, names lowercased, values as sent."""
    body: bytes
    """The request body, de-chunked."""
    at: float
    """`time.monotonic()` when the request had been read completely."""
    tls_sni: str | None
    """Server name the client sent in its TLS ClientHello; None without SNI or without TLS."""
    connection_id: int = 0
    """Serial number of the connection it arrived on (1, 2, ...): equal ids mean the connection was reused."""

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class SentReply:
    """One reply as the fake wrote it: what a client should have received, byte for byte."""

    received: Received
    pieces: list[tuple[float, bytes]]
    """`(time.monotonic(), bytes)` per body piece, timed just before it was handed to the socket. Bytes
    are encoded (compressed) body bytes without chunked framing, so they join to `wire_body`."""
    wire_body: bytes
    """Every body byte written (after content encoding, before chunked framing); for a reply that was
    cut, only what was written before the cut."""
    complete: bool
    """The whole reply was written; False while it is still being written, when it was cut short and
    when the client went away."""


# --------------------------------------------------------------------------------------------------
# Scripting replies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """In `Reply.pieces`: sleep this many seconds before writing the next piece."""

    seconds: float

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= 3600:
            raise ValueError(f"Pause seconds must be between 0 and 3600, got {self.seconds!r}")


class Gate:
    """In `Reply.pieces`: stop writing until the test calls `open()`, so a test can check what a client
    (or a proxy in between) has received so far without guessing with sleeps.

        gate = Gate()
        fake.add("POST", "/v1/messages", Reply(pieces=[first, gate, rest], sse=True))
        ...start the request in another thread...
        gate.wait_reached()      # `first` has been handed to the socket
        ...assert the client already saw `first`...
        gate.open()

    A gate stays open once opened, so one gate can guard several replies. If it is not opened within
    `timeout` seconds the fake records an error in `FakeProvider.errors` and writes on anyway, so a
    forgotten `open()` fails the test instead of hanging it.
    """

    def __init__(self, timeout: float = DEFAULT_GATE_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._opened = False
        self._reached = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"Gate(opened={self._opened}, reached={self._reached.is_set()})"

    @property
    def reached(self) -> bool:
        """A reply has arrived at this gate (everything before it has been written)."""
        return self._reached.is_set()

    def wait_reached(self, timeout: float = 5.0) -> None:
        """Block until a reply arrives at this gate; TimeoutError after `timeout` seconds."""
        if not self._reached.wait(timeout):
            raise TimeoutError(f"no reply reached the gate within {timeout}s")

    def open(self) -> None:
        """Let every reply waiting here (and any that arrives later) continue. Thread-safe."""
        with self._lock:
            self._opened = True
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # RuntimeError: that fake's loop has already stopped
                loop.call_soon_threadsafe(_resolve_future, future)

    async def _pass(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._reached.set()
            if self._opened:
                return
            self._waiters.append((loop, future))
        try:
            async with asyncio.timeout(self.timeout):
                await future
        finally:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


type Piece = bytes | Pause | Gate


@dataclass(frozen=True)
class Reply:
    """A scripted answer. With neither `body` nor `pieces` the body is empty.

    * `body`: the whole body, written at once, or in `chunk_size` pieces (split after encoding).
    * `pieces`: written one by one, each followed by a drain; `Pause` sleeps and `Gate` waits between
      them. With `encoding` each piece goes through a streaming compressor that is flushed after it, so
      every piece leaves as soon as it is produced and decodes on its own, like a compressed live stream.
    * `delay_between`: seconds to sleep between consecutive byte pieces (on top of any `Pause`).
    * `encoding`: gzip, deflate (zlib-wrapped, per RFC 9110), br or zstd; sets `content-encoding`.
    * `framing`: "length" (`content-length` of the whole encoded body, even if the reply is cut),
      "chunked", or "close" (no length; the fake closes the connection after the body). Default:
      "length" for `body`, "chunked" for `pieces`.
    * `cut_after`: abort the connection after writing this many byte pieces (0: right after the head);
      `cut_mode` "reset" sends a TCP RST (SO_LINGER 0; bytes the kernel has not sent yet are dropped,
      as with a real reset), "close" ends the connection cleanly (TLS close_notify, then FIN).
    * `headers`: sent in the given order. The fake adds `content-type` (application/json, or
      text/event-stream with `sse=True`), `content-encoding`, `content-length` / `transfer-encoding` and
      `connection: close` only when `headers` does not name them, so a test can send wrong ones on purpose.
    """

    status: int = 200
    headers: HeaderInput = field(default_factory=dict)
    body: bytes | None = None
    pieces: Sequence[Piece] | None = None
    chunk_size: int | None = None
    delay_between: float = 0.0
    encoding: Encoding | None = None
    framing: Framing | None = None
    cut_after: int | None = None
    cut_mode: CutMode = "reset"
    sse: bool = False

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 999:
            raise ValueError(f"status must be a three-digit number, got {self.status!r}")
        if self.body is not None and self.pieces is not None:
            raise ValueError("give either body or pieces, not both")
        if self.pieces is not None:
            bad = [p for p in self.pieces if not isinstance(p, bytes | Pause | Gate)]
            if bad:
                raise TypeError(f"pieces must be bytes, Pause or Gate, got {bad[0]!r}")
            if self.chunk_size is not None:
                raise ValueError("chunk_size splits body; with pieces, split them yourself")
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size!r}")
        if self.delay_between < 0:
            raise ValueError(f"delay_between must not be negative, got {self.delay_between!r}")
        if self.encoding is not None and self.encoding not in _ENCODINGS:
            raise ValueError(f"encoding must be one of {_ENCODINGS}, got {self.encoding!r}")
        if self.framing is not None and self.framing not in _FRAMINGS:
            raise ValueError(f"framing must be one of {_FRAMINGS}, got {self.framing!r}")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError(f"cut_after must not be negative, got {self.cut_after!r}")
        if self.cut_mode not in _CUT_MODES:
            raise ValueError(f"cut_mode must be one of {_CUT_MODES}, got {self.cut_mode!r}")

    @property
    def effective_framing(self) -> Framing:
        """`framing`, or its default: "length" for `body`, "chunked" for `pieces`."""
        if self.framing is not None:
            return self.framing
        return "length" if self.pieces is None else "chunked"

    def header_items(self) -> list[tuple[str, str]]:
        """`headers` as a list of pairs, in order (before the fake adds its defaults)."""
        return list(self.headers.items()) if isinstance(self.headers, dict) else list(self.headers)

    def wire_items(self) -> list[Piece]:
        """The body as it goes on the wire: encoded byte pieces, with the pauses and gates in place."""
        if self.pieces is None:
            body = self.body or b""
            if self.encoding is not None:
                body = _compress(body, self.encoding)
            if self.chunk_size is None:
                return [body] if body else []
            return [body[i : i + self.chunk_size] for i in range(0, len(body), self.chunk_size)]
        if self.encoding is None:
            return list(self.pieces)
        compress, finish = _stream_compressor(self.encoding)
        byte_positions = [i for i, piece in enumerate(self.pieces) if isinstance(piece, bytes)]
        last = byte_positions[-1] if byte_positions else None
        items: list[Piece] = []
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, bytes):
                # The stream's trailer (gzip CRC, zstd end mark) rides on the last piece, so a cut before
                # it leaves the compressed stream unterminated, as a real truncation would.
                items.append(compress(piece) + (finish() if i == last else b""))
            else:
                items.append(piece)
        if last is None:
            items.append(finish())
        return items


def _compress(data: bytes, encoding: Encoding) -> bytes:
    match encoding:
        case "gzip":
            return gzip.compress(data, mtime=0)
        case "deflate":
            return zlib.compress(data)
        case "br":
            import brotli

            return bytes(brotli.compress(data))
        case "zstd":
            import zstandard

            return zstandard.ZstdCompressor().compress(data)
    raise ValueError(f"unsupported encoding {encoding!r}")


def _stream_compressor(encoding: Encoding) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """`(compress_and_flush, finish)` for one compressed stream."""
    match encoding:
        case "gzip" | "deflate":
            z = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
            return (lambda data: z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)), (lambda: z.flush())
        case "br":
            import brotli

            b = brotli.Compressor()
            return (lambda data: bytes(b.process(data) + b.flush())), (lambda: bytes(b.finish()))
        case "zstd":
            import zstandard

            zs = zstandard.ZstdCompressor().compressobj()
            return (
                lambda data: zs.compress(data) + zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK),
                lambda: zs.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH),
            )
    raise ValueError(f"unsupported encoding {encoding!r}")


type Handler = Callable[[Received], Reply | Awaitable[Reply]]
"""A route callable: gets the request, returns (or, if async, resolves to) the `Reply`."""


# --------------------------------------------------------------------------------------------------
# HTTP/1.1 plumbing
# --------------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    """A request the fake refuses; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _SentRecord:
    received: Received
    pieces: list[tuple[float, bytes]] = field(default_factory=list)
    complete: bool = False


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"error": {"type": error_type, "message": message}}).encode()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Unknown"


def _tokens(values: Iterable[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def _linger_zero() -> bytes:
    # struct linger is two ints on POSIX, two u_shorts on Windows.
    return struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    for _ in range(MAX_REQUEST_CHUNKS):
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _HTTPError(400, f"bad chunk size line {size_line[:40]!r}") from None
        if size < 0:
            raise _HTTPError(400, "negative chunk size")
        if size == 0:
            break
        if len(body) + size > MAX_BODY_BYTES:
            raise _HTTPError(413, f"request body over {MAX_BODY_BYTES} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise _HTTPError(400, "chunk not followed by CRLF")
    else:
        raise _HTTPError(400, f"more than {MAX_REQUEST_CHUNKS} chunks")
    for _ in range(MAX_TRAILER_LINES):
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return bytes(body)
    raise _HTTPError(400, f"more than {MAX_TRAILER_LINES} trailer lines")


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise _HTTPError(400, f"bad request line {lines[0][:80]!r}") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not method.isalpha():
        raise _HTTPError(400, f"bad request line {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue  # the blank line that ends the head
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in b" \t":
            raise _HTTPError(400, f"bad header line {line[:80]!r}")
        headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
    return method, target, version, headers


def _split_target(target: str) -> tuple[str, str]:
    if "://" in target and not target.startswith("/"):
        url = urlsplit(target)  # absolute form, as a client talking to a plain-HTTP proxy sends it
        return url.path or "/", url.query
    path, _, query = target.partition("?")
    return path, query


def _response_head(reply: Reply, items: list[Piece], framing: Framing | None, keep_alive: bool) -> bytes:
    """Status line and headers; `framing` None for statuses that carry no body (1xx, 204, 304)."""
    headers = reply.header_items()
    named = {name.lower() for name, _ in headers}

    def default(name: str, value: str) -> None:
        if name not in named:
            headers.append((name, value))

    default("content-type", "text/event-stream; charset=utf-8" if reply.sse else "application/json")
    if reply.sse:
        default("cache-control", "no-cache")
    if reply.encoding is not None:
        default("content-encoding", reply.encoding)
    if framing == "length":
        default("content-length", str(sum(len(item) for item in items if isinstance(item, bytes))))
    elif framing == "chunked":
        default("transfer-encoding", "chunked")
    if not keep_alive:
        default("connection", "close")
    head = f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class FakeProvider:
    """An HTTPS (or, with `tls=False`, plain HTTP) server on 127.0.0.1 that plays LLM providers.

    `hosts` (PROVIDER_HOSTS + `extra_hosts`) are the names its certificate covers, `ca` is the
    `trustme.CA` that issued it, `io_timeout` bounds every read and write. Thread-safe: routes can be
    added and the logs read from any thread while the server runs.
    """

    def __init__(
        self,
        extra_hosts: Iterable[str] = (),
        *,
        tls: bool = True,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
    ) -> None:
        self.tls = tls
        self.hosts: tuple[str, ...] = tuple(
            dict.fromkeys((*PROVIDER_HOSTS, *(h.lower() for h in extra_hosts)))
        )
        self.io_timeout = io_timeout
        self.ca = trustme.CA()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._routes: dict[tuple[str, str], Reply | Handler] = {}
        self._requests: list[Received] = []
        self._sent: list[_SentRecord] = []
        self._errors: list[Exception] = []
        self._connection_ids = itertools.count(1)
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._port: int | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ca_pem: Path | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Write the CA file, bind the port and start serving; returns self."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-provider-")
        self._ca_pem = Path(self._tmp.name) / "fake-provider-ca.pem"
        self.ca.cert_pem.write_to_path(str(self._ca_pem))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="FakeProvider", daemon=True)
        self._thread.start()
        if not ready.wait(STOP_TIMEOUT) or self._startup_error is not None:
            error = self._startup_error
            self.close()
            raise RuntimeError("FakeProvider did not start") from error
        return self

    def close(self) -> None:
        """Stop the server (open connections are aborted) and remove the CA file. Idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        stuck = False
        if thread is not None and thread.is_alive():
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # RuntimeError: the loop already finished
                    loop.call_soon_threadsafe(stop.set)
            thread.join(STOP_TIMEOUT)
            stuck = thread.is_alive()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if stuck:
            raise RuntimeError(f"FakeProvider thread did not stop within {STOP_TIMEOUT}s")

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- facts for clients and proxies -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the fake listens on, on 127.0.0.1."""
        if self._port is None:
            raise RuntimeError("FakeProvider not started")
        return self._port

    @property
    def ca_pem(self) -> Path:
        """PEM file with the fake's CA certificate (for `upstream.ca_bundle`); removed by `close()`."""
        if self._ca_pem is None:
            raise RuntimeError("FakeProvider not started")
        return self._ca_pem

    def resolve_rules(self, hosts: Iterable[str] | None = None, *, port: int | None = None) -> list[str]:
        """`upstream.resolve` rules sending `hosts` (default: all the fake serves) to the fake.

        `port` is the port the rule matches: default 443 with TLS, 80 without.
        """
        matched = port if port is not None else (443 if self.tls else 80)
        return [
            f"{host}:{matched}:{_LOOPBACK}:{self.port}" for host in (self.hosts if hosts is None else hosts)
        ]

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the fake's CA and nothing else (hostname checking on)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(context)
        return context

    def http_client(self, *, httpx_module: ModuleType | None = None, **client_kwargs: Any) -> httpx.Client:
        """An httpx `Client` whose connections to any host the fake serves go to the fake.

        URLs keep the real host (`https://api.openai.com/v1/...`), so `Host`, SNI and the certificate
        check use it; connections to other hosts fail with `ConnectError`. The client trusts only the
        fake CA and ignores proxy environment variables. `client_kwargs` go to `Client` (default
        `timeout=10`). The official SDKs take it as `http_client=`; SDKs built on the `httpx2` fork need
        `httpx_module=httpx2`, which returns an `httpx2.Client`.
        """
        client: httpx.Client = self._client(httpx_module, asynchronous=False, client_kwargs=client_kwargs)
        return client

    def async_http_client(
        self, *, httpx_module: ModuleType | None = None, **client_kwargs: Any
    ) -> httpx.AsyncClient:
        """Like `http_client()`, for an `AsyncClient`."""
        client: httpx.AsyncClient = self._client(httpx_module, asynchronous=True, client_kwargs=client_kwargs)
        return client

    def _client(self, module: ModuleType | None, *, asynchronous: bool, client_kwargs: dict[str, Any]) -> Any:
        if module is None:
            import httpx

            module = httpx
        sync_transport, async_transport = _routing_transports(module)
        transport = (async_transport if asynchronous else sync_transport)(
            module, self.hosts, self.port, self.client_ssl_context() if self.tls else None
        )
        client_kwargs.setdefault("timeout", 10.0)
        # Proxy variables in the environment would send requests past the routing transport.
        client_kwargs["trust_env"] = False
        return (module.AsyncClient if asynchronous else module.Client)(transport=transport, **client_kwargs)

    # ---- scripting and inspection ------------------------------------------------------------------

    def add(self, method: str, path: str, reply: Reply | Handler) -> None:
        """Answer `method path` (exact path, query ignored) with `reply`, replacing any earlier one."""
        if not path.startswith("/") or "?" in path:
            raise ValueError(f"path must start with / and carry no query, got {path!r}")
        if not isinstance(reply, Reply) and not callable(reply):
            raise TypeError(f"reply must be a Reply or a callable returning one, got {reply!r}")
        with self._lock:
            self._routes[(method.upper(), path)] = reply

    def clear(self, *, routes: bool = True) -> None:
        """Forget recorded requests, sent replies and errors, and (unless `routes=False`) the routes."""
        with self._lock:
            self._requests.clear()
            self._sent.clear()
            self._errors.clear()
            if routes:
                self._routes.clear()

    @property
    def requests(self) -> list[Received]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def sent_log(self) -> list[SentReply]:
        """Every reply written so far (including ones still being written), in order (a snapshot)."""
        with self._lock:
            return [
                SentReply(r.received, list(r.pieces), b"".join(data for _, data in r.pieces), r.complete)
                for r in self._sent
            ]

    @property
    def errors(self) -> list[Exception]:
        """Handler exceptions, gate timeouts and refused requests; a clean test leaves this empty."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `n` requests have been received; returns them all. TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= n, timeout):
                seen = [f"{r.method} {r.path}" for r in self._requests]
                raise TimeoutError(f"expected {n} requests within {timeout}s, got {len(seen)}: {seen}")
            return list(self._requests)

    # ---- event loop side ---------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # noqa: BLE001 - reported to start() through ready
            self._startup_error = exc
        finally:
            ready.set()

    def _server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*self.hosts, "localhost", _LOOPBACK).configure_cert(context)
        context.set_alpn_protocols(["http/1.1"])
        context.sni_callback = self._remember_sni
        return context

    def _remember_sni(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # The server side has no other way to see the SNI; key it by the connection's SSLObject, which
        # the stream writer exposes as extra info "ssl_object".
        if server_name is not None:
            self._sni[ssl_object] = server_name

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection,
            _LOOPBACK,
            0,
            ssl=self._server_ssl_context() if self.tls else None,
            limit=MAX_HEADER_BYTES,
            ssl_handshake_timeout=self.io_timeout if self.tls else None,
            ssl_shutdown_timeout=STOP_TIMEOUT if self.tls else None,
        )
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            tasks = list(self._connections)
            for task, writer in self._connections.items():
                writer.transport.abort()
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=STOP_TIMEOUT / 2)
            try:
                async with asyncio.timeout(STOP_TIMEOUT / 4):
                    await server.wait_closed()
            except TimeoutError:
                pass

    def _record_error(self, error: Exception) -> None:
        with self._lock:
            self._errors.append(error)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self._serve_connection(reader, writer)
        except (
            ConnectionError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
        ):
            writer.transport.abort()  # the client went away or stalled; nothing useful left to say
        except asyncio.CancelledError:
            # Only our own shutdown cancels these tasks. Ending quietly instead of re-raising keeps
            # asyncio's stream callback (3.12.1 calls task.exception() on it) from logging a traceback.
            writer.transport.abort()
        except Exception as bug:  # noqa: BLE001 - a bug in the fake must fail the test, not kill the loop
            self._record_error(bug)
            writer.transport.abort()
        finally:
            self._connections.pop(task, None)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Drain only returns once the transport's buffer is empty, so piece timing, pauses and cuts act
        # on bytes that have reached the kernel rather than on bytes still queued in asyncio.
        writer.transport.set_write_buffer_limits(high=1, low=0)
        connection_id = next(self._connection_ids)
        ssl_object = writer.get_extra_info("ssl_object")
        sni = self._sni.get(ssl_object) if ssl_object is not None else None
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            try:
                received, keep_alive = await self._read_request(reader, writer, connection_id, sni)
            except _HTTPError as refused:
                self._record_error(refused)
                await self._send_plain(
                    writer, refused.status, _error_body("fake_provider_error", str(refused))
                )
                break
            if received is None:
                break
            reply = await self._reply_for(received)
            if not await self._send_reply(writer, received, reply, keep_alive):
                return  # _send_reply has closed or aborted the connection
        await self._close_gracefully(writer)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection_id: int, sni: str | None
    ) -> tuple[Received | None, bool]:
        """The next request on the connection and whether the connection may stay open after it;
        `(None, False)` when the client closed cleanly or idled past `io_timeout` between requests."""
        try:
            async with asyncio.timeout(self.io_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _HTTPError(400, "connection closed inside the request head") from None
            return None, False
        except asyncio.LimitOverrunError:
            raise _HTTPError(431, f"request head over {MAX_HEADER_BYTES} bytes") from None
        except TimeoutError:
            return None, False
        method, target, version, headers = _parse_head(head)

        def values(name: str) -> list[str]:
            return [value for key, value in headers if key == name]

        keep_alive = version == "HTTP/1.1" and "close" not in _tokens(values("connection"))

        async with asyncio.timeout(self.io_timeout):
            body = b""
            transfer_codings = _tokens(values("transfer-encoding"))
            lengths = {v.strip() for v in values("content-length")}
            if transfer_codings:
                if values("transfer-encoding")[-1].lower().rsplit(",", 1)[-1].strip() != "chunked":
                    raise _HTTPError(400, "transfer-encoding without final chunked")
                await self._continue_if_expected(writer, values("expect"))
                body = await _read_chunked(reader)
                # Both headers at once is how request smuggling starts; answer, then close (RFC 9112 6.1).
                keep_alive = keep_alive and not lengths
            elif lengths:
                if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                    raise _HTTPError(400, f"bad content-length {sorted(lengths)}")
                length = int(next(iter(lengths)))
                if length > MAX_BODY_BYTES:
                    raise _HTTPError(413, f"request body over {MAX_BODY_BYTES} bytes")
                if length:
                    await self._continue_if_expected(writer, values("expect"))
                    body = await reader.readexactly(length)

        path, query = _split_target(target)
        received = Received(
            method=method,
            path=path,
            query=query,
            host=next(iter(values("host")), ""),
            headers=headers,
            body=body,
            at=time.monotonic(),
            tls_sni=sni,
            connection_id=connection_id,
        )
        with self._changed:
            self._requests.append(received)
            self._changed.notify_all()
        return received, keep_alive

    async def _continue_if_expected(self, writer: asyncio.StreamWriter, expect: list[str]) -> None:
        if "100-continue" in _tokens(expect):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._drain(writer)

    async def _reply_for(self, received: Received) -> Reply:
        with self._lock:
            route = self._routes.get((received.method, received.path))
        if route is None:
            message = f"no fake reply for {received.method} {received.path}"
            return Reply(404, body=_error_body("not_found_error", message))
        if isinstance(route, Reply):
            return route
        try:
            reply = route(received)
            if inspect.isawaitable(reply):
                reply = await reply
            if not isinstance(reply, Reply):
                raise TypeError(
                    f"handler for {received.method} {received.path} returned {reply!r}, not a Reply"
                )
        except Exception as exc:  # noqa: BLE001 - reported through errors and a 500
            self._record_error(exc)
            return Reply(500, body=_error_body("fake_provider_error", f"handler raised {exc!r}"))
        return reply

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.io_timeout):
            await writer.drain()

    async def _send_plain(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await self._drain(writer)

    async def _send_reply(
        self, writer: asyncio.StreamWriter, received: Received, reply: Reply, keep_alive: bool
    ) -> bool:
        """Write `reply`; True if the connection stays open for another request."""
        items = reply.wire_items()
        framing = reply.effective_framing
        bodiless_status = reply.status in (204, 304) or reply.status < 200
        send_body = not bodiless_status and received.method != "HEAD"
        keep_alive = keep_alive and framing != "close"
        head = _response_head(reply, items, framing if not bodiless_status else None, keep_alive)

        # `complete` must already be true when a client can see the end of the reply, or a test that
        # checks sent_log right after reading the response would race the fake. So it is set just
        # before the write that ends the reply (and reset if that write fails), never after it.
        piece_count = sum(isinstance(item, bytes) for item in items)
        cut = send_body and reply.cut_after is not None and reply.cut_after <= piece_count
        non_empty = [i for i, item in enumerate(items) if isinstance(item, bytes) and item]
        final: int | Literal["head", "terminator"] | None
        if cut:
            final = None
        elif not send_body or (framing != "chunked" and not non_empty):
            final = "head"
        else:
            final = "terminator" if framing == "chunked" else non_empty[-1]

        record = _SentRecord(received)
        with self._lock:
            self._sent.append(record)
        await self._write(writer, head, record, ends_reply=final == "head")
        if not send_body:
            return await self._finish(writer, keep_alive)
        if reply.cut_after == 0:
            await self._cut(writer, reply.cut_mode)
            return False

        written = 0
        for position, item in enumerate(items):
            if isinstance(item, Pause):
                await asyncio.sleep(item.seconds)
                continue
            if isinstance(item, Gate):
                try:
                    await item._pass()
                except TimeoutError:
                    self._record_error(TimeoutError(f"{item!r} not opened within {item.timeout}s"))
                continue
            if written and reply.delay_between:
                await asyncio.sleep(reply.delay_between)
            with self._lock:
                record.pieces.append((time.monotonic(), item))
            # An empty chunk would end a chunked body early, so an empty piece writes nothing.
            if item:
                data = b"%x\r\n%s\r\n" % (len(item), item) if framing == "chunked" else item
                await self._write(writer, data, record, ends_reply=final == position)
            written += 1
            if written == reply.cut_after:
                await self._cut(writer, reply.cut_mode)
                return False
        if framing == "chunked":
            await self._write(writer, b"0\r\n\r\n", record, ends_reply=True)
        return await self._finish(writer, keep_alive)

    async def _write(
        self, writer: asyncio.StreamWriter, data: bytes, record: _SentRecord, *, ends_reply: bool
    ) -> None:
        if ends_reply:
            with self._lock:
                record.complete = True
        try:
            writer.write(data)
            await self._drain(writer)
        except BaseException:
            if ends_reply:
                with self._lock:
                    record.complete = False
            raise

    async def _finish(self, writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        if not keep_alive:
            await self._close_gracefully(writer)
        return keep_alive

    async def _cut(self, writer: asyncio.StreamWriter, mode: CutMode) -> None:
        if mode == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _linger_zero())
            writer.transport.abort()
        else:
            await self._close_gracefully(writer)

    async def _close_gracefully(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT / 2):
                await writer.wait_closed()
        except (OSError, ssl.SSLError, TimeoutError):
            writer.transport.abort()


# --------------------------------------------------------------------------------------------------
# httpx clients that reach the fake under the real host names
# --------------------------------------------------------------------------------------------------


@functools.cache
def _routing_transports(module: ModuleType) -> tuple[type[Any], type[Any]]:
    """Sync and async transport classes for `module` (httpx or an API-compatible fork such as httpx2).

    Each provider host gets its own inner transport: all of them connect to the same 127.0.0.1:port
    origin, and a shared pool would reuse a connection opened with one host's SNI for another host.
    """

    class _Router:
        def __init__(
            self, module: ModuleType, hosts: Sequence[str], port: int, ssl_context: ssl.SSLContext | None
        ) -> None:
            self._module = module
            self._hosts = frozenset(hosts)
            self._port = port
            self._ssl_context = ssl_context
            self._lock = threading.Lock()
            self._inner: dict[str, Any] = {}

        def _route(self, request: Any, transport_class: type[Any]) -> tuple[Any, Any]:
            host = request.url.host
            if host not in self._hosts:
                raise self._module.ConnectError(f"{host} is not served by this FakeProvider", request=request)
            extensions = dict(request.extensions)
            if self._ssl_context is not None:
                extensions["sni_hostname"] = host
            forwarded = self._module.Request(
                request.method,
                request.url.copy_with(host=_LOOPBACK, port=self._port),
                headers=request.headers,  # already holds Host: <provider host>
                stream=request.stream,
                extensions=extensions,
            )
            with self._lock:
                inner = self._inner.get(host)
                if inner is None:
                    verify = self._ssl_context if self._ssl_context is not None else False
                    inner = self._inner[host] = transport_class(verify=verify, trust_env=False)
            return inner, forwarded

        def _take_inner(self) -> list[Any]:
            with self._lock:
                inner, self._inner = list(self._inner.values()), {}
            return inner

    class RoutingTransport(module.BaseTransport, _Router):  # type: ignore[name-defined]
        def handle_request(self, request: Any) -> Any:
            inner, forwarded = self._route(request, self._module.HTTPTransport)
            return inner.handle_request(forwarded)

        def close(self) -> None:
            for inner in self._take_inner():
                inner.close()

    class AsyncRoutingTransport(module.AsyncBaseTransport, _Router):  # type: ignore[name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            inner, forwarded = self._route(request, self._module.AsyncHTTPTransport)
            return await inner.handle_async_request(forwarded)

        async def aclose(self) -> None:
            for inner in self._take_inner():
                await inner.aclose()

    return RoutingTransport, AsyncRoutingTransport
