"""The mitmproxy addon that meters calls: one `FlowMeter` per request, one record per call.

Event flow for a metered request:

* `http_connect`: the edge's CONNECT names the client's address; attribution starts on a worker thread.
* `requestheaders`: the routing table (built once, no pluggy) picks the provider and endpoint.
* `request`: the whole request body is here; the provider reads the model and stream intent, and a block
  budget may refuse the call (in a core worker, after asking the first core's ledger: the hook then returns
  an awaitable, which mitmproxy waits for).
* `responseheaders`: a parser is chosen and `flow.response.stream` is set to a tee, so every chunk goes
  to the client as it arrives and a copy goes (decoded, capped) into the parser.
* `response` (body ended) or `error` (cut, reset, client gone): the record is finalised once and queued
  for the writer thread.

Nothing here blocks: parsing is incremental and bounded, and all I/O happens on other threads.

The per-call steps themselves (request facts, parser, tee, record, degraded record) are one
`CallPipeline` per flow (halton_meter/core/pipeline.py), which the test kit drives too; this module adds
mitmproxy, the target policy, attribution, capture and the writer around it. A client connection's state
is in halton_meter/core/connections.py.

Why this module is long: it is every mitmproxy event of a metered call in the order they happen, so one
call's path reads top to bottom; the per-call logic it would split off already lives in pipeline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass

import structlog
from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from halton_meter.attribution.client_family import client_family
from halton_meter.attribution.keys import credential_of, fingerprint
from halton_meter.attribution.service import AttributionService, Resolution
from halton_meter.core.budgetgate import BudgetGate, Decision
from halton_meter.core.connections import ConnectionInfo, parse_project, peers
from halton_meter.core.pipeline import CallPipeline
from halton_meter.core.routing import RoutingTable
from halton_meter.protocol import AUTH_HEADER, PEER_HEADER, PROJECT_HEADER, PROXY_HEADER
from halton_meter.redact import redact
from halton_meter.targets import Refused, check_target
from halton_meter.types import (
    SELF_TEST_KIND,
    SELF_TEST_PROJECT,
    SELF_TEST_SOURCE,
    CallRecord,
    Provider,
)

log = structlog.get_logger("halton_meter.core")

REFRESH_SECONDS = 10.0
"""A keep-alive connection older than this is looked up again (by pid, no socket scan) on its next
request, so a changed branch or working directory shows up in the next calls."""
USER_AGENT_MAX = 200
ATTRIBUTION_HOLD_SECONDS = 0.25
"""At most this long a connection's first request waits for its process lookup (usually: not at all)."""
ATTRIBUTION_WAIT_SECONDS = 2.0


FIRST_REQUEST_GRACE = 5.0


@dataclass
class FlowMeter:
    """A metered flow: its call's pipeline (halton_meter/core/pipeline.py) and its connection."""

    pipeline: CallPipeline
    connection: ConnectionInfo


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
        gate: BudgetGate | None = None,
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
        self.gate = gate
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
        info.peer, info.server = peers(flow, flow.request.headers.get(PEER_HEADER),
                                        flow.request.headers.get(PROXY_HEADER))
        info.proxy_project = parse_project(flow.request.headers.get(PROJECT_HEADER))
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
                self._refuse(flow, "only the Halton Meter edge may use the core")
                return None
            problem = self._allowed_target(flow.request.host.lower(), flow.request.port)
            if problem is not None:
                self._refuse(flow, problem)
                return None
        # Inside an authorised tunnel, mitmproxy pins every request to the tunnel's server connection (whose
        # every opening passed `server_connect`), whatever the request line or Host header says.
        host, port = info.target or (flow.request.pretty_host.lower(), flow.request.port)
        provider = self.routing.lookup(host, port)
        if provider is None:
            return None
        path = flow.request.path.split("?", 1)[0]
        endpoint = provider.route(flow.request.method, path)
        if endpoint is None:
            return None
        headers = flow.request.headers
        peer_header, project_header = headers.pop(PEER_HEADER, None), headers.pop(PROJECT_HEADER, None)
        proxy_header = headers.pop(PROXY_HEADER, None)
        if info.attribution is None:  # plain HTTP (the edge put the client's address in the request), canary
            if info.peer is None:
                info.peer, info.server = peers(flow, peer_header, proxy_header)
            info.attribution = self.attribution.lookup(info.peer, info.proxy_project or parse_project(project_header),
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
        pipeline = CallPipeline(
            provider=provider,
            endpoint=endpoint,
            method=flow.request.method,
            host=host if port == 443 else f"{host}:{port}",
            path=flow.request.path,
            user_agent=(headers.get("user-agent") or "")[:USER_AGENT_MAX] or None,
            key_fingerprint=key_fp,
            capture_max_bytes=self.capture_max_bytes,
        )
        flow.metadata["halton_meter"] = FlowMeter(pipeline=pipeline, connection=info)
        self.in_flight += 1
        pending = info.attribution
        if not pending.done():
            # Only a connection's first request can get here (later ones find the lookup done). Hold it
            # until the client's process is known: once the request goes on, a quick call from a short-lived
            # process can end, and the process exit, before a lookup finds it. The TLS handshake since the
            # CONNECT usually covered the lookup already; the hold is bounded either way.
            return _hold_until(pending, ATTRIBUTION_HOLD_SECONDS)
        return None

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None:
            return None
        call = meter.pipeline
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        try:
            body = call.read_request(flow.request.raw_content or b"", headers)
            local = call.provider.answer_locally(flow.request.method, call.bare_path, body)
            if local is None and self.gate is not None:  # a block budget may refuse it: never sent upstream
                decision = self.gate.check(call, len(body), self._dims(call, meter.connection))
                if inspect.isawaitable(decision):  # a core worker asks the first core's ledger
                    return self._request_admitted(flow, call, body, headers, decision)
                local = decision
            self._forward(flow, call, body, headers, local)
        except Exception as exc:  # a request we cannot read is still forwarded and still recorded
            call.request_failed(exc)
        call.request_sent()
        return None

    async def _request_admitted(self, flow: http.HTTPFlow, call: CallPipeline, body: bytes, headers: dict[str, str],
                                decision: Awaitable[Decision]) -> None:
        try:
            self._forward(flow, call, body, headers, await decision)
        except Exception as exc:
            call.request_failed(exc)
        call.request_sent()

    def _forward(self, flow: http.HTTPFlow, call: CallPipeline, body: bytes, headers: dict[str, str],
                 local: Decision) -> None:
        if local is not None:
            status, response_headers, response_body = local
            flow.response = http.Response.make(status, response_body, response_headers)
        else:
            self.submit(call.provisional())
        if self.capture_projects:
            # Opt-in body capture for the projects named in [capture]: held (capped) while the call runs and
            # kept only if the call's project, known once attribution finishes, is one of them. Redaction
            # happens before anything is stored.
            call.start_capture(body)
        replacement = call.rewrite_request(body, headers)
        if replacement is not None:
            flow.request.content = replacement

    def _dims(self, call: CallPipeline, info: ConnectionInfo) -> dict[str, str | None]:
        """The call's budget scope values known now (project and branch once the process lookup is done)."""
        future = info.attribution
        resolution = None
        if future is not None and future.done() and not future.cancelled() and future.exception() is None:
            resolution = future.result()
        client = resolution.client if resolution is not None else None
        return {"project": resolution.attribution.project if resolution is not None else None,
                "branch": resolution.branch if resolution is not None else None,
                "client": client_family(call.user_agent, client.tool if client else None,
                                        client.process_name if client else None),
                "key": call.key_fingerprint, "provider": call.provider.name, "model": call.facts.model_requested}

    # ---- responses ---------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None or flow.response is None:
            return
        response = flow.response
        meter.pipeline.start_response(response.status_code, {k.lower(): v for k, v in response.headers.items()})
        response.stream = meter.pipeline.tee

    def response(self, flow: http.HTTPFlow) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is not None and meter.pipeline.first_byte_mono is None and flow.response is not None \
                and flow.response.raw_content:
            # A body that never went through the tee (a local answer): parse it whole, here.
            if meter.pipeline.parser is None:
                self.responseheaders(flow)
            meter.pipeline.tee(flow.response.raw_content)
            flow.response.stream = False
        self._finalise(flow, eof=True)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finalise(flow, eof=False)

    # ---- records -----------------------------------------------------------------------------------

    def _finalise(self, flow: http.HTTPFlow, eof: bool) -> None:
        meter: FlowMeter | None = flow.metadata.get("halton_meter")
        if meter is None or meter.pipeline.finished:
            return
        self.in_flight -= 1
        call = meter.pipeline
        if call.status is None and flow.response is not None:  # a response whose headers event never ran
            call.status = flow.response.status_code
            call.response_request_id = flow.response.headers.get("request-id")
        record = call.finish(eof, connection_error=flow.error.msg if flow.error is not None else None,
                             shutdown=self.shutting_down)
        future = meter.connection.attribution
        if future is None or future.done():
            self._attach_attribution(record, future)
            self._submit(record)
        else:
            task = asyncio.get_running_loop().create_task(self._submit_when_attributed(record, future))
            self._pending_submits.add(task)
            task.add_done_callback(self._pending_submits.discard)

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


async def _hold_until(future: Future[Resolution], timeout: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
