"""Faults injected into a real `halton-meter serve` (docs/testing.md, "Faults"): nothing lost, or a clear error plus
a counted gap.

Tests that break the meter (kill, stop, lock, fill, terminate) get their own `serve`; the ones that only
send hostile traffic share one per module. Upstream is the fake provider under the real host names.
Every test states and asserts `calls sent = rows landed + rows pending + calls covered by gaps` (pending → 0);
the keep-alive and combined-fault tests in tests/test_integrity.py count "sent" at the fake provider itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultkit import (
    ANTHROPIC,
    HEADERS,
    LOCKER,
    MESSAGES,
    CallResult,
    Ledger,
    PacedLoad,
    PeakRss,
    ResetServer,
    StreamCall,
    assert_accounting,
    core_pid,
    edge_stats,
    fill,
    fresh_edge_stats,
    gap_rows,
    in_progress_rows,
    ledger,
    median,
    one_shot_client,
    percentile,
    received_since,
    request_json,
    small_tmpfs_at,
    status_json,
    status_row,
    timed_call,
    wait_core_pid,
    wait_until,
)

from halton_meter.edge.corelink import RESTART_GRACE
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Gate, Pause, Reply
from halton_meter.testing.meter import MeterProcess, meter_env, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _fresh_routes(fake_provider: FakeProvider) -> None:
    fake_provider.clear()


def _wall(iso: str) -> float:
    """A row's or gap's UTC timestamp as epoch seconds."""
    import datetime

    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


def paced(events: list[bytes], pause: float) -> list[bytes | Pause]:
    out: list[bytes | Pause] = []
    for event in events:
        out += [event, Pause(pause)]
    return out[:-1]


# --------------------------------------------------------------------------------------------------
# F1: core killed mid-stream
# --------------------------------------------------------------------------------------------------


def test_f1_core_sigkilled_mid_stream(start_meter, fake_provider) -> None:
    """Identity: 1 interrupted stream + N later calls = rows (the interrupted one as core_crash, the later
    ones metered by the restarted core: they wait out the restart instead of passing through) + 0 gaps."""
    gate = Gate(timeout=20)
    events = bodies.anthropic_stream_events(input_tokens=700, output_tokens=90)
    fake_provider.add("POST", "/v1/messages", lambda received: Reply(
        pieces=[*events[:3], gate, *events[3:]], sse=True) if received.json().get("stream")
        else Reply(body=bodies.anthropic_message(input_tokens=5, output_tokens=2)))
    meter = start_meter()
    fake_base = len(fake_provider.requests)
    victim = core_pid(meter)
    assert victim is not None
    stream = StreamCall(meter, fake_provider).start()
    try:
        gate.wait_reached(15)
        wait_until(lambda: in_progress_rows(meter) == 1, 5, what="the provisional row of the stream")
        wait_until(lambda: len(stream.body) >= len(b"".join(events[:3])), 5, what="first events at the client")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        # The in-flight stream ends promptly with an error, keeping what was already relayed.
        stream.join(10)
        assert stream.error is not None, "a cut stream must end in a client error, not a clean end"
        assert stream.ended is not None and stream.ended - killed_at < 2.0
        assert bytes(stream.body) == b"".join(events[:3])

        # New requests wait for the restarted core (a routine restart costs latency, not unmetered calls).
        later: list[CallResult] = []
        with one_shot_client(meter, fake_provider.ca_pem, timeout=10) as client:
            for _ in range(6):
                later.append(timed_call(client))
                time.sleep(0.1)
        assert [r.error for r in later] == [None] * len(later)
        assert {r.status for r in later} == {200}
        assert later[0].started + later[0].elapsed - killed_at < RESTART_GRACE + 1.0, later[0]
    finally:
        gate.open()

    # The supervisor restarted the core; start-up marked the interrupted call core_crash.
    wait_core_pid(meter, other_than=victim, timeout=30)
    crashed = wait_until(lambda: [r for r in meter.rows() if r["incomplete_reason"] == "core_crash"], 15,
                         what="a core_crash row")
    [row] = crashed
    assert row["complete"] == 0 and row["model_requested"] == "claude-sonnet-4-5"
    sent = 1 + len(later)
    ledger = assert_accounting(meter, sent, received=received_since(fake_provider, fake_base))
    assert ledger.gaps == 0 and ledger.landed == sent
    assert fresh_edge_stats(meter)["restart_waits"] >= 1


# --------------------------------------------------------------------------------------------------
# F2: core wedged (SIGSTOP 10 s, then SIGCONT)
# --------------------------------------------------------------------------------------------------


def test_f2_core_sigstopped_passes_through_then_resumes(start_meter, fake_provider) -> None:
    """Identity: calls sent at 4/s during and after a 10 s SIGSTOP = rows (metered before and after) + gaps
    (passed through while the core was wedged).

    The stop starts when no probe vouches for the core (more than PROBE_FRESH after the last call), so the
    first call pays one probe timeout; a stop right after a metered call is the xfail test below."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=9, output_tokens=3)))
    meter = start_meter()
    fake_base = len(fake_provider.requests)
    pid = core_pid(meter)
    assert pid is not None
    context = meter.ssl_context(fake_provider.ca_pem)
    with one_shot_client(meter, fake_provider.ca_pem, timeout=10, context=context) as client:
        baseline = [timed_call(client) for _ in range(5)]
        assert {r.status for r in baseline} == {200}
        normal = median([r.elapsed for r in baseline])
        time.sleep(1.5)  # past PROBE_FRESH: the next metered CONNECT probes first
        os.kill(pid, signal.SIGSTOP)
        stopped_at, stopped_wall = time.monotonic(), time.time()
        load = PacedLoad(lambda: timed_call(client), period=0.25, max_calls=120, max_seconds=25).start()
        try:
            try:
                time.sleep(10.0)
                during_stats = edge_stats(meter)
            finally:
                os.kill(pid, signal.SIGCONT)
            resumed_at, resumed_wall = time.monotonic(), time.time()
            time.sleep(4.0)
        finally:
            results = load.stop()
    failed = [r for r in results if r.error or r.status != 200]
    assert not failed, failed[:3]
    during = [r for r in results if r.started < resumed_at]
    assert len(during) >= 30
    # At most one probe timeout (0.5 s) added to a call, and only to the first ones: then it is cached.
    slowest = max(r.elapsed for r in during)
    assert slowest <= normal + 0.5 + 0.3, (normal, sorted(r.elapsed for r in during)[-5:])
    later = [r.elapsed for r in during if r.started > stopped_at + 1.0]
    assert median(later) <= normal + 0.1 and percentile(later, 0.9) <= normal + 0.25, (normal, sorted(later)[-5:])
    assert during_stats.get("passthrough", 0) >= 1 and during_stats.get("core_down_since") is not None

    sent = len(baseline) + len(results)
    ledger = assert_accounting(meter, sent, received=received_since(fake_provider, fake_base))
    gaps = gap_rows(meter)
    assert ledger.gaps == len(gaps) >= len(during) - 2  # one call per tunnel (one-shot client), each estimated 1
    assert all(g["reason"] for g in gaps)
    # Metering resumes within 2 s of SIGCONT: no call started later than that is a gap.
    late_gaps = [g for g in gaps if _wall(g["at"]) > resumed_wall + 2.0]
    assert not late_gaps, (resumed_wall, late_gaps)
    assert all(_wall(g["at"]) >= stopped_wall - 0.5 for g in gaps)
    wait_until(lambda: edge_stats(meter).get("passthrough") == ledger.gap_rows, 5,
               what="edge pass-through counter == gap rows")
    after = [r for r in results if r.started > resumed_at + 2.0]
    assert after and max(r.elapsed for r in after) <= normal + 0.5


def test_f2_core_wedged_right_after_a_metered_call_costs_at_most_one_probe_timeout(start_meter, fake_provider) -> None:
    """Identity: 2 calls = 1 row (before the stop) + 1 gap (the call that found the core wedged)."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=9, output_tokens=3)))
    meter = start_meter()
    pid = core_pid(meter)
    assert pid is not None
    fake_base = len(fake_provider.requests)
    with one_shot_client(meter, fake_provider.ca_pem, timeout=2.5) as client:
        first = timed_call(client)
        assert first.status == 200
        os.kill(pid, signal.SIGSTOP)  # within PROBE_FRESH of the probe that vouched for the first call
        try:
            second = timed_call(client)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert second.error is None and second.status == 200, second
    assert second.elapsed <= first.elapsed + 0.5 + 0.3, second
    assert_accounting(meter, 2, received=received_since(fake_provider, fake_base))


# --------------------------------------------------------------------------------------------------
# F4: database locked by another process
# --------------------------------------------------------------------------------------------------



def test_f4_database_locked_for_10_s(start_meter, fake_provider) -> None:
    """Identity: calls sent at 10/s across a 10 s BEGIN EXCLUSIVE = rows landed + rows pending (during
    the lock) + 0 gaps; pending reaches 0 within 5 s of the release."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=21, output_tokens=8)))
    meter = start_meter()
    fake_base = len(fake_provider.requests)
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=10) as client:
        warm = [timed_call(client) for _ in range(5)]
        assert {r.status for r in warm} == {200}
        load = PacedLoad(lambda: timed_call(client), period=0.1, max_calls=200, max_seconds=20).start()
        locker = None
        try:
            time.sleep(1.0)
            locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(meter.home / "db.sqlite"), "10"],
                                      stdout=subprocess.PIPE, text=True)
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            asked: list[float] = []

            def writes_row_red() -> dict[str, Any] | None:
                asked.append(time.monotonic())
                row = status_row(status_json(meter), "writes")
                return row if row["status"] == "fail" else None

            red = wait_until(writes_row_red, 11, interval=0.2, what="status: writes red during the lock")
            assert asked[-1] - locked_at < 10, "status must say so while the lock is held"
            assert "database is locked" in red["summary"], red
            assert "pending" in red["summary"] and "journaled" in red["summary"], red
            assert red["fix"]
            assert locker.wait(15) == 0
            released_at = time.monotonic()
        finally:
            if locker is not None and locker.poll() is None:
                locker.kill()
                locker.wait(5)
            results = load.stop()
        failed = [r for r in results if r.error or r.status != 200]
        assert not failed, failed[:3]
        sent = len(warm) + len(results)
        # All rows present within 5 s of the release.
        wait_until(lambda: len(meter.rows()) == sent, max(0.1, released_at + 5.0 - time.monotonic()),
                   what="every row within 5 s of the release")
    before = [r.elapsed for r in results if r.started < locked_at]
    during = [r.elapsed for r in results if locked_at <= r.started < released_at]
    assert len(during) >= 80
    assert median(during) <= median(before) + 0.05, (median(before), median(during))
    assert max(during) < 1.0, sorted(during)[-5:]
    ledger = assert_accounting(meter, sent, received=received_since(fake_provider, fake_base))
    assert ledger.gaps == 0
    assert all(r["complete"] and (r["input_tokens"], r["output_tokens"]) == (21, 8) for r in meter.rows())


# --------------------------------------------------------------------------------------------------
# Hostile upstream traffic: one shared meter (these faults do not break it). api.openai.com goes to an
# upstream that resets before answering; every other provider host to the fake provider.
# --------------------------------------------------------------------------------------------------

RESET_HOST = "api.openai.com"


@pytest.fixture(scope="module")
def reset_upstream(fake_provider: FakeProvider) -> Iterator[ResetServer]:
    with ResetServer(fake_provider.ca, (RESET_HOST,)) as server:
        yield server


@pytest.fixture(scope="module")
def shared_meter(fake_provider: FakeProvider, reset_upstream: ResetServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    home = tmp_path_factory.mktemp("faults-shared") / "home"
    rules = [r for r in fake_provider.resolve_rules() if not r.startswith(f"{RESET_HOST}:")]
    write_config(home, ca_bundle=fake_provider.ca_pem, resolve=[*rules, *reset_upstream.resolve_rules()])
    with MeterProcess.start(home) as meter:
        yield meter


def new_rows(meter: MeterProcess, base: Ledger, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    return meter.wait_for_calls(base.landed + count, timeout)[base.landed:]


def test_f7_upstream_resets_before_the_response(shared_meter, reset_upstream, fake_provider) -> None:
    """Identity: 1 call = 1 row (status null, network error, 0 tokens) + 0 gaps."""
    meter = shared_meter
    url = f"https://{RESET_HOST}/v1/chat/completions"
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "PROMPT-CANARY-f7"}]}
    credential = {"authorization": f"Bearer {HEADERS['x-api-key']}"}
    # Going direct: a connection error.
    direct_ctx = fake_provider.client_ssl_context()
    with httpx.Client(verify=direct_ctx, trust_env=False, timeout=10) as direct:
        with pytest.raises(httpx.HTTPError):
            direct.post(f"https://localhost:{reset_upstream.port}/v1/chat/completions", json=payload,
                        headers=credential)
    base = ledger(meter)
    before = reset_upstream.requests
    started = time.monotonic()
    with one_shot_client(meter, fake_provider.ca_pem, timeout=10) as client:
        try:
            response = client.post(url, json=payload, headers=credential)
            outcome: int | str = response.status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
    print(f"F7 through the meter: {outcome}")
    assert time.monotonic() - started < 5
    # Through the meter: the same connection error, or a 502 that says the upstream failed.
    assert outcome == 502 or isinstance(outcome, str), outcome
    assert reset_upstream.requests == before + 1  # it reached the provider, once (no retry)
    [row] = new_rows(meter, base, 1)
    assert row["status"] is None and row["error_type"] == "network", row
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (0, 0, 0)
    assert row["complete"] == 0 and row["provider"] == "openai" and row["model_requested"] == "gpt-4o"
    assert_accounting(meter, 1, base=base)


def test_f7_upstream_resets_right_after_the_response_head(shared_meter, fake_provider) -> None:
    """The fake provider's `cut_after=0`: the head (200) goes out, then the reset. Identity: 1 call = 1 row
    (status 200, nothing parsed, upstream_truncated) + 0 gaps."""
    meter = shared_meter
    fake_provider.add("POST", "/v1/messages", Reply(pieces=bodies.anthropic_stream_events(), sse=True, cut_after=0,
                                                    cut_mode="reset"))
    with fake_provider.http_client() as direct:
        with pytest.raises(httpx.HTTPError) as direct_error:
            direct.post(MESSAGES, json=request_json(stream=True), headers=HEADERS)
    base = ledger(meter)
    stream = StreamCall(meter, fake_provider, timeout=10).start().join(15)
    assert stream.status == 200 and stream.body == b""
    assert stream.error is not None and stream.error.split(":")[0] == type(direct_error.value).__name__
    [row] = new_rows(meter, base, 1)
    assert (row["status"], row["complete"], row["incomplete_reason"]) == (200, 0, "upstream_truncated"), row
    assert (row["input_tokens"], row["output_tokens"], row["usage_reported"]) == (0, 0, 0)
    assert_accounting(meter, 1, base=base)


@pytest.mark.parametrize("cut_mode", ["reset", "close"])
def test_f8_upstream_truncates_sse_after_message_start(shared_meter, fake_provider, cut_mode) -> None:
    """Identity: 1 call = 1 row (input tokens from message_start, complete=0, upstream_truncated) + 0 gaps."""
    meter = shared_meter
    events = bodies.anthropic_stream_events(input_tokens=1000, output_tokens=200, chunks=("a", "b", "c"))
    # message_start, a pause (so it has surely left), then the cut: an empty piece counts as written.
    fake_provider.add("POST", "/v1/messages", Reply(pieces=[events[0], Pause(0.3), b"", *events[1:]], sse=True,
                                                    cut_after=2, cut_mode=cut_mode))
    base = ledger(meter)
    stream = StreamCall(meter, fake_provider, timeout=15).start().join(20)
    sent = fake_provider.sent_log[-1]
    assert not sent.complete and sent.wire_body == events[0]
    assert stream.status == 200
    assert bytes(stream.body) == events[0], "every byte sent before the cut reaches the client"
    assert stream.error is not None, "the cut must reach the client as an error, not as a clean end of stream"
    [row] = new_rows(meter, base, 1)
    assert row["status"] == 200 and row["streamed"] and row["usage_reported"]
    assert row["input_tokens"] == 1000
    assert row["complete"] == 0 and row["incomplete_reason"] == "upstream_truncated"
    assert_accounting(meter, 1, base=base)


def _malformed_streams() -> dict[str, list[bytes | Pause]]:
    ev = bodies.anthropic_stream_events(input_tokens=1234, output_tokens=56, chunks=("x",))
    start, block_start, ping, delta, block_stop, message_delta, stop = ev
    bad_json = (b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                b'"delta": {"type": "text_delta", "text": "no end\n\n')
    bad_utf8 = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"\xff\xfe\xc3( \xed\xa0\x80"}}\n\n')
    multibyte = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                 '"delta":{"type":"text_delta","text":"é€😀中"}}\n\n').encode()
    euro, emoji = multibyte.index("€".encode()), multibyte.index("😀".encode())
    big = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":'
           '"text_delta","text":"' + "y" * (1 << 20) + '"}}\n\n').encode()
    gap = Pause(0.05)  # separate TCP reads
    tail = [block_stop, message_delta, stop]
    return {
        "invalid_json_line": [start, block_start, ping, delta, bad_json, *tail],
        "invalid_utf8": [start, block_start, ping, bad_utf8, delta, *tail],
        "crlf_line_ends": [e.replace(b"\n", b"\r\n") for e in ev],
        "multibyte_split_across_chunks": [start, block_start, ping, multibyte[:euro + 1], gap,
                                          multibyte[euro + 1:emoji + 2], gap, multibyte[emoji + 2:], *tail],
        "event_split_across_reads": [start[:17], gap, start[17:90], gap, start[90:], block_start, ping,
                                     delta[:-1], gap, delta[-1:], *tail],
        "one_megabyte_event": [start, block_start, ping, big, delta, *tail],
    }


@pytest.mark.parametrize("case", list(_malformed_streams()))
def test_f9_malformed_stream_content_passes_byte_identical(shared_meter, fake_provider, case) -> None:
    """Identity: 1 call = 1 row (exact usage: the parser recovers) + 0 gaps."""
    meter = shared_meter
    pieces = _malformed_streams()[case]
    wire = b"".join(p for p in pieces if isinstance(p, bytes))
    fake_provider.add("POST", "/v1/messages", Reply(pieces=pieces, sse=True))
    base = ledger(meter)
    stream = StreamCall(meter, fake_provider, timeout=20).start().join(30)
    assert stream.error is None and stream.status == 200
    assert hashlib.sha256(bytes(stream.body)).hexdigest() == hashlib.sha256(wire).hexdigest()
    with fake_provider.http_client(timeout=20) as direct:
        direct_body = direct.post(MESSAGES, json=request_json(stream=True), headers=HEADERS).content
    assert hashlib.sha256(direct_body).digest() == hashlib.sha256(bytes(stream.body)).digest()
    [row] = new_rows(meter, base, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (1234, 56), row
    assert row["complete"] == 1 and row["usage_reported"] == 1 and row["streamed"] == 1
    assert row["incomplete_reason"] is None
    assert_accounting(meter, 1, base=base)


@functools.cache
def _bomb(encoding: str, inflated: int = 200 << 20) -> bytes:
    """An Anthropic message whose text is `inflated` bytes of one letter, compressed: the usage comes after
    the text, so it cannot be read within the meter's decode cap."""
    import zlib

    head = (b'{"id":"msg_bomb","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",'
            b'"content":[{"type":"text","text":"')
    tail = b'"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":6}}'
    block = b"A" * (1 << 20)
    if encoding == "gzip":
        z = zlib.compressobj(9, wbits=31)
        step, finish = z.compress, z.flush
    elif encoding == "br":
        import brotli

        b = brotli.Compressor(quality=5)
        step, finish = b.process, b.finish
    else:
        import zstandard

        zs = zstandard.ZstdCompressor(level=3).compressobj()
        step, finish = zs.compress, zs.flush
    parts = [step(head)]
    parts += [step(block) for _ in range(inflated // len(block))]
    parts += [step(tail), finish()]
    return b"".join(parts)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_f10_compression_bomb_is_forwarded_untouched_in_bounded_memory(shared_meter, fake_provider,
                                                                       encoding) -> None:
    """Identity: 1 call = 1 row (unparsed_oversize) + 0 gaps."""
    meter = shared_meter
    bomb = _bomb(encoding)
    assert len(bomb) <= 210 * 1024
    fake_provider.add("POST", "/v1/messages", Reply(body=bomb, headers={"content-encoding": encoding},
                                                    chunk_size=16 * 1024))
    pid = core_pid(meter)
    assert pid is not None
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        start = ledger(meter)
        warm = timed_call(client, url=f"{ANTHROPIC}/v1/messages/count_tokens")  # connection and certificate
        assert warm.status == 404
        new_rows(meter, start, 1)
        base = ledger(meter)
        with PeakRss(pid) as peak:
            with client.stream("POST", MESSAGES, json=request_json(), headers={**HEADERS,
                               "accept-encoding": encoding}) as response:
                raw = b"".join(response.iter_raw())
            [row] = new_rows(meter, base, 1, timeout=30)
    grew = peak.growth / 2**20
    print(f"F10 {encoding}: {len(bomb)} bytes on the wire; core peak RSS +{grew:.1f} MiB (exact: {peak.exact})")
    assert response.headers["content-encoding"] == encoding
    assert hashlib.sha256(raw).digest() == hashlib.sha256(bomb).digest(), "the client gets the original bytes"
    assert grew <= 64, f"core RSS grew {grew:.0f} MiB decoding a {len(bomb)} byte bomb"
    assert row["status"] == 200 and row["complete"] == 0 and row["incomplete_reason"] == "unparsed_oversize", row
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)
    assert_accounting(meter, 2, base=start)


def test_f12_client_disconnect_mid_stream_is_drained_and_exact(shared_meter, fake_provider) -> None:
    """Identity: 1 call = 1 row (complete, exact tokens, thanks to the edge's drain) + 0 gaps."""
    meter = shared_meter
    events = bodies.anthropic_stream_events(input_tokens=4321, output_tokens=765,
                                            chunks=tuple(f"w{i} " for i in range(16)))
    fake_provider.add("POST", "/v1/messages", Reply(pieces=paced(events, 0.23), sse=True))  # ~5 s
    drains = fresh_edge_stats(meter).get("drains", 0)
    base = ledger(meter)
    stream = StreamCall(meter, fake_provider, timeout=15, read_for=0.8).start().join(10)
    assert stream.closed_early and stream.error is None
    assert 0 < len(stream.body) < len(b"".join(events))
    [row] = new_rows(meter, base, 1, timeout=20)
    assert row["complete"] == 1 and row["incomplete_reason"] is None, row
    assert (row["input_tokens"], row["output_tokens"]) == (4321, 765)
    assert fake_provider.sent_log[-1].complete  # the provider finished: the edge kept reading
    wait_until(lambda: edge_stats(meter).get("drains", 0) >= drains + 1, 5, what="edge-stats drains + 1")
    assert_accounting(meter, 1, base=base)


def test_f12_a_client_closing_after_a_complete_response_is_not_a_drain(shared_meter, fake_provider) -> None:
    """Identity: 2 calls = 2 rows + 0 gaps; `drains` counts clients that left mid-response, and these did not."""
    meter = shared_meter
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=3, output_tokens=1)))
    drains = fresh_edge_stats(meter).get("drains", 0)
    base = ledger(meter)
    with one_shot_client(meter, fake_provider.ca_pem) as client:
        assert [timed_call(client).status for _ in range(2)] == [200, 200]
    assert_accounting(meter, 2, base=base)
    after = fresh_edge_stats(meter)
    assert after.get("drains", 0) == drains, (drains, after)


# --------------------------------------------------------------------------------------------------
# F5: disk full
# --------------------------------------------------------------------------------------------------


def keep_for_secret_scan(meter: MeterProcess, copy_to: Path) -> None:
    """The tmpfs goes away after the test: keep a copy of what the meter wrote for the session's secrets
    scan (`_no_secrets_at_rest` in tests/conftest.py), and point the meter at it."""
    import shutil

    meter.stop()
    shutil.copytree(meter.home, copy_to, ignore=shutil.ignore_patterns("filler.bin"), symlinks=True)
    meter.home = copy_to


@pytest.fixture(scope="module")
def disk_full_run(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One disk-full episode, observed once and judged by the tests below: 3 warm-up calls, the data
    directory's file system filled, 30 calls, `status --json` polled for 6 s, space freed, rows awaited."""
    base = tmp_path_factory.mktemp("diskfull")
    with small_tmpfs_at(base / "tiny") as home:
        fake_provider.add("POST", "/v1/messages",
                          Reply(body=bodies.anthropic_message(input_tokens=33, output_tokens=4)))
        meter = MeterProcess.start(home, fake_provider)
        try:
            return _disk_full_scenario(meter, fake_provider, home)
        finally:
            keep_for_secret_scan(meter, base / "home-copy")


def _disk_full_scenario(meter: MeterProcess, fake_provider: FakeProvider, home: Path) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []
    fake_base = len(fake_provider.requests)
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=10) as client:
        warm = [timed_call(client) for _ in range(3)]
        assert {r.status for r in warm} == {200}
        meter.wait_for_calls(3)
        filler = fill(home)
        results = []
        for _ in range(30):
            results.append(timed_call(client))
            time.sleep(0.05)
        deadline = time.monotonic() + 6.0  # three publishing rounds of the core's counters
        while time.monotonic() < deadline:  # the database cannot even be read now: ask `status`
            seen.append(status_row(status_json(meter), "writes"))
            if seen[-1]["status"] == "fail":
                break
            time.sleep(0.3)
        filler.unlink()
        freed_at = time.monotonic()
        sent = len(warm) + len(results)
        wait_until(lambda: len(meter.rows()) + len(gap_rows(meter)) == sent, 15,
                   what="queued rows landing after space is freed")
        landed_after = time.monotonic() - freed_at
    return {"warm": warm, "results": results, "sent": sent, "status_rows": seen, "landed_after": landed_after,
            "ledger": assert_accounting(meter, sent, received=received_since(fake_provider, fake_base)),
            "rows": meter.rows()}


def test_f5_disk_full_clients_unaffected_and_every_call_accounted(disk_full_run) -> None:
    """Identity: 3 + 30 calls = rows landed + rows pending (while full) + gaps (records the queue could not
    hold); once space is freed pending reaches 0 and landed + gaps == sent exactly."""
    run = disk_full_run
    failed = [r for r in run["results"] if r.error or r.status != 200]
    assert not failed, failed[:3]
    assert median([r.elapsed for r in run["results"]]) <= median([r.elapsed for r in run["warm"]]) + 0.05
    ledger = run["ledger"]
    assert ledger.pending == 0 and ledger.landed + ledger.gaps == run["sent"] == 33
    assert run["landed_after"] < 10
    assert all(r["complete"] and r["input_tokens"] == 33 for r in run["rows"])


def test_f5_status_is_red_with_the_disk_full_error(disk_full_run) -> None:
    rows = disk_full_run["status_rows"]
    red = [r for r in rows if r["status"] == "fail"]
    assert red, rows[-2:]
    assert "full" in red[0]["summary"].lower() or "no space" in red[0]["summary"].lower(), red[0]


# --------------------------------------------------------------------------------------------------
# F16: SIGTERM with streams in flight
# --------------------------------------------------------------------------------------------------


def test_f16_sigterm_with_streams_in_flight(start_meter, fake_provider) -> None:
    """Identity: 10 streams = 10 rows (5 finished within the grace: complete; 5 still running past it:
    `shutdown`) + 0 pending + 0 gaps, and serve exits 0."""
    finish_soon, never_in_time = Gate(timeout=30), Gate(timeout=30)
    short = bodies.anthropic_stream_events(input_tokens=111, output_tokens=22)
    long = bodies.anthropic_stream_events(input_tokens=333, output_tokens=44)

    def reply(received: Any) -> Reply:
        if received.json()["model"] == "claude-haiku-4-5":
            return Reply(pieces=[*short[:3], finish_soon, *short[3:]], sse=True)
        return Reply(pieces=[*long[:3], never_in_time, *long[3:]], sse=True)

    fake_provider.add("POST", "/v1/messages", reply)
    meter = start_meter(extra_config="[core]\nshutdown_grace_seconds = 2")
    fake_base = len(fake_provider.requests)
    streams = [StreamCall(meter, fake_provider, timeout=30, model=m).start()
               for m in ["claude-haiku-4-5", "claude-opus-4-1"] * 5]
    try:
        wait_until(lambda: len(fake_provider.sent_log) == 10 and all(s.body for s in streams), 15,
                   what="10 streams under way")
        wait_until(lambda: in_progress_rows(meter) == 10, 5, what="10 provisional rows")
        meter.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        finish_soon.open()  # these finish within the grace; the others never do
        code = meter.proc.wait(20)
    finally:
        finish_soon.open()
        never_in_time.open()
    for stream in streams:
        stream.join(10)
    assert code == 0, meter.log()[-3000:]
    finished = [s for s in streams if s.model == "claude-haiku-4-5"]
    cut = [s for s in streams if s.model == "claude-opus-4-1"]
    assert all(s.error is None and bytes(s.body) == b"".join(short) for s in finished)
    assert all(s.error is not None for s in cut), [s.error for s in cut]
    rows = meter.rows(include_in_progress=True)
    by_model = sorted((r["model_requested"], r["complete"], r["input_tokens"], r["output_tokens"]) for r in rows)
    assert by_model == sorted([("claude-haiku-4-5", 1, 111, 22)] * 5 + [("claude-opus-4-1", 0, 333, 1)] * 5)
    assert all(r["incomplete_reason"] is None for r in rows if r["complete"])
    # `shutdown` is the contract (asserted exactly in the next test); this one is about the counts.
    assert {r["incomplete_reason"] for r in rows if not r["complete"]} <= {"shutdown", "client_disconnected"}
    ledger = assert_accounting(meter, 10, timeout=1, received=received_since(fake_provider, fake_base))
    assert ledger.gaps == 0


def test_f16_streams_cut_at_the_end_of_the_grace_are_recorded_as_shutdown(start_meter, fake_provider) -> None:
    """Identity: 2 streams = 2 rows (`shutdown`) + 0 gaps. The core is paused for 0.5 s right after the
    SIGTERM (a busy event loop), so it reacts to it a little after the edge: nothing else changes."""
    never_in_time = Gate(timeout=30)
    events = bodies.anthropic_stream_events(input_tokens=333, output_tokens=44)
    fake_provider.add("POST", "/v1/messages", Reply(pieces=[*events[:3], never_in_time, *events[3:]], sse=True))
    meter = start_meter(extra_config="[core]\nshutdown_grace_seconds = 2")
    fake_base = len(fake_provider.requests)
    pid = core_pid(meter)
    assert pid is not None
    streams = [StreamCall(meter, fake_provider, timeout=30).start() for _ in range(2)]
    try:
        wait_until(lambda: in_progress_rows(meter) == 2 and all(s.body for s in streams), 15,
                   what="2 streams under way")
        os.kill(pid, signal.SIGSTOP)
        try:
            meter.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        code = meter.proc.wait(20)
    finally:
        never_in_time.open()
    for stream in streams:
        stream.join(10)
    assert code == 0
    reasons = [r["incomplete_reason"] for r in meter.rows(include_in_progress=True)]
    assert reasons == ["shutdown", "shutdown"], reasons
    assert_accounting(meter, 2, timeout=1, received=received_since(fake_provider, fake_base))


# --------------------------------------------------------------------------------------------------
# F18: the core restarts while the edge lives
# --------------------------------------------------------------------------------------------------


def test_f18_core_restarts_under_light_load_never_fail_a_client(start_meter, fake_provider) -> None:
    """Identity: calls at 5/s across 3 core restarts (SIGTERM to the core; the supervisor restarts it) =
    rows + 0 gaps: calls that arrive while the core restarts wait for it; the edge port never changes and
    no call fails.

    No call starts within 0.3 s of each SIGTERM: a tunnel the core accepted just before it was told to stop
    is the xfail test below (it fails about one run in two here without that hold)."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=12, output_tokens=5)))
    meter = start_meter()
    fake_base = len(fake_provider.requests)
    port = meter.edge_port
    runtime = json.loads((meter.home / "runtime.json").read_text())
    restarts = []
    with one_shot_client(meter, fake_provider.ca_pem, timeout=10) as client:
        load = PacedLoad(lambda: timed_call(client), period=0.2, max_calls=200, max_seconds=40).start()
        try:
            pid = core_pid(meter)
            for _ in range(3):
                time.sleep(1.0)
                assert pid is not None
                load.hold.set()
                time.sleep(0.3)
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.3)
                load.hold.clear()
                new = wait_core_pid(meter, other_than=pid, timeout=20)
                restarts.append((pid, new))
                pid = new
                assert json.loads((meter.home / "runtime.json").read_text()) == runtime
            time.sleep(1.5)
        finally:
            results = load.stop()
    failed = [r for r in results if r.error or r.status != 200]
    assert not failed, failed[:3]
    assert len(results) >= 40 and len(restarts) == 3
    assert meter.edge_port == port and json.loads((meter.home / "runtime.json").read_text()) == runtime
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    ledger = assert_accounting(meter, len(results), received=received_since(fake_provider, fake_base))
    assert ledger.landed == len(results) and ledger.gaps == 0
    assert meter.proc.poll() is None


def test_f18_a_tunnel_opened_just_before_the_core_stops_is_served(start_meter, fake_provider) -> None:
    """Identity: 1 call = 1 row + 0 gaps. The client has its tunnel (CONNECT answered by the core) when the
    core is told to stop; its TLS handshake and request follow 0.3 s later, well within the 10 s grace."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=12, output_tokens=5)))
    meter = start_meter()
    fake_base = len(fake_provider.requests)
    pid = core_pid(meter)
    assert pid is not None
    body = json.dumps(request_json()).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: api.anthropic.com\r\nx-api-key: {HEADERS['x-api-key']}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    context = meter.ssl_context(fake_provider.ca_pem)
    with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as raw:
        raw.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 8192:
            more = raw.recv(1)
            if not more:
                break
            reply += more
        assert reply.startswith(b"HTTP/1.1 200"), reply
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        try:
            with context.wrap_socket(raw, server_hostname="api.anthropic.com") as tls:
                tls.sendall(head + body)
                answer = b""
                while len(answer) < 1 << 20:
                    more = tls.recv(65536)
                    if not more:
                        break
                    answer += more
        except (OSError, ssl.SSLError) as exc:
            answer = f"{type(exc).__name__}: {exc}".encode()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    wait_core_pid(meter, other_than=pid, timeout=20)
    assert_accounting(meter, 1, received=received_since(fake_provider, fake_base))


# --------------------------------------------------------------------------------------------------
# F19: a port already taken at start
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["edge", "api"])
def test_f19_taken_port_exits_4_fast_naming_port_and_holder(tmp_path, role) -> None:
    """Identity: 0 calls = 0 rows + 0 gaps (nothing starts)."""
    import psutil

    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    flags = {"edge": ["--edge-port", str(port), "--api-port", "0"], "api": ["--edge-port", "0", "--api-port", str(port)]}
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "halton_meter", "serve", *flags[role]], capture_output=True,
                                text=True, timeout=30, env=meter_env(tmp_path / "home"), stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"halton-meter: error: port {port} ({role}) is in use by PID {os.getpid()} ({psutil.Process().name()}); "
        f"stop that process or choose another port with --{role}-port N"
    ], result.stderr
    assert result.stdout.strip() == ""
    print(f"F19 {role}: refused in {took:.2f} s")
    assert took < 2.0, f"serve took {took:.2f} s to refuse a taken port"
    assert not (tmp_path / "home" / "runtime.json").exists()
    db = tmp_path / "home" / "db.sqlite"
    if db.exists():
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
