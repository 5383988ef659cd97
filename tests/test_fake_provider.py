"""The fake provider and the provider bodies: real TLS and HTTP/1.1 over loopback, checked byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

import brotli
import httpx
import pytest
import zstandard

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import (
    PROVIDER_HOSTS,
    STOP_TIMEOUT,
    FakeProvider,
    Gate,
    Pause,
    Received,
    Reply,
)

ENCODINGS = ("gzip", "deflate", "br", "zstd")
MESSAGES_URL = "https://api.anthropic.com/v1/messages"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(extra_hosts=("tunnel.test",)) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with fake.http_client() as http_client:
        yield http_client


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """For a client blocked on the fake; request it before `fake` so the fake closes (and unblocks
    the client) before the pool waits for its threads."""
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _decompressor(encoding: str) -> Callable[[bytes], bytes]:
    """An incremental decoder, to prove each streamed piece decodes as soon as it arrives."""
    match encoding:
        case "gzip":
            return zlib.decompressobj(31).decompress
        case "deflate":
            return zlib.decompressobj(15).decompress
        case "br":
            process: Callable[[bytes], bytes] = brotli.Decompressor().process
            return process
        case "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress
    raise AssertionError(encoding)


def _tls_connect(fake: FakeProvider, host: str, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    """A TLS connection to the fake with SNI and certificate check for `host` (handshake done)."""
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    try:
        return (context or fake.client_ssl_context()).wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def _raw_exchange(fake: FakeProvider, data: bytes, host: str = "api.anthropic.com") -> bytes:
    """Send `data` on a fresh connection and return everything the fake answers until it closes."""
    sock = (
        _tls_connect(fake, host)
        if fake.tls
        else socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    )
    with sock:
        sock.sendall(data)
        return _read_until_eof(sock)


def _read_until_eof(sock: socket.socket) -> bytes:
    answer = bytearray()
    for _ in range(10_000):
        data = sock.recv(65536)
        if not data:
            return bytes(answer)
        answer += data
    raise AssertionError("the fake never closed the connection")


# --------------------------------------------------------------------------------------------------
# Setup facts
# --------------------------------------------------------------------------------------------------


def test_resolve_rules_ca_file_and_client_context(fake: FakeProvider) -> None:
    rules = fake.resolve_rules()
    assert rules[0] == f"api.anthropic.com:443:127.0.0.1:{fake.port}"
    assert [r.split(":")[0] for r in rules] == [*PROVIDER_HOSTS, "tunnel.test"]
    assert fake.resolve_rules(["api.x.ai"], port=8443) == [f"api.x.ai:8443:127.0.0.1:{fake.port}"]
    assert b"BEGIN CERTIFICATE" in fake.ca_pem.read_bytes()

    # The certificate is valid for every provider host, checked by a context that trusts only the fake.
    for host in (*PROVIDER_HOSTS, "tunnel.test"):
        with _tls_connect(fake, host) as tls:
            assert tls.server_hostname == host
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_connect(fake, "example.com")


def test_alpn_offers_only_http11(fake: FakeProvider) -> None:
    context = fake.client_ssl_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with _tls_connect(fake, "api.openai.com", context) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"


def test_close_stops_server_and_removes_ca_file(pool: ThreadPoolExecutor) -> None:
    fake = FakeProvider().start()
    gate = Gate(timeout=60)
    fake.add("POST", "/v1/messages", Reply(pieces=[b"event: a\n\n", gate, b"event: b\n\n"], sse=True))
    client = fake.http_client()

    def stalled_stream() -> bytes:
        with client.stream("POST", MESSAGES_URL) as response:
            return b"".join(response.iter_raw())

    pending = pool.submit(stalled_stream)
    gate.wait_reached()
    started = time.monotonic()
    fake.close()
    assert time.monotonic() - started < STOP_TIMEOUT
    with pytest.raises(httpx.TransportError):
        pending.result(timeout=5)  # the stalled reply was aborted, not left hanging
    client.close()
    assert not fake.ca_pem.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=5).close()
    fake.close()  # idempotent


# --------------------------------------------------------------------------------------------------
# Requests and routing
# --------------------------------------------------------------------------------------------------


def test_json_reply_and_received_request(fake: FakeProvider, client: httpx.Client) -> None:
    body = bodies.anthropic_message(input_tokens=11, output_tokens=7)
    fake.add("POST", "/v1/messages", Reply(headers={"request-id": "req_1"}, body=body))

    response = client.post(f"{MESSAGES_URL}?beta=true", json={"model": "claude"}, headers={"x-api-key": "k"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"] == "req_1"
    assert response.content == body
    [received] = fake.wait_for_requests(1)
    assert (received.method, received.path, received.query) == ("POST", "/v1/messages", "beta=true")
    assert received.host == "api.anthropic.com"
    assert received.tls_sni == "api.anthropic.com"
    assert received.header("X-API-Key") == "k"
    assert all(name == name.lower() for name, _ in received.headers)
    assert received.json() == {"model": "claude"}
    assert received.at <= time.monotonic()
    [sent] = fake.sent_log
    assert sent.received == received and sent.complete and sent.wire_body == body


def test_unmatched_request_gets_404(fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("POST", "/v1/messages", Reply(body=b"{}"))

    response = client.get("https://api.openai.com/v1/messages")  # same path, other method

    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "not_found_error", "message": "no fake reply for GET /v1/messages"}
    }
    assert [r.path for r in fake.requests] == ["/v1/messages"]


def test_later_add_replaces_earlier(fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("post", "/v1/chat/completions", Reply(body=b"first"))
    fake.add("POST", "/v1/chat/completions", Reply(status=429, body=bodies.openai_error()))

    response = client.post("https://api.openai.com/v1/chat/completions?x=1", json={})

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_handlers_sync_async_and_failing(fake: FakeProvider, client: httpx.Client) -> None:
    def echo(received: Received) -> Reply:
        return Reply(status=201, body=json.dumps({"got": received.json(), "sni": received.tls_sni}).encode())

    async def stream_or_not(received: Received) -> Reply:
        if received.json().get("stream"):
            return Reply(pieces=bodies.openai_chat_stream_events(), sse=True)
        return Reply(body=bodies.openai_chat())

    def broken(received: Received) -> Reply:
        raise RuntimeError("handler bug")

    fake.add("POST", "/echo", echo)
    fake.add("POST", "/v1/chat/completions", stream_or_not)
    fake.add("GET", "/broken", broken)
    fake.add("GET", "/not-a-reply", lambda received: "oops")  # type: ignore[arg-type,return-value]

    echoed = client.post("https://api.groq.com/echo", json={"a": 1})
    assert (echoed.status_code, echoed.json()) == (201, {"got": {"a": 1}, "sni": "api.groq.com"})
    streamed = client.post("https://api.openai.com/v1/chat/completions", json={"stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.content.endswith(b"data: [DONE]\n\n")
    assert (
        client.post("https://api.openai.com/v1/chat/completions", json={}).json()["object"]
        == "chat.completion"
    )

    assert client.get("https://api.openai.com/broken").status_code == 500
    assert client.get("https://api.openai.com/not-a-reply").status_code == 500
    errors = fake.errors
    assert [type(e) for e in errors] == [RuntimeError, TypeError]
    fake.clear()
    assert (fake.requests, fake.sent_log, fake.errors) == ([], [], [])
    assert client.post("https://api.groq.com/echo", json={}).status_code == 404


def test_wait_for_requests(pool: ThreadPoolExecutor, fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("GET", "/v1/models", Reply(body=b"{}"))
    with pytest.raises(TimeoutError, match="expected 1 requests"):
        fake.wait_for_requests(1, timeout=0.05)

    pending = pool.submit(client.get, "https://api.mistral.ai/v1/models")
    [received] = fake.wait_for_requests(1)
    assert received.host == "api.mistral.ai"
    assert pending.result(timeout=5).status_code == 200


def test_async_http_client(fake: FakeProvider) -> None:
    events = bodies.openai_chat_stream_events()
    fake.add("POST", "/openai/v1/chat/completions", Reply(pieces=events, sse=True, encoding="zstd"))

    async def stream() -> list[str]:
        async with (
            fake.async_http_client() as client,
            client.stream("POST", "https://api.groq.com/openai/v1/chat/completions") as response,
        ):
            return [line async for line in response.aiter_lines() if line]

    lines = asyncio.run(stream())

    assert lines[-1] == "data: [DONE]" and len(lines) == len(events)
    assert fake.requests[0].tls_sni == "api.groq.com"


def test_http_client_refuses_other_hosts(client: httpx.Client) -> None:
    with pytest.raises(httpx.ConnectError, match=r"example\.com is not served"):
        client.get("https://example.com/")


# --------------------------------------------------------------------------------------------------
# HTTP/1.1 on the request side
# --------------------------------------------------------------------------------------------------


def test_keep_alive_and_connection_close(fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message()))

    client.post(MESSAGES_URL, json={})
    client.post(MESSAGES_URL, json={})
    closing = client.post(MESSAGES_URL, json={}, headers={"connection": "close"})
    client.post(MESSAGES_URL, json={})

    assert closing.headers["connection"] == "close"
    ids = [r.connection_id for r in fake.requests]
    assert ids[0] == ids[1] == ids[2] != ids[3]


def test_pipelined_requests_on_one_connection(fake: FakeProvider) -> None:
    fake.add("GET", "/a", Reply(body=b'{"n":"a"}'))
    fake.add("GET", "/b", Reply(body=b'{"n":"b"}'))

    answer = _raw_exchange(
        fake,
        b"GET /a HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: api.anthropic.com\r\nConnection: close\r\n\r\n",
    )

    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answer.index(b'{"n":"a"}') < answer.index(b'{"n":"b"}')
    assert answer.endswith(b'connection: close\r\n\r\n{"n":"b"}')
    assert len({r.connection_id for r in fake.requests}) == 1


def test_chunked_request_body(fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("POST", "/v1/messages", Reply(body=b"{}"))
    parts = [b'{"model":', b'"claude",', b'"stream":true}']

    client.post(MESSAGES_URL, content=iter(parts))

    [received] = fake.requests
    assert received.header("transfer-encoding") == "chunked"
    assert received.body == b"".join(parts)


def test_expect_100_continue(fake: FakeProvider) -> None:
    fake.add("POST", "/v1/messages", lambda received: Reply(body=received.body))
    with _tls_connect(fake, "api.anthropic.com") as tls:
        tls.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert tls.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        tls.sendall(b"{}")
        answer = _read_until_eof(tls)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n{}")


def test_oversized_head_gets_431(fake: FakeProvider) -> None:
    answer = _raw_exchange(fake, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert fake.requests == []


def test_oversized_body_gets_413(fake: FakeProvider) -> None:
    answer = _raw_exchange(
        fake, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    [refused] = fake.errors
    assert "request body over" in str(refused)


def test_stalled_request_is_dropped_after_io_timeout() -> None:
    with FakeProvider(io_timeout=0.2) as fake, _tls_connect(fake, "api.openai.com") as tls:
        tls.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 10\r\n\r\n{"
        )
        started = time.monotonic()
        assert _read_until_eof(tls) == b""  # the half-sent request got no answer, just a closed connection
        assert time.monotonic() - started < 3
        assert fake.requests == []


def test_plain_http_mode_and_absolute_form() -> None:
    with FakeProvider(tls=False) as fake:
        fake.add("GET", "/v1/models", Reply(body=b'{"data":[]}'))
        assert fake.resolve_rules(["api.openai.com"]) == [f"api.openai.com:80:127.0.0.1:{fake.port}"]

        with fake.http_client() as client:
            assert client.get("http://api.openai.com/v1/models").json() == {"data": []}
        answer = _raw_exchange(
            fake,
            b"GET http://api.openai.com/v1/models?limit=2 HTTP/1.1\r\nHost: api.openai.com\r\n"
            b"Connection: close\r\n\r\n",
        )

        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"data":[]}')
        first, second = fake.requests
        assert (first.tls_sni, first.host, first.query) == (None, "api.openai.com", "")
        assert (second.path, second.query) == ("/v1/models", "limit=2")


# --------------------------------------------------------------------------------------------------
# Reply scripting: streams, timing, framing, encodings, cuts
# --------------------------------------------------------------------------------------------------


def test_sse_pieces_with_pauses_and_sent_log(fake: FakeProvider, client: httpx.Client) -> None:
    events = bodies.anthropic_stream_events(chunks=("Hel", "lo", "!"))
    pieces: list[bytes | Pause] = [events[0], Pause(0.15), *events[1:]]
    fake.add("POST", "/v1/messages", Reply(pieces=pieces, sse=True, delay_between=0.01))

    arrivals: list[tuple[float, bytes]] = []
    with client.stream("POST", MESSAGES_URL, json={"stream": True}) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        for data in response.iter_raw():
            arrivals.append((time.monotonic(), data))

    [sent] = fake.sent_log
    assert sent.complete
    assert [data for _, data in sent.pieces] == events
    assert b"".join(data for _, data in arrivals) == sent.wire_body == b"".join(events)
    times = [at for at, _ in sent.pieces]
    assert times[1] - times[0] >= 0.15 + 0.01 - 0.005  # the pause plus delay_between (loop clock slack)
    assert all(later - earlier >= 0.01 - 0.005 for earlier, later in itertools.pairwise(times[1:]))
    # Every piece left the fake before the client had it (same process, same monotonic clock).
    assert arrivals[-1][0] >= times[-1]


def test_gate_holds_the_stream_until_opened(
    pool: ThreadPoolExecutor, fake: FakeProvider, client: httpx.Client
) -> None:
    gate = Gate()
    first, rest = b'data: {"n":1}\n\n', b"data: [DONE]\n\n"
    fake.add("POST", "/v1/chat/completions", Reply(pieces=[first, gate, rest], sse=True))
    got_first = threading.Event()

    def read() -> list[bytes]:
        chunks = []
        with client.stream("POST", "https://api.openai.com/v1/chat/completions") as response:
            for data in response.iter_raw():
                chunks.append(data)
                got_first.set()
        return chunks

    pending: Future[list[bytes]] = pool.submit(read)
    gate.wait_reached()
    assert got_first.wait(5)
    assert [data for _, data in fake.sent_log[0].pieces] == [first]
    assert not fake.sent_log[0].complete
    gate.open()
    assert pending.result(timeout=5) == [first, rest]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_framings(fake: FakeProvider, client: httpx.Client, framing: Any) -> None:
    body = bodies.openai_chat()
    fake.add("POST", "/v1/chat/completions", Reply(body=body, chunk_size=100, framing=framing))

    response = client.post("https://api.openai.com/v1/chat/completions", json={})

    assert response.content == body
    assert response.headers.get("content-length") == (str(len(body)) if framing == "length" else None)
    assert response.headers.get("transfer-encoding") == ("chunked" if framing == "chunked" else None)
    assert response.headers.get("connection") == ("close" if framing == "close" else None)
    assert len(fake.sent_log[0].pieces) == -(-len(body) // 100)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encoded_body_round_trip(fake: FakeProvider, client: httpx.Client, encoding: Any) -> None:
    body = bodies.anthropic_message(text="compress me " * 50)
    fake.add("POST", "/v1/messages", Reply(body=body, encoding=encoding, chunk_size=64))

    decoded = client.post(MESSAGES_URL, json={})
    with client.stream("POST", MESSAGES_URL, json={}) as response:
        raw = b"".join(response.iter_raw())

    assert decoded.headers["content-encoding"] == encoding
    assert decoded.content == body
    first, second = fake.sent_log
    assert raw == second.wire_body == first.wire_body != body
    assert all(len(data) == 64 for _, data in second.pieces[:-1])
    assert _decompressor(encoding)(raw) == body


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encoded_stream_flushes_every_piece(fake: FakeProvider, client: httpx.Client, encoding: Any) -> None:
    events = bodies.openai_chat_stream_events(chunks=("Hi", " there", "!"))
    gate = Gate()
    fake.add(
        "POST",
        "/v1/chat/completions",
        Reply(pieces=[events[0], gate, *events[1:]], sse=True, encoding=encoding),
    )
    url = "https://api.openai.com/v1/chat/completions"

    with client.stream("POST", url, json={"stream": True}) as response:
        assert response.headers["content-encoding"] == encoding
        raw_chunks = response.iter_raw()
        gate.wait_reached()
        first_wire = fake.sent_log[0].pieces[0][1]
        received = bytearray()
        while len(received) < len(first_wire):  # bounded by the client's read timeout
            received += next(raw_chunks)
        decode = _decompressor(encoding)
        # Only the first piece can have arrived (the gate holds the rest), and it decodes on its own.
        assert bytes(received) == first_wire
        assert decode(bytes(received)) == events[0]
        gate.open()
        rest = b"".join(raw_chunks)
    assert decode(rest) == b"".join(events[1:])
    assert bytes(received) + rest == fake.sent_log[0].wire_body

    assert client.post(url, json={"stream": True}).content == b"".join(events)  # httpx decodes it too


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_cut_after_reset(tls: bool) -> None:
    pieces = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    with FakeProvider(tls=tls) as fake, fake.http_client() as client:
        fake.add("POST", "/v1/messages", Reply(pieces=pieces, sse=True, cut_after=2))
        url = f"{'https' if tls else 'http'}://api.anthropic.com/v1/messages"

        received = bytearray()
        with (
            pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
            client.stream("POST", url) as response,
        ):
            for data in response.iter_raw():
                received += data

        assert bytes(received) == pieces[0] + pieces[1]
        [sent] = fake.sent_log
        assert sent.wire_body == bytes(received) and not sent.complete


def test_cut_after_close_and_declared_length(fake: FakeProvider, client: httpx.Client) -> None:
    body = bodies.anthropic_message()
    fake.add("POST", "/v1/messages", Reply(body=body, chunk_size=50, cut_after=1, cut_mode="close"))

    with client.stream("POST", MESSAGES_URL) as response:
        assert response.headers["content-length"] == str(len(body))  # the whole body was promised
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for data in response.iter_raw():
                received += data

    assert bytes(received) == body[:50] == fake.sent_log[0].wire_body


def test_cut_before_any_body_byte(fake: FakeProvider, client: httpx.Client) -> None:
    fake.add("POST", "/v1/messages", Reply(pieces=[b"data: 1\n\n"], sse=True, cut_after=0))
    with pytest.raises(httpx.TransportError):
        client.post(MESSAGES_URL)
    assert fake.sent_log[0].pieces == []


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="either body or pieces"):
        Reply(body=b"", pieces=[b""])
    with pytest.raises(ValueError, match="encoding"):
        Reply(encoding="compress")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        Reply(pieces=[b"a"], chunk_size=1)
    with pytest.raises(TypeError, match="pieces must be"):
        Reply(pieces=["text"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Pause"):
        Pause(-1)


# --------------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------------


def _sse_events(raw: list[bytes]) -> list[tuple[str | None, Any]]:
    parsed = []
    for event in raw:
        assert event.endswith(b"\n\n") and event.count(b"\n\n") == 1
        fields = dict(line.split(": ", 1) for line in event.decode().strip("\n").split("\n"))
        data = fields["data"]
        parsed.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return parsed


def test_anthropic_message_numbers() -> None:
    message = json.loads(
        bodies.anthropic_message(
            input_tokens=3, output_tokens=40, cache_read=500, cache_write=70, cache_write_1h=20, text="ok"
        )
    )
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": "ok"}]
    assert message["usage"] == {
        "input_tokens": 3,
        "cache_creation_input_tokens": 70,
        "cache_read_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 40,
        "service_tier": "standard",
    }
    with pytest.raises(ValueError, match="part of cache_write"):
        bodies.anthropic_message(cache_write=1, cache_write_1h=2)


def test_anthropic_stream_events() -> None:
    raw = bodies.anthropic_stream_events(
        input_tokens=5, output_tokens=30, cache_read=100, cache_write=8, cache_write_1h=8, chunks=("a", "b")
    )
    events = _sse_events(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["output_tokens"] == 1
    assert start_usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 8}
    assert events[6][1]["usage"] == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 8,
        "cache_read_input_tokens": 100,
        "output_tokens": 30,
    }
    assert "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta") == "ab"
    legacy = _sse_events(bodies.anthropic_stream_events(output_tokens=30, legacy_delta_usage=True))
    assert legacy[-2][1]["usage"] == {"output_tokens": 30}


def test_anthropic_errors() -> None:
    error = json.loads(bodies.anthropic_error(type="rate_limit_error", message="slow down"))
    assert error["type"] == "error"
    assert error["error"] == {"type": "rate_limit_error", "message": "slow down"}
    [(name, data)] = _sse_events([bodies.anthropic_stream_error_event()])
    assert (name, data) == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


def test_openai_chat_numbers() -> None:
    completion = json.loads(
        bodies.openai_chat(
            prompt_tokens=1200, completion_tokens=300, cached_tokens=1024, reasoning_tokens=256
        )
    )
    assert completion["object"] == "chat.completion"
    usage = completion["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (1200, 300, 1500)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1024
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 256
    with pytest.raises(ValueError, match="part of prompt_tokens"):
        bodies.openai_chat(prompt_tokens=1, cached_tokens=2)


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_chat_stream_events(include_usage: bool) -> None:
    raw = bodies.openai_chat_stream_events(
        prompt_tokens=50,
        completion_tokens=9,
        cached_tokens=10,
        include_usage=include_usage,
        chunks=("x", "y"),
    )
    events = [data for _, data in _sse_events(raw)]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "xy"
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 59
    else:
        assert all("usage" not in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_error() -> None:
    assert json.loads(bodies.openai_error(code=None, type="server_error", message="boom")) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    }


# --------------------------------------------------------------------------------------------------
# The official SDKs accept what the fake sends
# --------------------------------------------------------------------------------------------------


def _sdk_http_module(sdk: ModuleType) -> ModuleType:
    # Recent SDK releases are built on the httpx2 fork and insist on its Client class.
    assert sdk is not None
    return sys.modules.get("httpx2", httpx)


def test_anthropic_sdk_reads_stream_and_message(fake: FakeProvider) -> None:
    anthropic = pytest.importorskip("anthropic")
    events = bodies.anthropic_stream_events(
        input_tokens=7, output_tokens=9, cache_read=3, cache_write=5, cache_write_1h=2, chunks=("Hi", "!")
    )

    def messages(received: Received) -> Reply:
        if received.json().get("stream"):
            return Reply(pieces=events, sse=True, encoding="gzip")
        return Reply(
            body=gzip.compress(bodies.anthropic_message(input_tokens=4)), headers={"content-encoding": "gzip"}
        )

    fake.add("POST", "/v1/messages", messages)
    request = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    with fake.http_client(httpx_module=_sdk_http_module(anthropic)) as http_client:
        sdk = anthropic.Anthropic(api_key="sk-ant-test", http_client=http_client, max_retries=0)
        assert sdk.messages.create(**request).usage.input_tokens == 4
        with sdk.messages.stream(**request) as stream:
            assert stream.get_final_text() == "Hi!"
            usage = stream.get_final_message().usage

    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (7, 9, 3)
    assert usage.cache_creation_input_tokens == 5 and usage.cache_creation.ephemeral_1h_input_tokens == 2
    # SDK versions differ in where the key goes (x-api-key, or a Bearer token in newer ones).
    credentials = (fake.requests[0].header("x-api-key") or "") + (
        fake.requests[0].header("authorization") or ""
    )
    assert "sk-ant-test" in credentials


def test_openai_sdk_reads_usage_chunk(fake: FakeProvider) -> None:
    openai = pytest.importorskip("openai")
    events = bodies.openai_chat_stream_events(prompt_tokens=30, completion_tokens=8, cached_tokens=10)
    fake.add("POST", "/v1/chat/completions", Reply(pieces=events, sse=True))

    with fake.http_client(httpx_module=_sdk_http_module(openai)) as http_client:
        sdk = openai.OpenAI(api_key="sk-test", http_client=http_client, max_retries=0)
        stream = sdk.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi!"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (30, 8, 38)
    assert usage.prompt_tokens_details.cached_tokens == 10
