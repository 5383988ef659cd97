"""The edge's parsing and policy, and the loopback API's defences, exercised over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from halton_meter.edge.corelink import CoreLocator
from halton_meter.edge.server import Edge
from halton_meter.serve.api import Api
from halton_meter.targets import Refused, ip_of, parse_authority


@pytest.mark.parametrize(
    ("authority", "expected"),
    [("api.anthropic.com:443", ("api.anthropic.com", 443)), ("[::1]:8443", ("::1", 8443)),
     ("Example.COM.:80", ("example.com", 80))],
)
def test_parse_authority(authority, expected) -> None:
    assert parse_authority(authority) == expected


@pytest.mark.parametrize("authority", ["host", "host:0", "host:99999", "::1", "[::1]", ":443", "host:abc", "[::1]443"])
def test_parse_authority_refuses_bad_targets(authority) -> None:
    with pytest.raises(Refused) as info:
        parse_authority(authority)
    assert info.value.status == 400


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _http_server(seen: list[bytes]) -> asyncio.Server:
    """An HTTP/1.1 origin that answers every request with the request head it received (and keeps the
    connection alive unless asked to close)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                answer = head + body
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
                             + str(len(answer)).encode() + b"\r\n\r\n" + answer)
                await writer.drain()
                if b"connection: close" in head.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def _exchange(port: int, payload: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(65536 * 4), 5)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


def run_edge_test(tmp_path: Path, scenario, claims=lambda h, p: False) -> object:
    async def main() -> object:
        upstream = await _echo_server()
        upstream_port = upstream.sockets[0].getsockname()[1]
        edge = Edge(claims=claims, core=CoreLocator(tmp_path / "core.json"),
                    resolve={("tunnel.test", 443): ("127.0.0.1", upstream_port)}, own_ports={9})
        edge.health.restart_grace = 0.2  # no core ever runs here: do not wait long for one
        server = await asyncio.start_server(edge.handle, "127.0.0.1", 0, limit=16 * 1024)
        edge.own_ports.add(server.sockets[0].getsockname()[1])
        try:
            return await scenario(server.sockets[0].getsockname()[1], edge, upstream_port)
        finally:
            server.close()
            upstream.close()

    return asyncio.run(main())


def test_connect_to_other_hosts_is_a_plain_tunnel(tmp_path: Path) -> None:
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(b"\x16\x03\x01 raw bytes, never parsed")
        assert await asyncio.wait_for(reader.readuntil(b"parsed"), 5) == b"echo:\x16\x03\x01 raw bytes, never parsed"
        writer.close()
        assert edge.stats.tunnelled == 1 and edge.stats.metered == 0

    run_edge_test(tmp_path, scenario)


def test_claimed_host_with_core_down_passes_through_and_counts_a_gap(tmp_path: Path) -> None:
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"echo:hi"
        writer.close()
        assert edge.stats.passthrough == 1 and edge.stats.last_gap_reason == "core restarting"

    run_edge_test(tmp_path, scenario, claims=lambda h, p: h == "tunnel.test")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n", b"403"),  # one of our own ports
        (b"CONNECT localhost:9 HTTP/1.1\r\n\r\n", b"403"),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n", b"403"),  # cloud metadata
        (b"CONNECT [fe80::1]:443 HTTP/1.1\r\n\r\n", b"403"),
        (b"CONNECT 0.0.0.0:443 HTTP/1.1\r\n\r\n", b"403"),
        (b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", b"403"),
        (b"GET http://x.test/ HTTP/1.1\r\n\r\n", b"400"),  # no Host header
        (b"CONNECT host:0 HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT host:99999 HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT ::1 HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT host HTTP/1.1\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", b"400"),  # TLS to the proxy port
        (b"GET http://x.test/ HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_refusals_answer_with_a_status_and_the_edge_keeps_serving(tmp_path: Path, request_bytes, status) -> None:
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        reply = await _exchange(port, request_bytes)
        assert reply.split(b" ")[1] == status, reply
        # and the next client is still served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
        writer.close()

    run_edge_test(tmp_path, scenario)


def test_absolute_form_plain_http_is_forwarded_in_origin_form_one_request_at_a_time(tmp_path: Path) -> None:
    """Each request on a kept-alive plain-HTTP connection is framed, checked and routed on its own: the
    proxy headers are dropped, the upstream connection closes after each answer, the client's stays open."""
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        seen: list[bytes] = []
        origin = await _http_server(seen)
        origin_port = origin.sockets[0].getsockname()[1]
        edge.resolve[("plain.test", 80)] = ("127.0.0.1", origin_port)
        edge.resolve[("other.test", 80)] = ("127.0.0.1", origin_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET http://plain.test/path?q=1 HTTP/1.1\r\nHost: plain.test\r\n"
                         b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n\r\n")
            writer.write(b"POST http://other.test/p HTTP/1.1\r\nHost: other.test\r\ncontent-length: 5\r\n\r\nhello")
            answers = []
            for _ in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answers.append(await asyncio.wait_for(reader.readexactly(length), 5))
        finally:
            writer.close()
            origin.close()
        assert answers[0] == b"GET /path?q=1 HTTP/1.1\r\nHost: plain.test\r\nconnection: close\r\n\r\n"
        assert answers[1] == (b"POST /p HTTP/1.1\r\nHost: other.test\r\ncontent-length: 5\r\n"
                              b"connection: close\r\n\r\nhello")
        assert len(seen) == 2 and edge.stats.tunnelled == 2

    run_edge_test(tmp_path, scenario)


def test_a_second_request_on_a_kept_alive_connection_cannot_reach_a_refused_address(tmp_path: Path) -> None:
    """X1 at the edge: an allowed plain-HTTP request, then a request to a loopback service on the same
    connection: refused with 403, and the loopback canary sees nothing."""
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        seen, canary_seen = [], []
        origin, canary = await _http_server(seen), await _http_server(canary_seen)
        edge.resolve[("plain.test", 80)] = ("127.0.0.1", origin.sockets[0].getsockname()[1])
        canary_port = canary.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            for second in (f"GET http://127.0.0.1:{canary_port}/ HTTP/1.1\r\nHost: x\r\n\r\n",
                           f"CONNECT 127.0.0.1:{canary_port} HTTP/1.1\r\n\r\n"):
                writer.write(second.encode())
                reply = await asyncio.wait_for(reader.read(65536), 5)
                if second.startswith("GET"):
                    assert reply.startswith(b"HTTP/1.1 403"), reply
                    break
        finally:
            writer.close()
            origin.close()
            canary.close()
        assert canary_seen == [] and len(seen) == 1

    run_edge_test(tmp_path, scenario)


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
                                  "fd00:ec2::254", "::ffff:169.254.169.254", "::a9fe:a9fe"])
def test_embedded_and_v6_forms_of_refused_addresses_are_refused(tmp_path: Path, host: str) -> None:
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        reply = await _exchange(port, f"CONNECT [{host}]:80 HTTP/1.1\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 403"), (host, reply)
        reply = await _exchange(port, f"GET http://[{host}]/latest/meta-data HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 403"), (host, reply)

    run_edge_test(tmp_path, scenario)


@pytest.mark.parametrize("host", ["100.100.100.200", "168.63.129.16", "169.254.170.2"])
def test_metadata_endpoints_outside_the_link_local_check_are_refused(tmp_path: Path, host: str) -> None:
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        assert (await _exchange(port, f"CONNECT {host}:80 HTTP/1.1\r\n\r\n".encode())).startswith(b"HTTP/1.1 403")

    run_edge_test(tmp_path, scenario)


def test_embedded_ipv4_is_unwrapped_but_ordinary_v6_is_not() -> None:
    assert str(ip_of("::ffff:10.0.0.1")) == "10.0.0.1" and str(ip_of("::10.0.0.1")) == "10.0.0.1"
    assert str(ip_of("64:ff9b::8.8.8.8")) == "8.8.8.8"
    assert str(ip_of("::1")) == "::1" and str(ip_of("2606:4700::1111")) == "2606:4700::1111"


def test_unreachable_upstream_gives_502(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()

    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        edge.resolve[("dead.test", 443)] = ("127.0.0.1", dead_port)
        reply = await _exchange(port, b"CONNECT dead.test:443 HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 502 Bad Gateway") and b"cannot connect to dead.test:443" in reply

    run_edge_test(tmp_path, scenario)


def test_core_locator_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "core.json"
    locator = CoreLocator(path)
    assert locator.port() is None
    path.write_text(json.dumps({"port": 1234}))
    assert locator.port() == 1234
    path.write_text("garbage")
    assert locator.port() is None
    path.unlink()
    assert locator.port() is None


# ---- API -------------------------------------------------------------------------------------------


def api_exchange(request: bytes) -> tuple[int, dict[str, str], dict]:
    """One raw request to a real tornado-served `Api` on an ephemeral loopback port (PORT in the request is
    replaced by that port); the answer's status, headers and JSON body."""
    async def main() -> bytes:
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        api = Api(port)
        api.start(sock)
        try:
            return await _exchange(port, request.replace(b"PORT", str(port).encode()))
        finally:
            await api.stop()

    raw = asyncio.run(main())
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


@pytest.mark.parametrize("host", [b"127.0.0.1:PORT", b"localhost:PORT", b"[::1]:PORT"])
def test_health_answers_loopback_hosts_with_version_only(host: bytes) -> None:
    status, headers, body = api_exchange(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status == 200 and set(body) == {"status", "version"} and body["status"] == "ok"
    assert not any(h.startswith("access-control") for h in headers)


@pytest.mark.parametrize("host", [b"evil.example:PORT", b"127.0.0.1:1", b"localhost"])
def test_foreign_host_headers_are_rejected(host: bytes) -> None:
    status, _, body = api_exchange(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status == 421


def test_cors_preflight_gets_no_allow_headers() -> None:
    status, headers, _ = api_exchange(
        b"OPTIONS /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nOrigin: https://evil.example\r\n"
        b"Access-Control-Request-Private-Network: true\r\n\r\n"
    )
    assert status == 405
    assert not any(h.startswith("access-control") for h in headers)


def test_everything_but_health_needs_the_token() -> None:
    status, headers, body = api_exchange(b"GET /v1/projects HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n")
    assert status == 401 and "api-token" in body["error"]
    assert headers["www-authenticate"].startswith("Bearer")


def test_a_tunnel_nobody_uses_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    """Local denial of service: a CONNECT whose client then sends nothing (no TLS hello) may not hold its
    connection slot for the 15-minute idle limit."""
    async def scenario(port: int, edge: Edge, upstream_port: int) -> None:
        edge.handshake_timeout = 0.5
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the edge
        assert 0.4 < asyncio.get_running_loop().time() - started < 3
        await asyncio.sleep(0.1)
        assert edge.stats.active == 0
        writer.close()
        # A client that does speak gets the idle limit, not the handshake timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"echo:hello"
        await asyncio.sleep(1.0)
        writer.write(b"again")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"echo:again"
        writer.close()

    run_edge_test(tmp_path, scenario)


def test_while_no_edge_can_start_the_supervisor_answers_503_at_once() -> None:
    """The proxy port never hangs: the supervisor's own listening socket answers 503 until an edge runs."""
    from halton_meter.serve.supervisor import _answer_503

    async def main() -> bytes:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        task = asyncio.get_running_loop().create_task(_answer_503(listener.dup()))
        try:
            return await _exchange(port, b"CONNECT api.anthropic.com:443 HTTP/1.1\r\n\r\n")
        finally:
            task.cancel()
            listener.close()

    reply = asyncio.run(main())
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable") and b"halton-meter status" in reply
