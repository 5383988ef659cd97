"""Pass-through tunnels (halton_meter/edge/passthrough.py): the call estimate from TLS records, and when a tunnel
may be closed. Synthetic record streams pin the rules; a real TLS 1.3 exchange (Python's OpenSSL server,
which sends two session tickets, one of them between a request's head and its body) checks them on the
wire."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
import trustme

from halton_meter.edge import passthrough
from halton_meter.edge.passthrough import PassThrough


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(passthrough.time, "monotonic", clock)
    return clock


def record(kind: int, length: int) -> bytes:
    return bytes([kind, 3, 3]) + length.to_bytes(2, "big") + b"\0" * length


def handshake(tunnel: PassThrough, clock: Clock) -> None:
    """TLS 1.3 as a client and server exchange it, ending with the client's (small, type 23) Finished."""
    tunnel.up(record(22, 512))
    clock.now += 0.02
    tunnel.down(record(22, 122) + record(20, 1) + record(23, 23) + record(23, 2000) + record(23, 96) + record(23, 69))
    clock.now += 0.001
    tunnel.up(record(20, 1) + record(23, 69))


def test_requests_are_counted_and_session_tickets_between_head_and_body_are_not(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    handshake(tunnel, clock)
    tunnel.down(record(23, 250))  # first ticket, right after the Finished
    tunnel.up(record(23, 400))  # request head
    clock.now += 0.002
    tunnel.down(record(23, 250))  # second ticket: arrives between head and body
    tunnel.up(record(23, 300))  # request body: the same request
    assert (tunnel.requests, tunnel.awaiting) == (1, True)
    clock.now += 0.5
    tunnel.down(record(23, 600))  # the answer
    assert (tunnel.requests, tunnel.awaiting) == (1, False)
    for _ in range(3):  # later calls on the kept-alive connection, each quickly answered
        clock.now += 0.01
        tunnel.up(record(23, 400) + record(23, 300))
        assert tunnel.awaiting
        clock.now += 0.005
        tunnel.down(record(23, 250))  # as long as a ticket, but not one any more: an answer
        assert not tunnel.awaiting
    assert tunnel.requests == 4 and tunnel.calls_estimated == 4


def test_a_fast_answer_that_differs_from_the_tickets_is_an_answer(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    handshake(tunnel, clock)
    tunnel.up(record(23, 400))
    tunnel.down(record(23, 250) + record(23, 250) + record(23, 480))  # two tickets, then the answer at once
    assert tunnel.requests == 1 and not tunnel.awaiting
    tunnel.up(record(23, 400))
    assert tunnel.requests == 2


def test_http2_control_frames_are_neither_requests_nor_answers(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    handshake(tunnel, clock)
    clock.now += 1
    tunnel.up(record(23, 180))  # preface, SETTINGS, HEADERS, DATA
    tunnel.down(record(23, 40))  # SETTINGS
    tunnel.up(record(23, 30))  # SETTINGS ack, WINDOW_UPDATE: no new request
    clock.now += 5
    tunnel.down(record(23, 40))  # WINDOW_UPDATE from the server: the answer has not started
    assert tunnel.requests == 1 and tunnel.awaiting
    clock.now += 60
    assert not tunnel.closable(clock.now)  # a request waits: never closed, however long the quiet


def test_tls_12_has_no_tickets_in_application_data(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    tunnel.up(record(22, 300))
    tunnel.down(record(22, 90) + record(22, 2500) + record(22, 300) + record(22, 4))
    tunnel.up(record(22, 70) + record(20, 1) + record(22, 40))
    tunnel.down(record(20, 1) + record(22, 40))
    tunnel.up(record(23, 500))
    tunnel.down(record(23, 250))
    assert tunnel.requests == 1 and not tunnel.awaiting


def test_not_tls_means_no_estimate_and_only_a_long_quiet_closes_it(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    tunnel.up(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert not tunnel.tls and tunnel.calls_estimated is None
    clock.now += 5
    assert not tunnel.closable(clock.now, quiet=2, stream_quiet=60)
    clock.now += 60
    assert tunnel.closable(clock.now, quiet=2, stream_quiet=60)


def test_closable_waits_for_quiet_and_longer_after_a_stream_without_its_end_mark(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    handshake(tunnel, clock)
    clock.now += 1
    tunnel.up(record(23, 400))
    clock.now += 0.3
    tunnel.down(record(23, 700))  # a JSON answer
    clock.now += 1.0
    assert not tunnel.closable(clock.now, quiet=2)
    clock.now += 1.5
    assert tunnel.closable(clock.now, quiet=2)

    tunnel.up(record(23, 400))
    for _ in range(20):  # an SSE answer, an event a record
        clock.now += 0.05
        tunnel.down(record(23, 150))
    clock.now += 5
    assert not tunnel.closable(clock.now, quiet=2, stream_quiet=60)  # perhaps a model thinking
    tunnel.down(record(23, 22))  # the chunked terminator: the stream ended
    clock.now += 2.5
    assert tunnel.closable(clock.now, quiet=2, stream_quiet=60)


def test_a_record_split_across_reads_is_seen_once(clock: Clock) -> None:
    tunnel = PassThrough("api.test")
    handshake(tunnel, clock)
    data = record(23, 400) + record(23, 300)
    for i in range(len(data)):
        tunnel.up(data[i:i + 1])
    assert tunnel.requests == 1 and tunnel.bytes_up == len(data) + 512 + 5 + 6 + 69 + 5


def test_a_real_tls13_exchange_through_a_relay_is_counted_exactly() -> None:
    """Python's OpenSSL server sends two session tickets; the second lands between a request's head and
    its body. Five requests, each written as head then body, are counted as five."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    origin = socket.create_server(("127.0.0.1", 0))
    relay = socket.create_server(("127.0.0.1", 0))
    tunnel = PassThrough("api.test")

    def serve() -> None:
        conn, _ = origin.accept()
        tls = server_ctx.wrap_socket(conn, server_side=True)
        for _ in range(5):
            data = b""
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 150:
                data += tls.recv(65536)
            body = b'{"type": "message", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}'
            tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_0123456789\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body))
        tls.close()

    def pipe(src: socket.socket, dst: socket.socket, observe) -> None:  # type: ignore[no-untyped-def]
        while data := src.recv(65536):
            observe(data)
            dst.sendall(data)

    def relay_one() -> None:
        client, _ = relay.accept()
        upstream = socket.create_connection(origin.getsockname())
        threading.Thread(target=pipe, args=(client, upstream, tunnel.up), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client, tunnel.down), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    threading.Thread(target=relay_one, daemon=True).start()
    with client_ctx.wrap_socket(socket.create_connection(relay.getsockname(), timeout=10),
                                server_hostname="api.test") as tls:
        for _ in range(5):
            tls.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: api.test\r\ncontent-type: application/json\r\n"
                        b"user-agent: test\r\ncontent-length: 150\r\n\r\n")
            tls.sendall(b"x" * 150)
            answer = b""
            while not answer.endswith(b"}}"):
                answer += tls.recv(65536)
    origin.close()
    relay.close()
    assert tunnel.tls and tunnel.calls_estimated == 5 and not tunnel.awaiting
