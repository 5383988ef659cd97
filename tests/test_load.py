"""Load through a real `halton-meter serve` (docs/testing.md, "Load", L1 and L2).

The CI variant runs about 20 s: non-streaming calls at concurrency 20, then rounds of 20 concurrent SSE
streams (20 events, 50 ms apart). It asserts correctness only: zero client errors and exactly one row per
call (`calls sent = rows landed + rows pending + gaps`, with pending and gaps 0). Throughput and latency
are printed for information: the 2-core CI box shares its CPU between the clients, the fake provider and
the meter, so absolute numbers are not a pass criterion. The long variant is marked `slow`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from faultkit import (
    HEADERS,
    MESSAGES,
    assert_accounting,
    core_pid,
    edge_stats,
    median,
    percentile,
    request_json,
)

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Pause, Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

JSON_TOKENS = (120, 30)
SSE_TOKENS = (900, 140)


@pytest.fixture(scope="module")
def load_fake() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def load_meter(load_fake: FakeProvider, tmp_path: Path) -> Iterator[MeterProcess]:
    """The meter as users run it on this machine: one core per CPU, up to four (docs/concepts/proxy.md)."""
    with MeterProcess.start(tmp_path / "home", load_fake, env={"HALTON_METER_WORKERS": "auto"}) as meter:
        yield meter


def script_fake(fake: FakeProvider, events: int, spacing: float) -> list[bytes]:
    """JSON answers for `stream: false`, an SSE stream of `events` events `spacing` s apart otherwise."""
    stream = bodies.anthropic_stream_events(input_tokens=SSE_TOKENS[0], output_tokens=SSE_TOKENS[1],
                                            chunks=tuple(f"t{i} " for i in range(events - 6)))
    assert len(stream) == events
    paced: list[bytes | Pause] = []
    for event in stream:
        paced += [event, Pause(spacing)]
    message = bodies.anthropic_message(input_tokens=JSON_TOKENS[0], output_tokens=JSON_TOKENS[1])
    fake.clear()
    fake.add("POST", "/v1/messages", lambda received: Reply(pieces=paced[:-1], sse=True)
             if received.json().get("stream") else Reply(body=message))
    return stream


@dataclass
class Phase:
    name: str
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.calls / self.seconds if self.seconds else 0.0
        text = (f"{self.name}: {self.calls} calls in {self.seconds:.1f} s = {rate:.1f}/s; latency p50 "
                f"{median(self.latencies) * 1000:.0f} ms, p95 {percentile(self.latencies, 0.95) * 1000:.0f} ms")
        if self.ttfb:
            text += (f"; first byte p50 {median(self.ttfb) * 1000:.0f} ms, "
                     f"p95 {percentile(self.ttfb, 0.95) * 1000:.0f} ms")
        return text + f"; errors {len(self.errors)}"


def client_for(meter: MeterProcess | None, fake: FakeProvider, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if meter is None:  # direct to the fake, for comparison
        return fake.async_http_client(timeout=30, limits=limits)
    return meter.async_client(extra_ca=fake.ca_pem, timeout=30, limits=limits)


async def json_phase(client: httpx.AsyncClient, name: str, concurrency: int, seconds: float,
                     max_calls: int) -> Phase:
    phase = Phase(name)
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def worker() -> None:
        while time.monotonic() < deadline and phase.calls < max_calls:
            phase.calls += 1
            t0 = time.monotonic()
            try:
                response = await client.post(MESSAGES, json=request_json(), headers=HEADERS)
                if response.status_code != 200:
                    phase.errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            phase.latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.monotonic() - started
    return phase


async def sse_phase(client: httpx.AsyncClient, name: str, concurrency: int, rounds: int, seconds: float,
                    expected: bytes) -> Phase:
    phase = Phase(name)
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def one() -> None:
        phase.calls += 1
        t0 = time.monotonic()
        body = bytearray()
        try:
            async with client.stream("POST", MESSAGES, json=request_json(stream=True), headers=HEADERS) as response:
                async for chunk in response.aiter_raw():
                    if not body:
                        phase.ttfb.append(time.monotonic() - t0)
                    body += chunk
            if bytes(body) != expected:
                phase.errors.append(f"stream bytes differ ({len(body)} of {len(expected)})")
        except httpx.HTTPError as exc:
            phase.errors.append(f"{type(exc).__name__}: {exc}")
        phase.latencies.append(time.monotonic() - t0)

    for _ in range(rounds):
        if time.monotonic() >= deadline:
            break
        await asyncio.gather(*(one() for _ in range(concurrency)))
    phase.seconds = time.monotonic() - started
    return phase


def run_load(meter: MeterProcess, fake: FakeProvider, *, json_seconds: float, json_max: int, concurrency: int,
             streams: int, events: int, spacing: float, rounds: int, sse_seconds: float) -> list[Phase]:
    stream = script_fake(fake, events, spacing)
    expected = b"".join(stream)

    async def main() -> list[Phase]:
        async with client_for(None, fake, concurrency) as direct:
            baseline = await json_phase(direct, "direct JSON (no proxy)", concurrency, 2.0, 400)
        async with client_for(meter, fake, concurrency) as proxied:
            metered_json = await json_phase(proxied, "metered JSON", concurrency, json_seconds, json_max)
        async with client_for(meter, fake, streams) as proxied:
            metered_sse = await sse_phase(proxied, f"metered SSE ({streams} concurrent, {events} events "
                                          f"{spacing * 1000:.0f} ms apart)", streams, rounds, sse_seconds, expected)
        return [baseline, metered_json, metered_sse]

    return asyncio.run(main())


def check_and_report(meter: MeterProcess, phases: list[Phase], capsys: pytest.CaptureFixture[str]) -> None:
    """Identity: metered calls = rows landed + 0 pending + 0 gaps, each row with its exact tokens."""
    _, metered_json, metered_sse = phases
    sent = metered_json.calls + metered_sse.calls
    with capsys.disabled():
        print()
        for phase in phases:
            print(f"  [load] {phase.line()}")
        pid = core_pid(meter)
        edge_pid = edge_stats(meter).get("pid")
        if pid and edge_pid:
            print(f"  [load] RSS: core {psutil.Process(pid).memory_info().rss / 2**20:.0f} MiB, "
                  f"edge {psutil.Process(int(edge_pid)).memory_info().rss / 2**20:.0f} MiB")
    assert metered_json.errors == [] and metered_sse.errors == [], (metered_json.errors[:3], metered_sse.errors[:3])
    assert metered_json.calls > 0 and metered_sse.calls > 0
    ledger = assert_accounting(meter, sent, timeout=30)
    assert (ledger.landed, ledger.pending, ledger.gaps) == (sent, 0, 0)
    rows = meter.rows()
    streamed = [r for r in rows if r["streamed"]]
    plain = [r for r in rows if not r["streamed"]]
    assert len(streamed) == metered_sse.calls and len(plain) == metered_json.calls
    assert all((r["input_tokens"], r["output_tokens"], r["complete"]) == (*SSE_TOKENS, 1) for r in streamed)
    assert all((r["input_tokens"], r["output_tokens"], r["complete"]) == (*JSON_TOKENS, 1) for r in plain)
    assert len({r["id"] for r in rows}) == sent


def test_load_short(load_meter, load_fake, capsys) -> None:
    """CI variant (~20 s): JSON at concurrency 20 for 8 s, then 20 concurrent SSE streams (20 events 50 ms
    apart, about 1 s each) for up to 6 rounds."""
    phases = run_load(load_meter, load_fake, json_seconds=8.0, json_max=4000, concurrency=20,
                      streams=20, events=20, spacing=0.05, rounds=6, sse_seconds=7.0)
    check_and_report(load_meter, phases, capsys)


@pytest.mark.slow
def test_load_long(load_meter, load_fake, capsys) -> None:
    """Nightly variant: JSON at concurrency 20 for 60 s (L1), then 100 concurrent SSE streams of 50 events
    100 ms apart (L2), 3 rounds; afterwards the meter's RSS and open files are checked against L1's bounds."""
    core, edge = core_pid(load_meter), edge_stats(load_meter).get("pid")
    assert core and edge
    fds_before = {pid: psutil.Process(int(pid)).num_fds() for pid in (core, edge)}
    phases = run_load(load_meter, load_fake, json_seconds=60.0, json_max=20_000, concurrency=20,
                      streams=100, events=50, spacing=0.1, rounds=3, sse_seconds=30.0)
    check_and_report(load_meter, phases, capsys)
    assert psutil.Process(core).memory_info().rss <= 200 * 2**20
    assert psutil.Process(int(edge)).memory_info().rss <= 60 * 2**20
    time.sleep(10)  # idle connections close and drains end
    for pid, before in fds_before.items():
        assert abs(psutil.Process(int(pid)).num_fds() - before) <= 5
