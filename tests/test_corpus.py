"""Every corpus case, twice: straight into the provider's parser (whole and split anywhere), and through
a real `halton-meter serve` with the client's bytes compared to the provider's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from corpus import Case, all_cases, corpus_config, replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halton_meter.config import load_config
from halton_meter.core.routing import RoutingTable
from halton_meter.host import PluginHost
from halton_meter.paths import Paths
from halton_meter.pricing import Pricer
from halton_meter.testing.fake_provider import PROVIDER_HOSTS, FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess, write_config
from halton_meter.testing.providers import compress, split_points
from halton_meter.types import CallRecord

CASES = all_cases()
IDS = [c.name for c in CASES]


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> tuple[RoutingTable, Pricer]:
    home = tmp_path_factory.mktemp("corpus-config") / "home"
    write_config(home, extra=corpus_config())
    config = load_config(Paths(home))
    host = PluginHost(config).load(entry_points=False)
    return RoutingTable(host.registries.providers), Pricer(config)


def parse_case(case: Case, routing: RoutingTable, pricer: Pricer, split: list[int] | None = None) -> CallRecord:
    provider = routing.lookup(case.host, 443)
    assert provider is not None, f"no provider claims {case.host}"
    return replay(case, provider, pricer, split)


def check(record: CallRecord | dict, expect: dict) -> None:
    get = (lambda k: record[k]) if isinstance(record, dict) else (lambda k: getattr(record, k))
    actual = {k: get(k) for k in expect}
    if isinstance(record, dict):  # SQLite gives booleans back as 0/1
        actual = {k: (bool(v) if isinstance(expect[k], bool) else v) for k, v in actual.items()}
    assert actual == expect


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parser_gives_the_expected_record(case: Case, routing) -> None:
    check(parse_case(case, *routing), case.expect)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_chunking_gives_the_same_record(case: Case, routing, data) -> None:
    size = len(compress(case.body, case.encoding) if case.encoding else case.body)
    split = data.draw(split_points(size))
    check(parse_case(case, *routing, split=split), case.expect)


BYTEWISE = [c for c in CASES if len(c.body) <= 16 * 1024]


@pytest.mark.parametrize("case", BYTEWISE, ids=[c.name for c in BYTEWISE])
def test_one_byte_at_a_time_gives_the_same_record(case: Case, routing) -> None:
    size = len(compress(case.body, case.encoding) if case.encoding else case.body)
    check(parse_case(case, *routing, split=list(range(1, size))), case.expect)


# ---- through the real proxy ------------------------------------------------------------------------

E2E_CASES = [c for c in CASES if c.e2e]


@pytest.fixture(scope="module")
def fake_provider_hosts() -> tuple[str, ...]:
    return tuple(sorted({c.host for c in CASES} - set(PROVIDER_HOSTS)))


@pytest.fixture(scope="module")
def corpus_meter(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    home = tmp_path_factory.mktemp("corpus-meter") / "home"
    with MeterProcess.start(home, fake_provider, extra_config=corpus_config()) as meter:
        yield meter


@pytest.mark.e2e
@pytest.mark.parametrize("case", E2E_CASES, ids=[c.name for c in E2E_CASES])
def test_through_the_proxy(case: Case, corpus_meter: MeterProcess, fake_provider: FakeProvider) -> None:
    fake_provider.clear()
    path = case.path.split("?", 1)[0]
    headers = {"content-type": case.response_content_type, **case.response_headers}
    fake_provider.add(case.method, path, Reply(
        status=case.status, pieces=case.pieces, headers=headers, encoding=case.encoding,  # type: ignore[arg-type]
        cut_after=len(case.pieces) if case.cut else None, framing="chunked"))
    before = len(corpus_meter.rows())
    received = b""
    request_headers = {"content-type": "application/json", **case.request_headers}
    if case.encoding:
        request_headers["accept-encoding"] = case.encoding
    with corpus_meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        try:
            with client.stream(case.method, f"https://{case.host}{case.path}",
                               content=case.request_bytes if case.request is not None else None,
                               headers=request_headers) as response:
                assert response.status_code == case.status
                for chunk in response.iter_raw():
                    received += chunk
        except httpx.HTTPError:
            assert case.cut, "only a truncated response may end in a client error"
    [sent] = fake_provider.sent_log
    if case.client_view is not None:
        assert received == case.client_view
    elif case.cut:
        assert sent.wire_body.startswith(received)
    else:
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(sent.wire_body).hexdigest()
    [upstream] = fake_provider.requests
    if case.upstream_request is not None:
        assert upstream.json() == case.upstream_request
    else:
        assert upstream.body == case.request_bytes
    [row] = corpus_meter.wait_for_calls(before + 1)[before:]
    check(row, case.expect)


STREAM_CASES = [c for c in E2E_CASES if (c.sse or "stream" in c.name) and not c.cut and c.client_view is None]


@pytest.mark.e2e
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_wire_chunking_through_the_proxy_is_byte_identical(corpus_meter, fake_provider, data) -> None:
    """The provider writes a stream in arbitrary pieces (inside UTF-8 sequences, between CR and LF, inside
    JSON); the client still gets exactly the provider's bytes and the record is the same."""
    case = data.draw(st.sampled_from(STREAM_CASES), label="case")
    body = case.body
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=20), label="cuts")))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
    fake_provider.clear()
    fake_provider.add(case.method, case.path.split("?", 1)[0], Reply(
        status=case.status, pieces=pieces, headers={"content-type": case.response_content_type}, framing="chunked"))
    before = len(corpus_meter.rows())
    with corpus_meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        with client.stream(case.method, f"https://{case.host}{case.path}", content=case.request_bytes,
                           headers={"content-type": "application/json", **case.request_headers}) as response:
            received = b"".join(response.iter_raw())
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    [row] = corpus_meter.wait_for_calls(before + 1)[before:]
    check(row, case.expect)
