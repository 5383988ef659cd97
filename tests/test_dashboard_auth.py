"""Signing in to the dashboard: single-use login codes, the session cookie, what needs authentication, the
Origin rule for POSTs, the security headers, and that no secret reaches a log. Against the real `Api` on a
real loopback socket (tests/apikit.py), and `halton-meter dashboard` against a real `serve`."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from apikit import parse, raw, running_api

from halton_meter.errors import ExitCode
from halton_meter.paths import Paths
from halton_meter.serve import endpoints
from halton_meter.serve.api import SECURITY_HEADERS, TOKEN_ERROR


def _headers_ok(headers: httpx.Headers | dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name
    assert not [h for h in headers if h.lower().startswith("access-control-")]


def test_a_login_link_works_once_and_sets_a_strict_http_only_cookie(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as browser:
        issued = browser.post("/v1/login-codes", headers=api.bearer())
        assert issued.status_code == 200
        data = issued.json()
        assert data["expires_in"] == 60 and data["url"] == f"http://127.0.0.1:{api.port}/login?code={data['code']}"
        assert len(data["code"]) >= 24
        response = browser.get(data["url"])
        assert response.status_code == 303 and response.headers["location"] == "/"
        _headers_ok(response.headers)
        cookie = response.headers["set-cookie"]
        session = re.fullmatch(r"halton_meter_session=([A-Za-z0-9_-]{40,}); HttpOnly; SameSite=Strict; Path=/", cookie)
        assert session is not None, cookie
        assert "secure" not in cookie.lower() and "expires" not in cookie.lower()  # a session cookie
        # The cookie opens the page and the API.
        assert browser.get("/").status_code == 200
        assert browser.get("/v1/stats").status_code == 200
        # The same link again, from anyone: refused, with a page naming the fix.
        with api.client() as other:
            again = other.get(data["url"])
            assert again.status_code == 403 and "set-cookie" not in again.headers
            assert again.headers["content-type"].startswith("text/html")
            assert "halton-meter dashboard" in again.text and "<script" not in again.text
            _headers_ok(again.headers)
            assert other.get("/v1/stats").status_code == 401
        for bad in ("", "?code=", "?code=nope", f"?code={data['code']}x", f"?code={data['code'][:-1]}"):
            assert browser.get(f"/login{bad}").status_code == 403, bad


def test_an_expired_code_is_refused_and_a_session_ends_after_its_idle_time(paths: Paths) -> None:
    now = [1000.0]
    with running_api(paths, code_ttl=60, session_idle=3600, clock=lambda: now[0]) as api, api.client() as browser:
        url = browser.post("/v1/login-codes", headers=api.bearer()).json()["url"]
        now[0] += 61
        assert browser.get(url).status_code == 403
        api.login(browser)
        now[0] += 3000
        assert browser.get("/v1/stats").status_code == 200  # used: its idle clock restarts
        now[0] += 3000
        assert browser.get("/v1/stats").status_code == 200
        now[0] += 3601
        response = browser.get("/v1/stats")
        assert response.status_code == 401 and response.json() == {"error": TOKEN_ERROR}


def test_the_ttl_is_real_time_by_default(paths: Paths) -> None:
    with running_api(paths, code_ttl=0.3) as api, api.client() as browser:
        url = browser.post("/v1/login-codes", headers=api.bearer()).json()["url"]
        time.sleep(0.5)
        assert browser.get(url).status_code == 403


def _every_route() -> list[tuple[str, str]]:
    return ([("GET", path) for path in (*endpoints.ROUTES, *endpoints.EXPORTS, "/v1/calls/x", "/v1/live", "/",
                                         "/static/app.js", "/static/index.html", "/v1/nope")]
            + [("POST", "/logout"), ("POST", "/v1/login-codes")])


def test_every_route_but_health_and_login_needs_the_token_or_a_session(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as anonymous:
        for method, path in _every_route():
            response = anonymous.request(method, path, headers={"origin": api.base})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == 'Bearer realm="halton-meter"'
            _headers_ok(response.headers)
            if path == "/":
                assert response.headers["content-type"].startswith("text/html")
                assert "halton-meter dashboard" in response.text
            else:
                assert response.json() == {"error": TOKEN_ERROR}, path
            forged = anonymous.request(method, path, headers={"origin": api.base,
                                                              "cookie": "halton_meter_session=" + "x" * 43})
            assert forged.status_code == 401, (method, path)
        assert anonymous.get("/health").status_code == 200


def test_login_codes_need_the_token_not_a_cookie(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as browser:
        api.login(browser)
        response = browser.post("/v1/login-codes", headers={"origin": api.base})
        assert response.status_code == 403 and "API token" in response.json()["error"]


@pytest.mark.parametrize("host", ["evil.example:PORT", "127.0.0.1:1", "localhost", ""])
def test_a_foreign_host_is_421_with_a_cookie_too(paths: Paths, host: str) -> None:
    with running_api(paths) as api, api.client() as browser:
        session = api.login(browser)
        host_line = f"Host: {host}\r\n" if host else ""
        for path in ("/", "/v1/stats", "/login?code=x", "/static/index.html"):
            status, headers, _ = parse(raw(api.port, (f"GET {path} HTTP/1.1\r\n{host_line}"
                                                       f"Cookie: halton_meter_session={session}\r\n\r\n").encode()))
            assert status == 421, (host, path)
            _headers_ok(headers)


def test_a_cookie_post_needs_our_own_origin(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as browser:
        api.login(browser)
        for origin in (None, "null", "http://evil.example", f"http://127.0.0.1:{api.port + 1}",
                       f"https://127.0.0.1:{api.port}", f"http://127.0.0.1:{api.port}.evil.example"):
            headers = {"origin": origin} if origin else {}
            response = browser.post("/logout", headers=headers)
            assert response.status_code == 403, origin
            assert "Origin" in response.json()["error"]
            _headers_ok(response.headers)
        assert browser.get("/v1/stats").status_code == 200  # still signed in
        # Another site's page cannot make the browser fetch with the cookie either (a navigation may).
        assert browser.get("/v1/stats", headers={"sec-fetch-site": "same-site", "sec-fetch-mode": "cors"}).status_code == 403
        assert browser.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}).status_code == 200
        for origin in (f"http://localhost:{api.port}", f"http://[::1]:{api.port}", f"http://127.0.0.1:{api.port}"):
            assert origin in api.api.origins
        response = browser.post("/logout", headers={"origin": f"http://localhost:{api.port}"})
        assert response.status_code == 200 and response.json() == {"status": "logged out"}
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert browser.get("/v1/stats").status_code == 401


def test_a_token_post_needs_no_origin(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as script:
        assert script.post("/v1/login-codes", headers=api.bearer()).status_code == 200


def test_the_security_headers_are_on_every_kind_of_answer(paths: Paths) -> None:
    with running_api(paths) as api, api.client() as client:
        answers = [client.get("/health"), client.get("/v1/stats", headers=api.bearer()), client.get("/v1/stats"),
                   client.get("/v1/nope", headers=api.bearer()), client.get("/", headers={"host": "evil.example"}),
                   client.get("/login?code=nope"), client.request("OPTIONS", "/health")]
        assert [a.status_code for a in answers] == [200, 200, 401, 404, 421, 403, 405]
        for answer in answers:
            _headers_ok(answer.headers)
            assert "server" not in answer.headers


@pytest.mark.e2e
def test_the_dashboard_command_prints_a_link_that_signs_in_and_no_secret_is_logged(meter) -> None:
    result = meter.cli("dashboard", "--no-open")
    match = re.fullmatch(r"Dashboard: (http://127\.0\.0\.1:(\d+)/login\?code=([A-Za-z0-9_-]+))  "
                         r"\(the link works once, for 60 s\)\n", result.stdout)
    assert match is not None, result.stdout
    url, port, code = match.group(1), int(match.group(2)), match.group(3)
    assert port == meter.api_port
    with httpx.Client(trust_env=False, timeout=10) as browser:
        response = browser.get(url, follow_redirects=True)
        assert response.status_code == 200 and "/static/app.js" in response.text
        session = browser.cookies["halton_meter_session"]
        assert browser.get(f"http://127.0.0.1:{port}/v1/stats").status_code == 200
        assert browser.get(url).status_code == 403
        assert browser.get(f"http://127.0.0.1:{port}/login?code=wrong-{code}").status_code == 403
    token = (meter.home / "api-token").read_text().strip()
    meter.stop()
    for path in meter.files_at_rest():
        if path.name == "api-token":
            continue
        data = path.read_bytes()
        for secret in (code, session, token):
            assert secret.encode() not in data, (path, secret[:4])


def test_the_dashboard_command_without_a_meter_is_one_line_exit_5(cli) -> None:
    result = cli("dashboard", "--no-open")
    assert result.exit_code == ExitCode.NOT_RUNNING
    assert result.stderr.count("\n") == 1 and "halton-meter serve" in result.stderr
