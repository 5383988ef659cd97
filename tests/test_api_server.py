"""The loopback API served by tornado: every defence of the hand-written server it replaced, the streaming
exports and the live tail, against the real `Api` on a real 127.0.0.1 socket (tests/apikit.py), and the
live tail once more against a real `halton-meter serve`."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
from apikit import TOKEN, parse, raw, running_api
from reportkit import call, write

from halton_meter.errors import DatabaseError
from halton_meter.paths import Paths
from halton_meter.serve import api as api_module
from halton_meter.serve import endpoints
from halton_meter.serve.api import MAX_CONCURRENT, MAX_LIVE, SECURITY_HEADERS, TOKEN_ERROR
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import Reply


@pytest.fixture
def seeded(paths: Paths) -> Paths:
    write(paths.db, [call("2026-11-22T10:00:00.000000Z", project="alpha"),
                     call("2026-11-22T11:00:00.000000Z", project="beta", id="call-beta")])
    return paths


def _security_headers_present(headers: httpx.Headers | dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name
    assert "server" not in headers
    assert not [h for h in headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize("host", [b"127.0.0.1:PORT", b"localhost:PORT", b"[::1]:PORT"])
def test_health_is_open_and_says_only_ok_and_the_version(host: bytes) -> None:
    with running_api() as api:
        status, headers, body = parse(raw(api.port, b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"))
    assert status == 200 and set(json.loads(body)) == {"status", "version"}
    assert headers["connection"] == "close"
    _security_headers_present(headers)


@pytest.mark.parametrize("host", [b"evil.example:PORT", b"127.0.0.1:1", b"localhost", b"127.0.0.1.evil.example:PORT",
                                  None])
def test_foreign_or_missing_host_gets_421_even_with_the_token(host: bytes | None) -> None:
    host_line = b"Host: " + host + b"\r\n" if host is not None else b""
    with running_api() as api:
        for path in (b"/health", b"/v1/stats"):
            status, headers, body = parse(raw(api.port, b"GET " + path + b" HTTP/1.1\r\n" + host_line
                                              + b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"))
            assert status == 421 and "127.0.0.1, localhost or [::1]" in json.loads(body)["error"]
            _security_headers_present(headers)


@pytest.mark.parametrize("path", ["/health", "/v1/stats", "/", "/v1/login-codes"])
def test_cors_preflight_gets_405_and_no_cors_or_private_network_headers(path: str) -> None:
    with running_api() as api:
        status, headers, _ = parse(raw(api.port, (
            f"OPTIONS {path} HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nOrigin: https://evil.example\r\n"
            "Access-Control-Request-Method: GET\r\nAccess-Control-Request-Private-Network: true\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()))
    assert status == 405
    assert not [h for h in headers if h.startswith("access-control-")]


def test_without_the_token_everything_but_health_is_401_with_the_same_words(seeded: Paths) -> None:
    with running_api(seeded) as api, api.client() as client:
        for path in [*endpoints.ROUTES, "/v1/nope", "/health/../v1/stats", "/v1/stats?token=x"]:
            for authorization in (None, "Bearer " + "x" * 43, "Bearer", f"Basic {TOKEN}", f"bearer{TOKEN}"):
                headers = {"authorization": authorization} if authorization else {}
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, authorization)
                assert response.json() == {"error": TOKEN_ERROR}
                assert response.headers["www-authenticate"] == 'Bearer realm="halton-meter"'
        assert client.get("/v1/stats", headers=api.bearer()).status_code == 200


def test_errors_are_json_usage_400_other_halton_errors_503_bugs_500_with_the_type_only(
        seeded: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(paths: Paths, query: dict[str, list[str]]) -> dict[str, object]:
        raise KeyError("SECRET-DETAIL")

    def unreadable(paths: Paths, query: dict[str, list[str]]) -> dict[str, object]:
        raise DatabaseError("database is damaged")

    monkeypatch.setitem(endpoints.ROUTES, "/v1/test-bug", bug)
    monkeypatch.setitem(endpoints.ROUTES, "/v1/test-unreadable", unreadable)
    with running_api(seeded) as api, api.client(headers=api.bearer()) as client:
        response = client.get("/v1/report?since=yesterday")
        assert response.status_code == 400 and "since 'yesterday' is not a time" in response.json()["error"]
        assert client.get("/v1/test-unreadable").json() == {"error": "database is damaged"}
        assert client.get("/v1/test-unreadable").status_code == 503
        response = client.get("/v1/test-bug")
        assert response.status_code == 500 and response.json() == {"error": "internal error: KeyError"}
        response = client.get("/v1/nope")
        assert response.status_code == 404 and response.json() == {"error": "no such endpoint: /v1/nope"}
        _security_headers_present(response.headers)
        # and it keeps serving
        assert client.get("/v1/calls?limit=1").json()["calls"][0]["id"] == "call-beta"


def test_the_endpoints_answer_what_they_answered_before(seeded: Paths) -> None:
    with running_api(seeded) as api, api.client(headers=api.bearer()) as client:
        calls = client.get("/v1/calls?limit=5").json()["calls"]
        assert [c["project"] for c in calls] == ["alpha", "beta"]
        detail = client.get("/v1/calls/call-beta")  # (its shape is serve/endpoints.py's business)
        assert detail.status_code == 200 and '"call-beta"' in detail.text and '"beta"' in detail.text
        missing = client.get("/v1/calls/nope")
        assert missing.status_code == 404 and list(missing.json()) == ["error"]
        assert {p["project"] for p in client.get("/v1/projects").json()["projects"]} == {"alpha", "beta"}
        report = client.get("/v1/report?since=2026-11-22&until=2026-11-23&by=project").json()
        assert report == endpoints.ROUTES["/v1/report"](seeded, {"since": ["2026-11-22"], "until": ["2026-11-23"],
                                                                   "by": ["project"]})
        stats = client.get("/v1/stats")
        assert stats.headers["content-type"] == "application/json" and "version" in stats.json()
        assert stats.headers["cache-control"] == "no-store"


def test_exports_download_every_call(seeded: Paths) -> None:
    with running_api(seeded) as api, api.client(headers=api.bearer()) as client:
        response = client.get("/v1/export.csv")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert re.fullmatch(r'attachment; filename="?[\w.-]+\.csv"?', response.headers["content-disposition"])
        lines = response.text.splitlines()
        assert len(lines) >= 3 and "call-beta" in response.text and "alpha" in response.text
        export = client.get("/v1/export.json")
        assert export.status_code == 200 and export.headers["content-type"].startswith("application/json")
        assert "call-beta" in json.dumps(export.json())
        _security_headers_present(response.headers)


def test_an_export_streams_each_chunk_before_the_iterator_ends(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first chunk reaches the client while the generator is still blocked: nothing is joined in memory."""
    release = threading.Event()
    finished = threading.Event()

    def slow(paths: Paths, query: dict[str, list[str]]) -> tuple[str, str, Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            yield b"first,chunk\n"
            assert release.wait(10)
            yield b"second,chunk\n"
            finished.set()

        return "text/csv", "slow.csv", chunks()

    monkeypatch.setitem(endpoints.EXPORTS, "/v1/test-slow.csv", slow)
    with running_api(paths) as api, api.client(headers=api.bearer()) as client:
        with client.stream("GET", "/v1/test-slow.csv") as response:
            assert response.status_code == 200
            pieces = response.iter_bytes()
            assert next(pieces) == b"first,chunk\n"
            assert not finished.is_set()
            release.set()
            assert b"".join(pieces) == b"second,chunk\n"
        assert finished.is_set()


def test_an_export_that_fails_midway_is_cut_not_completed(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(paths: Paths, query: dict[str, list[str]]) -> tuple[str, str, Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            yield b"a,b\n"
            raise OSError("disk gone")

        return "text/csv", "broken.csv", chunks()

    def unreadable(paths: Paths, query: dict[str, list[str]]) -> tuple[str, str, Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            raise DatabaseError("database is damaged")
            yield b""

        return "text/csv", "unreadable.csv", chunks()

    monkeypatch.setitem(endpoints.EXPORTS, "/v1/test-broken.csv", broken)
    monkeypatch.setitem(endpoints.EXPORTS, "/v1/test-unreadable.csv", unreadable)
    with running_api(paths) as api, api.client(headers=api.bearer()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/v1/test-broken.csv")
        response = client.get("/v1/test-unreadable.csv")  # before the first chunk: a plain error answer
        assert response.status_code == 503 and response.json() == {"error": "database is damaged"}
        assert "content-disposition" not in response.headers
        assert client.get("/health").status_code == 200


def test_too_many_concurrent_requests_get_503_and_the_api_recovers(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()

    def held(paths: Paths, query: dict[str, list[str]]) -> dict[str, object]:
        gate.wait(20)
        return {"ok": True}

    monkeypatch.setitem(endpoints.ROUTES, "/v1/test-held", held)
    with running_api(paths) as api:
        results: list[int] = []

        def one() -> None:
            with api.client(headers=api.bearer(), timeout=30) as client:
                results.append(client.get("/v1/test-held").status_code)

        threads = [threading.Thread(target=one) for _ in range(MAX_CONCURRENT)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while api.api.busy < MAX_CONCURRENT and time.monotonic() < deadline:
            time.sleep(0.02)
        with api.client(headers=api.bearer()) as client:
            response = client.get("/v1/stats")
            assert response.status_code == 503 and response.json() == {"error": "too many concurrent requests"}
            gate.set()
            for thread in threads:
                thread.join(30)
            assert results == [200] * MAX_CONCURRENT
            assert client.get("/v1/stats").status_code == 200


def test_idle_connections_cannot_lock_the_api_and_beyond_the_cap_get_503_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "MAX_CONNECTIONS", 20)
    with running_api() as api:
        idle = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(19)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            status, _, _ = parse(raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n"))
            assert status == 200 and time.monotonic() - started < 2.0
            time.sleep(0.3)  # that connection is closed and counted out
            idle.append(socket.create_connection(("127.0.0.1", api.port), timeout=5))
            time.sleep(0.3)
            started = time.monotonic()
            reply = raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n")
            status, headers, body = parse(reply)
            assert status == 503 and json.loads(body) == {"error": "too many connections"}
            assert time.monotonic() - started < 2.0
            _security_headers_present(headers)
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert parse(raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n"))[0] == 200


def test_a_slow_or_oversized_head_is_cut_and_the_api_keeps_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "HEAD_TIMEOUT", 0.5)
    with running_api() as api:
        started = time.monotonic()
        assert raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n") == b""  # never finished
        assert 0.4 < time.monotonic() - started < 3
        reply = raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        assert reply == b"" or parse(reply)[0] in (400, 431)
        reply = raw(api.port, b"POST /logout HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nContent-Length: 100000\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n" + b"x" * 100_000)
        assert reply == b"" or parse(reply)[0] in (400, 413)
        assert parse(raw(api.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n"))[0] == 200


def test_dashboard_files_are_package_data_served_without_listing_or_traversal(paths: Paths) -> None:
    folder = resources.files("halton_meter.serve.dashboard")
    assert folder.joinpath("index.html").is_file()
    index = folder.joinpath("index.html").read_text()
    assert '/static/app.js' in index and "<style" not in index and "<script>" not in index
    with running_api(paths) as api, api.client(headers=api.bearer()) as client:
        response = client.get("/")
        assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.text == index
        _security_headers_present(response.headers)
        assert client.get("/static/index.html").text == index
        for path in ("/static/", "/static", "/static/__init__.py", "/static/..%2f__init__.py", "/static/..%2fapi.py",
                     "/static/%2e%2e%2f%2e%2e%2fapi-token", "/static/.hidden", "/static/nope.js"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "Halton Meter dashboard" not in response.text and "import" not in response.text


def test_the_dashboard_files_ship_in_the_wheel() -> None:
    """hatch puts every file under a listed package in the wheel unless an exclude (or .gitignore) drops it."""
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    wheel = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "halton_meter" in wheel["packages"] and not wheel.get("exclude") and not wheel.get("only-include")
    ignored = (repo / ".gitignore").read_text() if (repo / ".gitignore").exists() else ""
    for pattern in ("*.html", "*.js", "*.css", "dashboard"):
        assert pattern not in ignored.split(), pattern
    assert resources.files("halton_meter.serve.dashboard").joinpath("index.html").is_file()


def test_live_sends_each_call_as_it_ends_and_stops_with_the_api(paths: Paths) -> None:
    write(paths.db, [call("2026-11-22T10:00:00.000000Z", id="old-call")])
    with running_api(paths) as api, api.client(headers=api.bearer(), timeout=10) as client:
        with client.stream("GET", "/v1/live") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-store"
            lines = response.iter_lines()
            assert next(lines) == ": live"
            write(paths.db, [call("2026-11-22T12:00:00.000000Z", id="new-call")])
            committed = time.monotonic()
            while (line := next(lines)) != "event: call":
                assert line == "" or line.startswith(":"), line
            data = next(lines)
            assert time.monotonic() - committed < 2.0
            assert json.loads(data.removeprefix("data: "))["id"] == "new-call"
            stopped = time.monotonic()
            api.stop()
            rest = list(lines)  # the stream ends cleanly (no protocol error) when the API stops
            assert time.monotonic() - stopped < 3.0 and "old-call" not in "".join(rest)


def test_live_streams_are_capped(paths: Paths) -> None:
    with running_api(paths) as api:
        clients = [api.client(headers=api.bearer()) for _ in range(MAX_LIVE + 1)]
        streams = []
        try:
            for client in clients[:MAX_LIVE]:
                stream = client.stream("GET", "/v1/live")
                response = stream.__enter__()
                assert response.status_code == 200
                streams.append(stream)
            response = clients[-1].get("/v1/live")
            assert response.status_code == 503 and "live streams" in response.json()["error"]
            assert clients[-1].get("/v1/stats").status_code == 200  # streams hold no request slot
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
            for client in clients:
                client.close()
        deadline = time.monotonic() + 5
        while api.api.live and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.api.live == 0


@pytest.mark.e2e
def test_live_delivers_a_metered_call_within_2s_of_its_row_committing(meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=7, output_tokens=3)))
    token = (meter.home / "api-token").read_text().strip()
    received: list[tuple[float, dict[str, object]]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{meter.api_port}/v1/live", trust_env=False, timeout=20,
                          headers={"authorization": f"Bearer {token}"}) as response:
            for line in response.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    received.append((time.monotonic(), json.loads(line[6:])))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        response = client.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": "sk-ant-CANARY-live"},
                               json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
        assert response.status_code == 200
    rows = meter.wait_for_calls(before + 1)
    committed = time.monotonic()
    listener.join(5)
    assert received, "no call event within 5 s"
    arrived, data = received[0]
    assert arrived - committed < 2.0
    assert data["id"] == rows[-1]["id"] and data["input_tokens"] == 7
