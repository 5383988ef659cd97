"""The mitmproxy addon that meters calls: one `FlowMeter` per request, one record per call.

Event flow for a metered request:

* `http_connect`: the edge's CONNECT names the client's address; attribution starts on a worker thread.
* `requestheaders`: the routing table (built once, no pluggy) picks the provider and endpoint.
* `request`: the whole request body is here; the provider reads the model and stream intent.
* `responseheaders`: a parser is chosen and `flow.response.stream` is set to a tee, so every chunk goes
  to the client as it arrives and a copy goes (decoded, capped) into the parser.
* `response` (body ended) or `error` (cut, reset, client gone): the record is finalised once and queued
  for the writer thread.

Nothing here blocks: parsing is incremental and bounded, and all I/O happens on other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog
from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from halton_meter.attribution.service import AttributionService, Resolution
from halton_meter.clock import utc_stamp as utc_iso
from halton_meter.attribution.client_family import client_family
from halton_meter.core.records import Observed, build_record, provisional_record, stored_path
from halton_meter.core.routing import RoutingTable
from halton_meter.targets import Refused, check_target
from halton_meter.attribution.keys import credential_of, fingerprint
from halton_meter.protocol import AUTH_HEADER, PEER_HEADER, PROJECT_HEADER, PROXY_HEADER
from halton_meter.redact import is_identifier, redact
from halton_meter.types import (
    SELF_TEST_KIND,
    SELF_TEST_PROJECT,
    SELF_TEST_SOURCE,
    CallRecord,
    Endpoint,
    ParseOutcome,
    Provider,
    RequestFacts,
    StreamRewriter,
)
from halton_meter.wire import DEFAULT_DECODED_CAP, BodyDecoder, DecodeLimitExceeded, UnsupportedEncoding

log = structlog.get_logger("halton_meter.core")

REFRESH_SECONDS = 10.0
"""A keep-alive connection older than this is looked up again (by pid, no socket scan) on its next
request, so a changed branch or working directory shows up in the next calls."""
USER_AGENT_MAX = 200
ATTRIBUTION_HOLD_SECONDS = 0.25
"""At most this long a connection's first request waits for its process lookup (usually: not at all)."""
ATTRIBUTION_WAIT_SECONDS = 2.0


PARSE_SLICE = 16 * 1024
PARSE_BUDGET_SECONDS = 0.1
"""Most time one network read may spend being decoded and parsed for the meter (the bytes themselves reach
the client untouched): past it, the rest of that body is not parsed and the call is `unparsed_oversize`.
Real reads take a few milliseconds; only a decompression bomb of tiny events gets near this."""


class ParseBudgetExceeded(Exception):
    pass


FIRST_REQUEST_GRACE = 5.0


@dataclass
class ConnectionInfo:
    target: tuple[str, int] | None = None
    attribution: Future[Resolution] | None = None
    peer: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    proxy_project: str | None = None
    opened: float = field(default_factory=time.monotonic)
    requested: bool = False
    connected: bool = False
    """Came in through an (authorised) CONNECT: its requests go to `target` only."""


@dataclass
class FlowMeter:
    provider: Provider
    endpoint: Endpoint
    host: str
    started_at: str
    started_mono: float
    connection: ConnectionInfo
    facts: RequestFacts = field(default_factory=RequestFacts)
    sent_mono: float | None = None
    first_byte_mono: float | None = None
    parser: object | None = None
    decoder: BodyDecoder | None = None
    rewriter: StreamRewriter | None = None
    decode_failure: str | None = None
    request_problem: str | None = None
    finished: bool = False
    user_agent: str | None = None
    key_fingerprint: str | None = None
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    capture: dict[str, object] | None = None


class MeterAddon:
    def __init__(
        self,
        routing: RoutingTable,
        submit: Callable[[CallRecord], bool],
        attribution: AttributionService,
        resolve: dict[tuple[str, int], tuple[str, int]] | None = None,
        on_ready: Callable[[int], None] | None = None,
        capture_projects: frozenset[str] = frozenset(),
        capture_max_bytes: int = 256 * 1024,
        key_secret: bytes | None = None,
        secret: str | None = None,
    ) -> None:
        self.routing = routing
        self.submit = submit
        self.attribution = attribution
        self.resolve = resolve or {}
        self.on_ready = on_ready
        self.capture_projects = capture_projects
        self.capture_max_bytes = capture_max_bytes
        self.key_secret = key_secret
        self.secret = secret
        self.refused = 0
        self.connections: dict[str, ConnectionInfo] = {}
        self.in_flight = 0
        self.metered = 0
        self.shutting_down = False
        self._pending_submits: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def running(self) -> None:
        from mitmproxy import ctx

        if self.on_ready is not None:
            addrs = ctx.master.addons.get("proxyserver").listen_addrs()
            self.on_ready(addrs[0][1])

    async def drain(self, timeout: float) -> bool:
        """Wait for in-flight calls (and their records) to finish, up to `timeout` seconds. A tunnel the
        core accepted just before the stop, whose first request is still on its way, counts as in flight
        for a few seconds: its client already got a 200 and cannot fall back to going direct."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            waiting = [c for c in self.connections.values()
                       if not c.requested and now - c.opened < FIRST_REQUEST_GRACE]
            if not (self.in_flight or self._pending_submits or waiting):
                return True
            await asyncio.sleep(0.05)
        return False

    # ---- connections -------------------------------------------------------------------------------

    def _connection(self, flow: http.HTTPFlow) -> ConnectionInfo:
        info = self.connections.get(flow.client_conn.id)
        if info is None:
            info = self.connections[flow.client_conn.id] = ConnectionInfo()
        return info

    # ---- the target policy, enforced here too (defence in depth behind the edge) ------------------------

    def _authorised(self, flow: http.HTTPFlow) -> bool:
        """The request carries the core's secret (only the edge knows it); the header never goes upstream."""
        presented = flow.request.headers.pop(AUTH_HEADER, None)
        return self.secret is None or (presented is not None and hmac.compare_digest(presented, self.secret))

    def _refuse(self, flow: http.HTTPFlow, why: str) -> None:
        self.refused += 1
        log.warning("refused by the core's policy", reason=why, host=flow.request.pretty_host)
        flow.response = http.Response.make(403, f"halton-meter core: {why}\n".encode(),
                                           {"content-type": "text/plain", "connection": "close"})

    def _allowed_target(self, host: str, port: int) -> str | None:
        """Why (host, port) may not be reached through the core, or None when it may: only hosts a provider
        claims, and never this machine, link-local or metadata addresses unless `upstream.resolve` says so."""
        if not self.routing.claims(host, port):
            return "not a metered host"
        try:
            check_target(host.lower().rstrip("."), port, self.resolve)
        except Refused as exc:
            return exc.reason
        return None

    def http_connect(self, flow: http.HTTPFlow) -> None:
        info = self._connection(flow)
        info.target = (flow.request.host.lower(), flow.request.port)
        if not self._authorised(flow):
            return self._refuse(flow, "only the Halton Meter edge may use the core")
        problem = self._allowed_target(*info.target)
        if problem is not None:
            return self._refuse(flow, problem)
        info.connected = True
        provider = self.routing.lookup(*info.target)
        local = provider is not None and type(provider).answer_locally is not Provider.answer_locally
        if local:
            # A host the core answers itself (the self-test canary): accept the tunnel without connecting
            # upstream, which mitmproxy's eager strategy would otherwise try (and fail: it never resolves).
            flow.response = http.Response.make(200)
        info.peer, info.server = _peers(flow, flow.request.headers.get(PEER_HEADER),
                                        flow.request.headers.get(PROXY_HEADER))
        info.proxy_project = _parse_project(flow.request.headers.get(PROJECT_HEADER))
        # Start the lookup now, while the client does its TLS handshake with us; not for the canary (the
        # edge's health probes only open a tunnel), whose requests, if any, look up on arrival.
        if self.routing.claims(*info.target) and info.attribution is None and not local:
            info.attribution = self.attribution.lookup(info.peer, info.proxy_project, info.server)

    def client_disconnected(self, client: object) -> None:
        self.connections.pop(getattr(client, "id", ""), None)

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Every upstream connection the core makes: only to a metered host (never this machine or metadata),
        and `upstream.resolve` applied (connect elsewhere, keeping SNI and Host)."""
        address = data.server.address
        if address is None:
            return
        problem = self._allowed_target(str(address[0]).lower(), int(address[1]))
        if problem is not None:
            self.refused += 1
            data.server.error = f"refused by the meter's target policy: {problem}"
            return
        target = self.resolve.get((str(address[0]).lower(), address[1]))
        if target is not None:
            if not data.server.sni:
                data.server.sni = str(address[0])
            data.server.address = target

    # ---- requests ----------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        info = self._connection(flow)
        info.requested = True
        if not info.connected:  # plain HTTP from the edge: every request carries the secret
            if not self._authorised(flow):
                return self._refuse(flow, "only the Halton Meter edge may use the core")
            problem = self._allowed_target(flow.request.host.lower(), flow.request.port)
            if problem is not None:
                return self._refuse(flow, problem)
        # Inside an authorised tunnel, mitmproxy pins every request to the tunnel's server connection (whose
        # every opening passed `server_connect`), whatever the request line or Host header says.
        host, port = info.target or (flow.request.pretty_host.lower(), flow.request.port)
        provider = self.routing.lookup(host, port)
        if provider is None:
            return
        path = flow.request.path.split("?", 1)[0]
        endpoint = provider.route(flow.request.method, path)
        if endpoint is None:
            return
        headers = flow.request.headers
        peer_header, project_header = headers.pop(PEER_HEADER, None), headers.pop(PROJECT_HEADER, None)
        proxy_header = headers.pop(PROXY_HEADER, None)
        if info.attribution is None:  # plain HTTP (the edge put the client's address in the request), canary
            if info.peer is None:
                info.peer, info.server = _peers(flow, peer_header, proxy_header)
            info.attribution = self.attribution.lookup(info.peer, info.proxy_project or _parse_project(project_header),
                                                       info.server)
        elif info.attribution.done() and not info.attribution.cancelled() and info.attribution.exception() is None:
            previous = info.attribution.result()
            if time.monotonic() - previous.resolved_at > REFRESH_SECONDS and previous.client.pid is not None:
                info.attribution = self.attribution.refresh(previous)
        key_fp = None
        if self.key_secret is not None:
            credential = credential_of(headers) or (flow.request.query.get("key") if "?" in flow.request.path
                                                    else None)
            if credential:
                key_fp = fingerprint(self.key_secret, credential)
        flow.metadata["halton_meter"] = FlowMeter(
            provider=provider,
            endpoint=endpoint,
            host=host if port == 443 else f"{host}:{port}",
            started_at=utc_iso(),
            started_mono=time.monotonic(),
            connection=info,
            user_agent=(headers.get("user-agent") or "")[:USER_AGENT_MAX] or None,
            key_fingerprint=key_fp,
        )
        self.in_flight += 1
        pending = info.attribution
        if not pending.done():
            # Only a connection's first request can get here (later ones find the lookup done). Hold it
            # until the client's process is known: once the request goes on, a quick call from a short-lived
            # process can end, and the process exit, before a lookup finds it. The TLS handshake since the
            # CONNECT usually covered the lookup already; the hold is bounded either way.
            return _hold_until(pending, ATTRIBUTION_HOLD_SECONDS)
        return None

    def request(self, flow: http.HTTPFlow) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None:
            return
        body = flow.request.raw_content or b""
        encoding = flow.request.headers.get("content-encoding")
        path = flow.request.path.split("?", 1)[0]
        try:
            if encoding:  # e.g. Codex sends zstd request bodies; decode a copy, capped, for reading only
                decoder = BodyDecoder(encoding)
                body = decoder.decode(body) + decoder.flush()
            headers = {k.lower(): v for k, v in flow.request.headers.items()}
            meter.facts = meter.provider.inspect_request(meter.endpoint, path, body, headers)
            local = meter.provider.answer_locally(flow.request.method, path, body)
            if local is not None:
                status, response_headers, response_body = local
                flow.response = http.Response.make(status, response_body, response_headers)
            else:
                self.submit(provisional_record(meter.record_id, meter.provider, meter.endpoint, meter.facts,
                                               flow.request.method, meter.host, flow.request.path, meter.started_at))
            if self.capture_projects:
                self._start_capture(meter, body)
            if not encoding:  # never re-encode a client's compressed body just to add a field
                replacement = meter.provider.rewrite_request(meter.endpoint, meter.facts, body)
                if replacement is not None:
                    flow.request.content = replacement
        except Exception as exc:  # a request we cannot read is still forwarded and still recorded
            meter.facts = RequestFacts()
            meter.request_problem = f"request body unreadable: {type(exc).__name__}"
        meter.sent_mono = time.monotonic()

    def _start_capture(self, meter: FlowMeter, body: bytes) -> None:
        """Opt-in body capture for the projects named in [capture]. Only configured at all if the user named
        projects; then bodies are held (capped) while the call runs and kept only if the call's project,
        known once attribution finishes, is one of them. Redaction happens before anything is stored."""
        limit = self.capture_max_bytes
        meter.capture = {"request": bytes(body[:limit]), "request_truncated": len(body) > limit,
                         "response": bytearray(), "response_truncated": False}

    # ---- responses ---------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None or flow.response is None:
            return
        response = flow.response
        content_type = response.headers.get("content-type", "")
        try:
            meter.parser = meter.provider.response_parser(
                meter.endpoint, meter.facts, response.status_code, content_type
            )
            # A parser may take more than the default cap when it keeps only the ends of a huge body.
            cap = getattr(meter.parser, "decoded_cap", DEFAULT_DECODED_CAP)
            meter.decoder = BodyDecoder(response.headers.get("content-encoding"), cap=cap)
            headers = {k.lower(): v for k, v in response.headers.items()}
            rewriter = meter.provider.response_rewriter(meter.endpoint, meter.facts, response.status_code, headers)
            if rewriter is not None:
                if meter.decoder.identity and "content-length" not in headers:
                    meter.rewriter = rewriter
                else:  # cannot change bytes of a compressed or length-framed body: forward untouched
                    meter.facts.extra["rewrite_skipped"] = "compressed or length-framed response"
        except UnsupportedEncoding as exc:
            # The token is the provider's header value: named only when it is an identifier.
            meter.decode_failure = "unsupported content-encoding" + (f" {exc}" if is_identifier(str(exc)) else "")
        except Exception as exc:  # the exception's text may echo the response: only its type is kept
            meter.decode_failure = f"parser setup failed: {type(exc).__name__}"
        response.stream = self._tee(meter)

    def _tee(self, meter: FlowMeter) -> Callable[[bytes], bytes | list[bytes]]:
        def tee(chunk: bytes) -> bytes | list[bytes]:
            if chunk and meter.first_byte_mono is None:
                meter.first_byte_mono = time.monotonic()
            if meter.decode_failure is None and meter.parser is not None and meter.decoder is not None:
                try:
                    pieces = meter.decoder.pieces(chunk) if chunk else meter.decoder.flush_pieces()
                    started = time.perf_counter()
                    for data in pieces:
                        for offset in range(0, len(data), PARSE_SLICE):
                            meter.parser.feed(data[offset:offset + PARSE_SLICE])  # type: ignore[attr-defined]
                            if time.perf_counter() - started > PARSE_BUDGET_SECONDS:
                                raise ParseBudgetExceeded
                        if meter.capture is not None:
                            self._capture_response(meter, data)
                except ParseBudgetExceeded:
                    # A read that decodes into a flood of tiny events (a compression bomb of `data: x`) would hold
                    # the event loop, and every other call, for seconds: stop reading this body instead.
                    meter.decode_failure = "unparsed_oversize"
                    meter.facts.extra["parse_budget_exceeded"] = True
                except DecodeLimitExceeded:
                    meter.decode_failure = "unparsed_oversize"
                except Exception as exc:
                    meter.decode_failure = f"undecodable body: {type(exc).__name__}"
            if meter.rewriter is not None:
                try:
                    out = meter.rewriter.rewrite(chunk) if chunk else meter.rewriter.flush()
                except Exception as exc:  # a rewriter bug must not corrupt the stream: stop rewriting
                    log.error("stream rewriter failed; forwarding untouched", error=f"{type(exc).__name__}: {exc}")
                    meter.rewriter = None
                    return chunk
                # An empty list, not b"": an empty chunk must never reach the client's framing.
                return [out] if out else []
            return chunk

        return tee

    def _capture_response(self, meter: FlowMeter, data: bytes) -> None:
        captured = meter.capture["response"]  # type: ignore[index]
        room = self.capture_max_bytes - len(captured)  # type: ignore[arg-type]
        if room > 0:
            captured += data[:room]  # type: ignore[operator]
        if len(data) > room:
            meter.capture["response_truncated"] = True  # type: ignore[index]

    def response(self, flow: http.HTTPFlow) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is not None and meter.first_byte_mono is None and flow.response is not None \
                and flow.response.raw_content:
            # A body that never went through the tee (a local answer): parse it whole, here.
            if meter.parser is None:
                self.responseheaders(flow)
            self._tee(meter)(flow.response.raw_content)
            flow.response.stream = False
        self._finalise(flow, eof=True)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finalise(flow, eof=False)

    # ---- records -----------------------------------------------------------------------------------

    def _finalise(self, flow: http.HTTPFlow, eof: bool) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None or meter.finished:
            return
        meter.finished = True
        self.in_flight -= 1
        try:
            record = self._record(flow, meter, eof)
        except Exception as exc:  # never lose the call: write what we know
            log.error("building record failed", error=f"{type(exc).__name__}: {exc}")
            record = self._degraded_record(flow, meter, f"internal: {type(exc).__name__}")
        if meter.capture is not None:
            record.capture = meter.capture  # raw for now: decided and redacted once the project is known
        future = meter.connection.attribution
        if future is None or future.done():
            self._attach_attribution(record, future)
            self._submit(record)
        else:
            task = asyncio.get_running_loop().create_task(self._submit_when_attributed(record, future))
            self._pending_submits.add(task)
            task.add_done_callback(self._pending_submits.discard)

    def _record(self, flow: http.HTTPFlow, meter: FlowMeter, eof: bool) -> CallRecord:
        now = time.monotonic()
        response = flow.response
        outcome = ParseOutcome()
        if meter.parser is not None:
            outcome = meter.parser.finish(eof and meter.decode_failure is None)  # type: ignore[attr-defined]
        for key in ("rewrite_skipped", "request_read", "parse_budget_exceeded"):  # facts the record should show
            if meter.facts.extra.get(key):
                outcome.extra[key] = meter.facts.extra[key]
        sent = meter.sent_mono or meter.started_mono
        error_msg = flow.error.msg if flow.error is not None else None
        seen = Observed(
            method=flow.request.method,
            host=meter.host,
            path=flow.request.path,
            started_at=meter.started_at,
            ended_at=utc_iso(),
            status=response.status_code if response is not None else None,
            eof=eof,
            latency_ms=round((now - sent) * 1000, 3),
            ttft_ms=round((meter.first_byte_mono - sent) * 1000, 3) if meter.first_byte_mono is not None else None,
            decode_failure=meter.decode_failure,
            request_problem=meter.request_problem,
            connection_error=error_msg,
            client_gone=bool(error_msg and "client" in error_msg.lower()),
            shutdown=self.shutting_down,
            response_request_id=response.headers.get("request-id") if response is not None else None,
            user_agent=meter.user_agent,
        )
        record = build_record(meter.provider, meter.endpoint, meter.facts, outcome, seen, record_id=meter.record_id)
        record.key_fingerprint = meter.key_fingerprint
        return record

    def _degraded_record(self, flow: http.HTTPFlow, meter: FlowMeter, reason: str) -> CallRecord:
        return CallRecord(
            id=meter.record_id,
            started_at=meter.started_at,
            ended_at=utc_iso(),
            provider=meter.provider.name,
            endpoint_kind=meter.endpoint.kind,
            host=meter.host,
            method=flow.request.method,
            path=stored_path(meter.provider, flow.request.path.split("?", 1)[0]),
            status=flow.response.status_code if flow.response is not None else None,
            incomplete_reason=reason,
            user_agent=meter.user_agent,
            client=client_family(meter.user_agent),
            key_fingerprint=meter.key_fingerprint,
            billing=meter.facts.billing or meter.provider.billing,
            price_provider_id=meter.facts.price_provider_id or meter.provider.price_provider_id,
        )

    def _attach_attribution(self, record: CallRecord, future: Future[Resolution] | None) -> None:
        resolution = Resolution()
        if future is not None and future.done() and not future.cancelled():
            if future.exception() is None:
                resolution = future.result()
            else:
                log.warning("attribution failed", error=f"{type(future.exception()).__name__}: {future.exception()}")
        elif future is not None:
            log.warning("attribution did not finish in time", waited_s=ATTRIBUTION_WAIT_SECONDS)
        client = resolution.client
        record.project, record.project_source = resolution.attribution.project, resolution.attribution.source
        if record.endpoint_kind == SELF_TEST_KIND:
            # The canary is the meter testing itself: it belongs to no project, so no project's count moves.
            record.project, record.project_source = SELF_TEST_PROJECT, SELF_TEST_SOURCE
        record.client_process = client.process_name
        record.client = client_family(record.user_agent, client.tool, client.process_name)
        record.repo, record.branch = resolution.repo, resolution.branch
        raw = record.capture
        record.capture = None
        if raw is not None and record.project in self.capture_projects:
            record.capture = {
                "request": redact(bytes(raw["request"]).decode("utf-8", "replace")),
                "response": redact(bytes(raw["response"]).decode("utf-8", "replace")),
                "request_truncated": bool(raw["request_truncated"]),
                "response_truncated": bool(raw["response_truncated"]),
            }

    async def _submit_when_attributed(self, record: CallRecord, future: Future[Resolution]) -> None:
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), ATTRIBUTION_WAIT_SECONDS)
        except (TimeoutError, Exception):
            pass
        self._attach_attribution(record, future)
        self._submit(record)

    def _submit(self, record: CallRecord) -> None:
        self.metered += 1
        self.submit(record)


def _peers(flow: http.HTTPFlow, peer_header: str | None,
           proxy_header: str | None) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(client address, the address it connected to): from the edge's headers, else this connection's."""
    peer = _parse_peer(peer_header)
    if peer is not None:
        return peer, _parse_peer(proxy_header)
    sock = flow.client_conn.sockname
    return _peer_of(flow), ((str(sock[0]), int(sock[1])) if sock else None)


def _peer_of(flow: http.HTTPFlow) -> tuple[str, int] | None:
    peer = flow.client_conn.peername
    return (str(peer[0]), int(peer[1])) if peer else None


async def _hold_until(future: Future[Resolution], timeout: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)


def _parse_project(value: str | None) -> str | None:
    if not value:
        return None
    project = urllib.parse.unquote(value).strip()
    return project[:100] or None


def _parse_peer(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)
