"""The core's mitmproxy addon in-process, with mitmproxy's own test helpers (`mitmproxy.test.taddons`,
`tflow`, `tutils`): no sockets, no processes. Each test sends one flow through the hooks in the order
mitmproxy calls them and looks at the records the addon submits."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.test import taddons, tflow, tutils

from halton_meter.attribution.service import Resolution
from halton_meter.core.addon import MeterAddon
from halton_meter.core.routing import RoutingTable
from halton_meter.lifecycle.selftest import CANARY_HOST, CANARY_PATH
from halton_meter.testing import bodies
from halton_meter.types import SELF_TEST_KIND, SELF_TEST_PROJECT, SELF_TEST_SOURCE, Attribution, CallRecord
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider
from halton_meter_plugins.providers.selftest import SelfTestProvider

CHAT = "/v1/chat/completions"


class Attributions:
    """Every connection belongs to `project` (answered at once, like a finished lookup)."""

    def __init__(self, project: str = "") -> None:
        self.resolution = Resolution(attribution=Attribution(project, "test") if project else Resolution().attribution)

    def lookup(self, *args: Any) -> Future[Resolution]:
        future: Future[Resolution] = Future()
        future.set_result(self.resolution)
        return future

    refresh = lookup


def make_addon(*providers: Any, project: str = "", **options: Any) -> tuple[MeterAddon, list[CallRecord]]:
    submitted: list[CallRecord] = []

    def submit(record: CallRecord) -> bool:
        submitted.append(record)
        return True

    addon = MeterAddon(RoutingTable(providers or (OpenAICompatibleProvider(),)), submit,
                       Attributions(project), **options)  # type: ignore[arg-type]
    return addon, submitted


def request(host: str, path: str, body: bytes, **headers: str) -> http.Request:
    return tutils.treq(host=host, port=443, scheme=b"https", method=b"POST", path=path.encode(), content=body,
                       headers=http.Headers(**{"content-type": "application/json", **headers}))


def streamed_response(status: int = 200, content_type: str = "text/event-stream") -> http.Response:
    return tutils.tresp(status_code=status, content=None,
                        headers=http.Headers(**{"content-type": content_type, "transfer-encoding": "chunked"}))


async def send(addon: MeterAddon, flow: http.HTTPFlow, response: http.Response | None = None,
               reads: list[bytes] = (), cut: bool = False) -> bytes:  # type: ignore[assignment]
    """The hooks mitmproxy calls for one proxied request, in its order: the request's, then (unless the addon
    answered itself) the response headers, each network read through `flow.response.stream`, and the end
    (`response`, or `error` for a cut connection). Returns what the client received of a streamed body."""
    with taddons.context(addon) as tctx:
        invoke = tctx.master.addons.invoke_addon
        await invoke(addon, http_layer.HttpConnectHook(flow))
        connect_answer, flow.response = flow.response, None
        await invoke(addon, http_layer.HttpRequestHeadersHook(flow))
        await invoke(addon, http_layer.HttpRequestHook(flow))
        if connect_answer is not None and connect_answer.status_code != 200:
            return b""
        received = b""
        if flow.response is None:  # not answered by the core itself: the provider's response arrives
            flow.response = response
            await invoke(addon, http_layer.HttpResponseHeadersHook(flow))
            stream = flow.response.stream
            assert callable(stream)
            for data in [*reads, *([] if cut else [b""])]:
                out = stream(data)
                received += b"".join(out) if isinstance(out, list) else out
        if cut:
            flow.error = tflow.terr("connection reset by the server")
            await invoke(addon, http_layer.HttpErrorHook(flow))
        else:
            await invoke(addon, http_layer.HttpResponseHook(flow))
        return received


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_canary_is_answered_by_the_core_and_recorded_as_the_self_test() -> None:
    addon, submitted = make_addon(SelfTestProvider(), project="someone-elses-project")
    flow = tflow.tflow(req=tutils.treq(host=CANARY_HOST, port=443, method=b"CONNECT", path=b"", content=b""))
    flow.request = request(CANARY_HOST, CANARY_PATH, b'{"model":"halton-meter-selftest","nonce":"n"}')
    flow.request.method = "CONNECT"

    async def scenario() -> None:
        with taddons.context(addon) as tctx:
            invoke = tctx.master.addons.invoke_addon
            await invoke(addon, http_layer.HttpConnectHook(flow))
            assert flow.response is not None and flow.response.status_code == 200  # no upstream connection
            flow.response = None
            flow.request.method = "POST"
            await invoke(addon, http_layer.HttpRequestHeadersHook(flow))
            await invoke(addon, http_layer.HttpRequestHook(flow))
            assert flow.response is not None  # answered locally: mitmproxy goes straight to `response`
            await invoke(addon, http_layer.HttpResponseHook(flow))

    run(scenario())
    assert flow.response.headers["x-halton-meter"] == "selftest"
    [record] = submitted  # no provisional row for a call the core answers itself
    assert (record.endpoint_kind, record.project, record.project_source) == \
        (SELF_TEST_KIND, SELF_TEST_PROJECT, SELF_TEST_SOURCE)
    assert (record.status, record.complete, record.model) == (200, True, "halton-meter-selftest")
    assert addon.in_flight == 0 and addon.metered == 1


def test_a_metered_stream_gives_a_provisional_then_a_final_record() -> None:
    addon, submitted = make_addon(project="p")
    events = bodies.openai_chat_stream_events(prompt_tokens=40, completion_tokens=3)
    flow = tflow.tflow(req=request("api.openai.com", CHAT, b'{"model":"gpt-4o","stream":true}'))
    received = run(send(addon, flow, streamed_response(), events))
    assert received == b"".join(bodies.openai_chat_stream_events(prompt_tokens=40, completion_tokens=3,
                                                                 include_usage=False))
    provisional, final = submitted
    assert provisional.id == final.id and provisional.incomplete_reason == "in_progress"
    assert (final.input_tokens, final.output_tokens, final.complete, final.project) == (40, 3, True, "p")


def test_a_record_that_cannot_be_built_is_written_degraded() -> None:
    class Broken(OpenAICompatibleProvider):
        def response_parser(self, *args: Any, **kwargs: Any) -> Any:
            class Parser:
                def feed(self, data: bytes) -> None:
                    pass

                def finish(self, eof: bool) -> Any:
                    raise RuntimeError("a parser bug")

            return Parser()

    addon, submitted = make_addon(Broken(), project="p")
    flow = tflow.tflow(req=request("api.openai.com", CHAT + "?key=sk-abc123", b'{"model":"gpt-4o"}',
                                   **{"user-agent": "openai-python/1.0"}))
    run(send(addon, flow, streamed_response(content_type="application/json"), [bodies.openai_chat()]))
    final = submitted[-1]
    assert final.incomplete_reason == "internal: RuntimeError"
    assert (final.status, final.complete, final.provider, final.project) == (200, False, "openai", "p")
    assert final.user_agent == "openai-python/1.0" and "sk-abc123" not in (final.path or "")


def test_a_cut_stream_is_recorded_incomplete() -> None:
    addon, submitted = make_addon()
    events = bodies.openai_chat_stream_events()
    flow = tflow.tflow(req=request("api.openai.com", CHAT, b'{"model":"gpt-4o","stream":true}'))
    run(send(addon, flow, streamed_response(), events[:2], cut=True))
    final = submitted[-1]
    assert (final.complete, final.incomplete_reason, final.billable) == (False, "upstream_truncated", True)
    assert final.extra["connection_error"] == "connection reset by the server"


@pytest.mark.parametrize("project,kept", [("captured", True), ("other", False)])
def test_capture_is_truncated_at_the_cap_and_kept_only_for_captured_projects(project: str, kept: bool) -> None:
    addon, submitted = make_addon(project=project, capture_projects=frozenset({"captured"}), capture_max_bytes=64)
    request_body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"x" * 200 + b'"}]}'
    flow = tflow.tflow(req=request("api.openai.com", CHAT, request_body))
    run(send(addon, flow, streamed_response(content_type="application/json"), [bodies.openai_chat(text="y" * 500)]))
    final = submitted[-1]
    if not kept:
        assert final.capture is None
        return
    assert final.capture is not None
    assert final.capture["request_truncated"] is True and final.capture["response_truncated"] is True
    assert final.capture["request"] == request_body[:64].decode()
    assert len(final.capture["response"]) == 64
    assert final.input_tokens == 19  # the meter's own reading is never capped by the capture


def test_a_short_body_is_captured_whole() -> None:
    addon, submitted = make_addon(project="captured", capture_projects=frozenset({"captured"}), capture_max_bytes=4096)
    flow = tflow.tflow(req=request("api.openai.com", CHAT, b'{"model":"gpt-4o"}'))
    run(send(addon, flow, streamed_response(content_type="application/json"), [bodies.openai_chat()]))
    capture = submitted[-1].capture
    assert capture is not None and not capture["request_truncated"] and not capture["response_truncated"]
    assert capture["response"] == bodies.openai_chat().decode()


def test_a_rewriter_crash_forwards_the_stream_untouched_and_flags_the_record() -> None:
    class FailingRewriter:
        def __init__(self) -> None:
            self.reads = 0

        def rewrite(self, chunk: bytes) -> bytes:
            self.reads += 1
            if self.reads == 2:
                raise ValueError("a rewriter bug")
            return chunk

        def flush(self) -> bytes:
            return b""

    class Rewrites(OpenAICompatibleProvider):
        def response_rewriter(self, *args: Any, **kwargs: Any) -> Any:
            return FailingRewriter()

    addon, submitted = make_addon(Rewrites())
    events = bodies.openai_chat_stream_events(prompt_tokens=40, completion_tokens=3)
    flow = tflow.tflow(req=request("api.openai.com", CHAT, b'{"model":"gpt-4o","stream":true}'))
    received = run(send(addon, flow, streamed_response(), events))
    assert received == b"".join(events)  # everything reached the client, unchanged after the crash
    final = submitted[-1]
    assert final.extra["rewrite_failed"] == "ValueError"
    assert (final.input_tokens, final.output_tokens, final.complete) == (40, 3, True)
