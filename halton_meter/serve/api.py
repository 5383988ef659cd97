"""The loopback API (default 127.0.0.1:8765).

* `GET /health` is open and says only "ok" and the version.
* Everything else needs `Authorization: Bearer <token>`, the random token in `$HALTON_METER_HOME/api-token`
  (mode 0600; the CLI and your own scripts read it from there): `GET /v1/stats` (what the edge and the
  core publish), `GET /v1/calls?limit=N` (recent calls), `GET /v1/report?since=7d&by=project,model` (the
  `report --json` document; the parameters mirror its options), `GET /v1/projects` (`projects --json`).

Defences from the first line: only loopback `Host` values naming our port are served (DNS rebinding gets
421), no CORS or Private-Network-Access headers are ever sent, headers have a size and time limit, every
response closes the connection, and reads of the database run off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from halton_meter import __version__
from halton_meter.errors import ExitCode, HaltonError, UsageError
from halton_meter.paths import Paths, write_atomic

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT = 5.0
MAX_CONCURRENT = 32
"""Requests being answered at once (each may read the database on a worker thread)."""
MAX_CONNECTIONS = 512
"""Open connections, idle ones included: a connection holds no request slot until its head has arrived,
so idle connections cannot lock the API; beyond this many, a new one is answered 503 at once."""


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


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


Handler = Callable[[dict[str, list[str]]], Any]


class Api:
    def __init__(self, port: int, token: str | None = None, paths: Paths | None = None) -> None:
        self.port = port
        self._hosts = allowed_hosts(port)
        self._token = token
        self._paths = paths
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._open = 0
        self._routes: dict[str, Handler] = {"/v1/stats": self._stats, "/v1/calls": self._calls,
                                            "/v1/report": self._report, "/v1/projects": self._projects}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            await _send(writer, 503, {"error": "too many connections"})
            return
        self._open += 1
        try:
            await self._handle(reader, writer)
        finally:
            self._open -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _send(writer, 431, {"error": "request header too large"})
            return
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            writer.close()
            return
        if self._slots.locked():
            await _send(writer, 503, {"error": "too many concurrent requests"})
            return
        async with self._slots:
            try:
                status, body = self.check(head)
                if status == 0:
                    handler, query = body
                    status, body = 200, await asyncio.to_thread(handler, query)
            except HaltonError as exc:  # a bad parameter or an unreadable database: say which
                status, body = (400 if exc.exit_code == ExitCode.USAGE else 503), {"error": exc.message}
            except Exception as exc:  # a bug answers 500, never kills the API
                status, body = 500, {"error": f"internal error: {type(exc).__name__}"}
            await _send(writer, status, body)

    def check(self, head: bytes) -> tuple[int, Any]:
        """(0, (handler, query)) for a request to serve; otherwise (status, error body)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return 400, {"error": "bad request line"}
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("host", "").lower() not in self._hosts:
            return 421, {"error": "this API only answers to 127.0.0.1, localhost or [::1] with its port"}
        path, _, query = target.partition("?")
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return 405, {"error": "use GET"}
            # Unauthenticated, so it says nothing beyond "alive" and the version.
            return 200, {"status": "ok", "version": __version__}
        given = headers.get("authorization", "")
        expected = f"Bearer {self._token}" if self._token else None
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return 401, {"error": "missing or wrong token: send `Authorization: Bearer <token>` with the token "
                                  "from $HALTON_METER_HOME/api-token"}
        if method != "GET":
            return 405, {"error": "the API is read-only: use GET"}
        handler = self._routes.get(path)
        if handler is None or self._paths is None:
            return 404, {"error": f"no such endpoint: {path}"}
        return 0, (handler, parse_qs(query))

    # ---- endpoints (run in a worker thread) ---------------------------------------------------------

    def _stats(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats

        assert self._paths is not None
        run = self._paths.run_dir
        return {"core": read_stats(run / CORE_STATS), "edge": read_stats(run / EDGE_STATS), "version": __version__}

    def _calls(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from halton_meter.store.queries import list_calls, open_reader
        from halton_meter.store.schema import initialised

        assert self._paths is not None
        limit = _int(query, "limit", 50, 1, 1000)
        records = list_calls(open_reader(self._paths.db), limit) if initialised(self._paths.db) else []
        return {"calls": [r.to_public() for r in records]}

    def _report(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The `report --json` document. Parameters mirror the options: `since`, `until`, `window` (today,
        yesterday, week, month), `by` (repeat or comma-separate), `project`, `model`, `provider`, `client`,
        `branch`, `key` (each repeatable), `vs_previous=1`."""
        from halton_meter import report
        from halton_meter.config import load_config
        from halton_meter.store.aggregate import Filters
        from halton_meter.timewindow import DEFAULT_SINCE, resolve_window

        assert self._paths is not None
        allowed = {"since", "until", "window", "by", "vs_previous", "project", "model", "provider", "client",
                   "branch", "key"}
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise UsageError(f"unknown parameter {unknown[0]!r}; use {', '.join(sorted(allowed))}")
        single = {name: values[-1] for name, values in query.items() if name in ("since", "until", "window")}
        calendar = single.get("window")
        if calendar is not None and calendar not in ("today", "yesterday", "week", "month"):
            raise UsageError(f"window {calendar!r} is not a window; use today, yesterday, week or month")
        flags: dict[str, Any] = {calendar: True} if calendar else {}
        window = resolve_window(**flags, since=single.get("since"),
                                until=single.get("until"), default_since=DEFAULT_SINCE, prefix="")
        key_names = load_config(self._paths).key_names
        # five positional fields (project … branch): mypy cannot count a starred generator
        filters = Filters(*(tuple(query.get(name, ())) for name in ("project", "model", "provider", "client",  # type: ignore[misc]
                                                                     "branch")),
                          key=report.key_filter(query.get("key", []), key_names))
        vs_previous = query.get("vs_previous", ["0"])[-1].lower() in ("1", "true", "yes")
        return report.build(self._paths.db, window, by=report.parse_by(query.get("by", [])) or report.DEFAULT_BY,
                            filters=filters, vs_previous=vs_previous, key_names=key_names).to_json()

    def _projects(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from halton_meter.store.queries import open_reader, project_summaries
        from halton_meter.store.schema import initialised
        from halton_meter.timewindow import resolve_window

        assert self._paths is not None
        window = resolve_window(since=query.get("since", [None])[-1], until=query.get("until", [None])[-1],
                                default_since=None, prefix="")
        summaries = project_summaries(open_reader(self._paths.db), window.since_iso, window.until_iso) \
            if initialised(self._paths.db) else []
        return {"window": window.label, "since": window.since_iso, "until": window.until_iso,
                "projects": [s.to_json() for s in summaries]}


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(query.get(name, [default])[0])))
    except ValueError:
        return default


async def _send(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    payload = json.dumps(body, default=str).encode()
    extra = 'www-authenticate: Bearer realm="halton-meter"\r\n' if status == 401 else ""
    with contextlib.suppress(Exception):
        writer.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\ncache-control: no-store\r\n{extra}connection: close\r\n\r\n".encode()
            + payload
        )
        await asyncio.wait_for(writer.drain(), 5)
    with contextlib.suppress(Exception):
        writer.close()

