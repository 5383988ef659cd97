"""The loopback API and the dashboard (default 127.0.0.1:8765), served by tornado in `serve`'s event loop.

* `GET /health` is open and says only "ok" and the version.
* Everything else needs `Authorization: Bearer <token>`, the random token in `$HALTON_METER_HOME/api-token`
  (mode 0600; the CLI and your own scripts read it from there), or a dashboard session cookie (below).
  The JSON endpoints, the call detail, the exports and the live tail are listed in `serve/endpoints.py`
  (which owns the data): `GET /v1/stats`, `/v1/calls?limit=N`, `/v1/report?since=7d&by=project,model`,
  `/v1/projects`, `/v1/calls/<id>`, `/v1/export.csv`, `/v1/export.json`, and `GET /v1/live`
  (Server-Sent Events: one `call` event per call as it ends, a keep-alive comment every 15 s).
  `GET /metrics` is the Prometheus exposition (serve/metrics.py); `[api] metrics_without_token = true`
  opens it to a loopback scraper without the token.
* The dashboard (docs/dashboard.md): `halton-meter dashboard` asks `POST /v1/login-codes` (token only)
  for a single-use code valid 60 s and opens `/login?code=...`, which trades it for a session cookie
  (`HttpOnly; SameSite=Strict`, kept in this process's memory: it ends after 12 h unused, at `POST /logout`
  or when `serve` stops). `GET /` is the page, `GET /static/<file>` its files.

Defences from the first line: only loopback `Host` values naming our port are served (DNS rebinding gets
421); no CORS or Private-Network-Access headers are ever sent (OPTIONS gets 405); a POST authenticated by
the cookie must carry our own `Origin` (403 otherwise), and a cookie request a page of another site makes
from script or markup (`Sec-Fetch-Site` cross-site or same-site, not a navigation) is refused; every
response carries a strict Content-Security-Policy, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
and `nosniff`; headers have a size (8 KiB) and time (5 s) limit, bodies a small size limit; every response
closes the connection; requests being answered, open connections and live streams are capped (503
beyond); reads of the database run on worker threads, off the event loop. No token, login code or session
id is ever logged (tornado's access log is off).

Why this module is long: every route's handler sits next to the one `prepare` that guards them all, so
each defence and each route can be read, and checked against the other, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import structlog
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.web

from halton_meter import __version__
from halton_meter.errors import ExitCode, HaltonError
from halton_meter.paths import Paths, write_atomic

log = structlog.get_logger("halton_meter.api")

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT = 5.0
"""Seconds a connection may take to send its request head (and may stay idle)."""
MAX_BODY_BYTES = 4 * 1024
"""The API is read-only apart from the login code and logout: no request needs a body."""
MAX_CONCURRENT = 32
"""Requests being answered at once (each may read the database on a worker thread)."""
MAX_CONNECTIONS = 512
"""Open connections, idle ones included: a connection holds no request slot until its head has arrived,
so idle connections cannot lock the API; beyond this many, a new one is answered 503 at once."""
MAX_LIVE = 8
"""`GET /v1/live` streams open at once."""
LIVE_POLL = 0.5
LIVE_KEEPALIVE = 15.0
CODE_TTL = 60.0
"""Seconds a login code is valid (it is also single-use)."""
SESSION_IDLE = 12 * 3600.0
"""A dashboard session ends after this many seconds unused (and when `serve` stops: sessions live in memory)."""
MAX_CODES, MAX_SESSIONS = 32, 64
COOKIE = "halton_meter_session"
WORKERS = 8
WARM_DELAY = 5.0
"""Seconds after the API starts before it reads the dashboard's first figures in the background."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
TOKEN_ERROR = ("missing or wrong token: send `Authorization: Bearer <token>` with the token "
               "from $HALTON_METER_HOME/api-token")
HOST_ERROR = "this API only answers to 127.0.0.1, localhost or [::1] with its port"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                ".ico": "image/x-icon", ".json": "application/json", ".woff2": "font/woff2",
                ".map": "application/json"}
DASHBOARD_PACKAGE = "halton_meter.serve.dashboard"

T = TypeVar("T")


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def own_origins(port: int) -> frozenset[str]:
    return frozenset(f"http://{host}" for host in allowed_hosts(port))


def token_path(paths: Paths) -> Path:
    return paths.home / "api-token"


def ensure_token(paths: Paths) -> str:
    """The API token, created (random, 0600) on first use; a token others can read is replaced."""
    path = token_path(paths)
    try:
        if not path.stat().st_mode & 0o077:
            token = path.read_text().strip()
            if len(token) >= 32:
                return token
    except OSError:
        pass
    token = secrets.token_urlsafe(32)
    write_atomic(path, (token + "\n").encode(), mode=0o600)
    return token


def read_token(paths: Paths) -> str | None:
    try:
        return token_path(paths).read_text().strip() or None
    except OSError:
        return None


def dashboard_file(name: str) -> bytes | None:
    """A file of the dashboard directory by its bare name (no directories, nothing outside it), or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = resources.files(DASHBOARD_PACKAGE)
    names = {entry.name for entry in folder.iterdir() if entry.is_file()}
    if name not in names or name.endswith((".py", ".pyc")):
        return None
    return folder.joinpath(name).read_bytes()


class Secrets:
    """Login codes (single-use, short-lived) and dashboard sessions, in memory only."""

    def __init__(self, code_ttl: float, session_idle: float, clock: Callable[[], float]) -> None:
        self.code_ttl, self.session_idle, self.clock = code_ttl, session_idle, clock
        self.codes: dict[str, float] = {}  # code -> expiry
        self.sessions: dict[str, float] = {}  # session id -> last used

    def new_code(self) -> str:
        now = self.clock()
        self.codes = {c: t for c, t in self.codes.items() if t > now}
        while len(self.codes) >= MAX_CODES:
            self.codes.pop(next(iter(self.codes)))
        code = secrets.token_urlsafe(24)
        self.codes[code] = now + self.code_ttl
        return code

    def redeem(self, given: str) -> str | None:
        """A new session id for a valid, unused, unexpired code (which is used up); else None."""
        now = self.clock()
        found = None
        for code in list(self.codes):
            if hmac.compare_digest(code.encode(), given.encode()):
                found = code
        if found is None:
            return None
        expiry = self.codes.pop(found)
        if expiry <= now:
            return None
        self.sessions = {s: t for s, t in self.sessions.items() if now - t < self.session_idle}
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(min(self.sessions, key=self.sessions.__getitem__))
        session = secrets.token_urlsafe(32)
        self.sessions[session] = now
        return session

    def session(self, given: str) -> str | None:
        """The session id when `given` names a live session (its idle clock restarts); else None."""
        now = self.clock()
        for session, used in list(self.sessions.items()):
            if hmac.compare_digest(session.encode(), given.encode()):
                if now - used >= self.session_idle:
                    del self.sessions[session]
                    return None
                self.sessions[session] = now
                return session
        return None

    def end(self, session: str) -> None:
        self.sessions.pop(session, None)


class Api:
    def __init__(self, port: int, token: str | None = None, paths: Paths | None = None, *,
                 code_ttl: float = CODE_TTL, session_idle: float = SESSION_IDLE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.hosts = allowed_hosts(port)
        self.origins = own_origins(port)
        self.token = token
        self.paths = paths
        self.secrets = Secrets(code_ttl, session_idle, clock)
        self.busy = 0
        self.live = 0
        self.stopping = False
        self._pool: ThreadPoolExecutor | None = None
        self._server: CappedServer | None = None

    # ---- serving ------------------------------------------------------------------------------------

    def application(self) -> tornado.web.Application:
        args = {"api": self}
        return tornado.web.Application(
            [
                (r"/health", Health, args),
                (r"/login", Login, args),
                (r"/logout", Logout, args),
                (r"/v1/login-codes", LoginCodes, args),
                (r"/v1/live", Live, args),
                (r"/v1/calls/([^/]+)", CallDetail, args),
                (r"/", Index, args),
                (r"/static/([^/]+)", Static, args),
                (r"/metrics", Metrics, args),
                (r"/.*", Endpoint, args),
            ],
            log_function=_no_access_log, compress_response=False, serve_traceback=False,
        )

    def start(self, sock: socket.socket) -> None:
        """Serve on a bound, listening socket, in the running event loop."""
        sock.setblocking(False)
        # tornado's own lines could carry a request's header values or URI (a malformed header's value, the
        # access log's query string): neither reaches our logs. Our handlers log what matters themselves.
        logging.getLogger("tornado.access").disabled = True
        logging.getLogger("tornado.general").setLevel(logging.WARNING)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="halton-api")
        self._server = CappedServer(self.application(), no_keep_alive=True, max_header_size=MAX_HEAD_BYTES,
                                    idle_connection_timeout=HEAD_TIMEOUT, body_timeout=HEAD_TIMEOUT,
                                    max_body_size=MAX_BODY_BYTES)
        self._server.max_connections = connection_cap()
        self._server.hosts = self.hosts
        self._server.add_socket(sock)
        if self.paths is not None:
            paths, pool = self.paths, self._pool
            asyncio.get_running_loop().call_later(WARM_DELAY, lambda: None if self.stopping else pool.submit(warm, paths))

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, end the live streams (cleanly, within about a poll), close what is left."""
        self.stopping = True
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        deadline = time.monotonic() + grace
        while (self.live or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.close_all_connections(), 1.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread: the database is never read on the event loop."""
        if self._pool is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def warm(paths: Paths) -> None:
    """Read what the dashboard opens with (the overview and the 30-day chart, in the meter's zone) once, so
    the closed days' sums are cached before anyone asks (store/daycache.py). Best effort: nothing to read
    yet, or a database being replaced, simply leaves the cache cold."""
    from halton_meter.serve import endpoints

    try:
        endpoints.overview(paths, {})
        endpoints.report_document(paths, {"since": ["30d"], "by": ["day,project"], "latency": ["0"]})
    except Exception as exc:  # never more than a debug line: the page reads the same figures itself
        log.debug("the dashboard warm-up read nothing", error=type(exc).__name__)


def connection_cap() -> int:
    """MAX_CONNECTIONS, or fewer when the descriptor limit is low (half of it: the rest is the meter's)."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit of this kind
        return MAX_CONNECTIONS
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return min(MAX_CONNECTIONS, max(16, soft // 2))


def _raw_503() -> bytes:
    body = json.dumps({"error": "too many connections"}).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS.items())
    return (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{headers}connection: close\r\n\r\n").encode() + body


class CappedServer(tornado.httpserver.HTTPServer):
    """tornado's HTTPServer with a cap on open connections (beyond it, a 503 at once and the close) and the
    Host check in front of everything (a missing or foreign Host is a 421, never tornado's bare 400)."""

    max_connections = MAX_CONNECTIONS
    hosts: frozenset[str] = frozenset()

    def start_request(self, server_conn: object,
                      request_conn: tornado.httputil.HTTPConnection) -> tornado.httputil.HTTPMessageDelegate:
        return _HostGate(super().start_request(server_conn, request_conn), request_conn, self.hosts)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        """tornado's accept loop, except that running out of descriptors (EMFILE) pauses accepting for a
        second with one quiet line, instead of a traceback per turn of the event loop."""
        loop = asyncio.get_running_loop()
        removed = False

        def accept() -> None:
            for _ in range(128):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    log.warning("the API cannot accept connections: out of file descriptors; retrying in 1 s",
                                error=exc.strerror)
                    loop.remove_reader(sock)
                    loop.call_later(1.0, resume)
                    return
                self._handle_connection(connection, address)

        def resume() -> None:
            if not removed:
                loop.add_reader(sock, accept)

        def remove() -> None:
            nonlocal removed
            removed = True
            loop.remove_reader(sock)

        loop.add_reader(sock, accept)
        return remove

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if len(self._connections) >= self.max_connections:
            asyncio.ensure_future(_refuse(stream))
            return
        super().handle_stream(stream, address)


class _HostGate(tornado.httputil.HTTPMessageDelegate):
    """Answers 421 (and reads nothing more) when the Host header is missing or not one of ours."""

    def __init__(self, delegate: tornado.httputil.HTTPMessageDelegate,
                 connection: tornado.httputil.HTTPConnection, hosts: frozenset[str]) -> None:
        self.delegate, self.connection, self.hosts = delegate, connection, hosts
        self.refused = False

    def headers_received(self, start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
                         headers: tornado.httputil.HTTPHeaders) -> Awaitable[None] | None:
        if headers.get("Host", "").lower() in self.hosts:
            return self.delegate.headers_received(start_line, headers)
        self.refused = True
        body = json.dumps({"error": HOST_ERROR}).encode()
        answer = tornado.httputil.HTTPHeaders({"Content-Type": "application/json", "Content-Length": str(len(body)),
                                               **SECURITY_HEADERS})
        self.connection.write_headers(tornado.httputil.ResponseStartLine("HTTP/1.1", 421, "Misdirected Request"),
                                      answer, body)
        self.connection.finish()
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.delegate.on_connection_close()


async def _refuse(stream: tornado.iostream.IOStream) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stream.write(_raw_503()), 5)
    stream.close()


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    """tornado's access log would write request URIs (a login code rides in one): we log none."""


# ---- handlers ----------------------------------------------------------------------------------------


class Base(tornado.web.RequestHandler):
    """Every response: the security headers, JSON errors. `prepare` checks Host, capacity and authentication
    before any handler runs; `auth` is "token", "cookie" or None (for open routes)."""

    open_route = False
    api: Api
    auth: str | None = None
    session: str | None = None
    _slot = False

    def initialize(self, api: Api) -> None:
        self.api = api

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def wants_html(self) -> bool:
        path = self.request.path
        return path in ("/", "/login") or (not path.startswith("/v1/") and path != "/health"
                                           and "text/html" in self.request.headers.get("Accept", ""))

    def refuse(self, status: int, message: str, page: str | None = None) -> None:
        """Answer an error now (JSON, or a one-line page for a browser) and end the request."""
        self.clear()
        self.set_status(status)
        if status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="halton-meter"')
        if self.wants_html():
            page = page or HTML_ERRORS.get(status, message)
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(_page(http.HTTPStatus(status).phrase, page))
        else:
            self.send_json({"error": message})

    def send_json(self, body: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str).encode())

    def write_error(self, status_code: int, **kwargs: Any) -> None:  # tornado's own errors (405, 400, ...)
        messages = {405: "method not allowed: the API is read-only, use GET", 404: "not found",
                    400: "bad request", 413: "request body too large"}
        try:
            phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "error"
        self.refuse(status_code, messages.get(status_code, phrase.lower()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # tornado's default names the request URI (a login code may ride in it): the path only, here.
        if not isinstance(value, tornado.web.HTTPError):
            log.error("api handler failed", path=self.request.path, error=getattr(typ, "__name__", "?"),
                      exc_info=(typ, value, tb))

    def prepare(self) -> None:
        if self.request.headers.get("Host", "").lower() not in self.api.hosts:
            return self.refuse(421, HOST_ERROR)
        if self.api.stopping:
            return self.refuse(503, "the meter is stopping")
        if self.api.busy >= MAX_CONCURRENT:
            return self.refuse(503, "too many concurrent requests")
        self.api.busy += 1
        self._slot = True
        if self.open_route:
            return None
        self.auth = self.authenticate()
        if self.auth is None:
            return self.refuse(401, TOKEN_ERROR)
        if self.auth == "cookie":
            fetch_site = self.request.headers.get("Sec-Fetch-Site", "")
            if fetch_site in ("cross-site", "same-site") and self.request.headers.get("Sec-Fetch-Mode") != "navigate":
                return self.refuse(403, "refused: a request from another site's page")
            if self.request.method not in ("GET", "HEAD") \
                    and self.request.headers.get("Origin", "") not in self.api.origins:
                return self.refuse(403, "refused: a state-changing request needs this dashboard's own Origin")
        return None

    def authenticate(self) -> str | None:
        token = self.api.token
        given = self.request.headers.get("Authorization", "")
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return "token"
        cookie = self.get_cookie(COOKIE)
        if cookie:
            self.session = self.api.secrets.session(cookie)
            if self.session is not None:
                return "cookie"
        return None

    def release(self) -> None:
        if self._slot:
            self._slot = False
            self.api.busy -= 1

    def on_finish(self) -> None:
        self.release()

    def on_connection_close(self) -> None:
        self.release()

    async def answer(self, fn: Callable[..., Any], *args: Any, missing: str | None = None) -> None:
        """Run an endpoint on a worker thread and send its JSON, or the error it raised (a LookupError is a
        404 saying `missing`, when given)."""
        try:
            body = await self.api.run(fn, *args)
        except HaltonError as exc:  # a bad parameter or an unreadable database: say which
            return self.refuse(400 if exc.exit_code == ExitCode.USAGE else 503, exc.message)
        except LookupError as exc:
            if missing is None:
                return self._bug(exc)
            return self.refuse(404, missing)
        except Exception as exc:  # a bug answers 500, never kills the API
            return self._bug(exc)
        self.send_json(body)

    def _bug(self, exc: Exception) -> None:
        log.error("api endpoint failed", path=self.request.path, error=type(exc).__name__, exc_info=exc)
        self.refuse(500, f"internal error: {type(exc).__name__}")

    def query(self) -> dict[str, list[str]]:
        return {name: [v.decode("utf-8", "replace") for v in values]
                for name, values in self.request.query_arguments.items()}


class Health(Base):
    open_route = True

    def get(self) -> None:
        # Unauthenticated, so it says nothing beyond "alive" and the version.
        self.send_json({"status": "ok", "version": __version__})

    def head(self) -> None:
        self.get()


class Endpoint(Base):
    """The JSON endpoints and the exports of `serve/endpoints.py`, by exact path."""

    async def get(self) -> None:
        from halton_meter.serve import endpoints

        path, paths = self.request.path, self.api.paths
        route = endpoints.ROUTES.get(path)
        if paths is not None and route is not None:
            return await self.answer(route, paths, self.query())
        export = endpoints.EXPORTS.get(path)
        if paths is not None and export is not None:
            return await self.export(export, paths)
        return self.refuse(404, f"no such endpoint: {path}")

    async def export(self, export: Callable[..., tuple[str, str, Iterator[bytes]]], paths: Paths) -> None:
        try:
            content_type, filename, chunks = await self.api.run(export, paths, self.query())
        except HaltonError as exc:
            return self.refuse(400 if exc.exit_code == ExitCode.USAGE else 503, exc.message)
        except Exception as exc:
            log.error("api export failed", path=self.request.path, error=type(exc).__name__, exc_info=True)
            return self.refuse(500, f"internal error: {type(exc).__name__}")
        safe = "".join(ch for ch in filename if ch.isascii() and (ch.isalnum() or ch in "._-")) or "export"
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{safe}"')
        end = object()
        iterator = iter(chunks)
        try:
            while not self.api.stopping:
                chunk = await self.api.run(next, iterator, end)
                if chunk is end:
                    self.finish()
                    return
                if chunk:
                    self.write(chunk)
                    await self.flush()
        except tornado.iostream.StreamClosedError:  # the client left
            pass
        except Exception as exc:
            if not self._headers_written:  # nothing sent yet: an ordinary error answer
                if isinstance(exc, HaltonError):
                    self.refuse(400 if exc.exit_code == ExitCode.USAGE else 503, exc.message)
                else:
                    self._bug(exc)
            else:  # mid-stream: the status is sent; cut the transfer so it reads as failed
                log.error("api export failed", path=self.request.path, error=type(exc).__name__, exc_info=exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await self.api.run(close)
        if not self._finished:
            cut = getattr(self.request.connection, "close", None)
            if cut is not None:
                cut()
            self._finished = True
            self.on_finish()


class CallDetail(Base):
    async def get(self, call_id: str) -> None:
        from halton_meter.serve import endpoints

        if self.api.paths is None:
            return self.refuse(404, f"no such call: {call_id}")
        await self.answer(endpoints.CALL_DETAIL, self.api.paths, call_id, missing=f"no such call: {call_id}")


class Live(Base):
    """Server-Sent Events: `event: call` with each call's JSON as it ends; `: keep-alive` every 15 s."""

    closed = False

    def on_connection_close(self) -> None:
        self.closed = True
        super().on_connection_close()

    async def get(self) -> None:
        from halton_meter.serve import endpoints

        api = self.api
        if api.paths is None:
            return self.refuse(404, "no such endpoint: /v1/live")
        if api.live >= MAX_LIVE:
            return self.refuse(503, f"too many live streams (at most {MAX_LIVE})")
        api.live += 1
        self.release()  # a stream is counted among the live ones, not the requests being answered
        try:
            _, cursor = await api.run(endpoints.new_calls, api.paths, None)
            self.set_header("Content-Type", "text/event-stream")
            self.write(b": live\n\n")
            await self.flush()
            quiet_since, failing = time.monotonic(), False
            while not self.closed and not api.stopping:
                await asyncio.sleep(LIVE_POLL)
                if self.closed or api.stopping:
                    break
                try:
                    calls, cursor = await api.run(endpoints.new_calls, api.paths, cursor)
                    failing = False
                except HaltonError as exc:
                    if not failing:
                        self.write(f"event: error\ndata: {json.dumps({'error': exc.message})}\n\n".encode())
                        await self.flush()
                    failing = True
                    continue
                for call in calls:
                    self.write(f"event: call\ndata: {json.dumps(call, default=str)}\n\n".encode())
                if calls or time.monotonic() - quiet_since >= LIVE_KEEPALIVE:
                    if not calls:
                        self.write(b": keep-alive\n\n")
                    await self.flush()
                    quiet_since = time.monotonic()
            if not self.closed:
                self.finish()
        except tornado.iostream.StreamClosedError:
            pass
        except HaltonError as exc:
            if not self._headers_written:
                return self.refuse(400 if exc.exit_code == ExitCode.USAGE else 503, exc.message)
        finally:
            api.live -= 1


class Metrics(Base):
    """`GET /metrics` for Prometheus (serve/metrics.py, docs/metrics.md). Token or session like every route;
    with `[api] metrics_without_token = true`, a scraper without either is let in too (still loopback only
    and Host-checked, and never from another site's page)."""

    def authenticate(self) -> str | None:
        from halton_meter.serve import metrics

        found = super().authenticate()
        if found is None and self.api.paths is not None and metrics.settings(self.api.paths).api_metrics_without_token:
            return "open"
        return found

    async def get(self) -> None:
        from halton_meter.serve import metrics

        if self.api.paths is None:
            return self.refuse(404, "no such endpoint: /metrics")
        if self.auth == "open" and self.request.headers.get("Sec-Fetch-Site", "") in ("cross-site", "same-site") \
                and self.request.headers.get("Sec-Fetch-Mode") != "navigate":
            return self.refuse(403, "refused: a request from another site's page")
        try:
            body = await self.api.run(metrics.scrape, self.api.paths)
        except HaltonError as exc:  # an unreadable database: say why
            return self.refuse(503, exc.message)
        except Exception as exc:
            return self._bug(exc)
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(body)


class LoginCodes(Base):
    def post(self) -> None:
        if self.auth != "token":
            return self.refuse(403, "login codes are issued for the API token only (`halton-meter dashboard`)")
        code = self.api.secrets.new_code()
        self.send_json({"code": code, "url": f"http://127.0.0.1:{self.api.port}/login?code={code}",
                        "expires_in": int(self.api.secrets.code_ttl)})


class Login(Base):
    open_route = True

    def get(self) -> None:
        code = self.get_query_argument("code", "")
        session = self.api.secrets.redeem(code) if code else None
        if session is None:
            return self.refuse(403, "login link invalid, expired or already used", page=LOGIN_REFUSED)
        self.add_header("Set-Cookie", f"{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
        self.set_status(303)
        self.set_header("Location", "/")
        self.finish()


class Logout(Base):
    def post(self) -> None:
        if self.session is not None:
            self.api.secrets.end(self.session)
        self.add_header("Set-Cookie", f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
        if "text/html" in self.request.headers.get("Accept", ""):
            self.set_status(303)
            self.set_header("Location", "/")
            self.finish()
            return
        self.send_json({"status": "logged out"})


class Index(Base):
    def get(self) -> None:
        self.static("index.html")

    def static(self, name: str) -> None:
        data = dashboard_file(name)
        if data is None:
            return self.refuse(404, f"no such file: {name}")
        suffix = name[name.rfind("."):] if "." in name else ""
        self.set_header("Content-Type", STATIC_TYPES.get(suffix, "application/octet-stream"))
        self.finish(data)


class Static(Index):
    def get(self, name: str) -> None:  # type: ignore[override]
        self.static(name)


HTML_ERRORS = {
    401: "Not signed in. Run `halton-meter dashboard` to open the dashboard.",
    421: HOST_ERROR + ".",
}


LOGIN_REFUSED = "This login link is invalid, expired or already used. Run `halton-meter dashboard` again."


def _page(title: str, line: str) -> bytes:
    from html import escape

    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Halton Meter: {escape(title)}"
            f"</title></head>\n<body><p>{escape(line)}</p></body></html>\n").encode()
