"""Plan and rate-limit snapshots through a real `halton-meter serve`: recorded responses carrying the headers
(a Claude Code OAuth stream, a Codex stream, an API-key Anthropic call, an OpenAI call) land in
`plan_snapshots` exactly, with the call's account; the client's session id lands in `calls.session_id`; no
other header value reaches the database."""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from typing import Any

import pytest

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

ANTHROPIC = "https://api.anthropic.com"
SESSION = "57a121ec-f78c-48c3-a745-e3036a3ecc33"
CANARY = "HEADER-CANARY-7f3e"


@pytest.fixture(autouse=True)
def _fresh_routes(fake_provider: FakeProvider) -> None:
    fake_provider.clear()


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def snapshots_of(meter: MeterProcess, call_id: str) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(f"file:{meter.home / 'db.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM plan_snapshots WHERE call_id = ?", (call_id,))]
    finally:
        conn.close()
    return {r["window"]: r for r in rows}


def last_row(meter: MeterProcess, before: int) -> dict[str, Any]:
    rows = meter.wait_for_calls(before + 1, 15.0)
    return rows[-1]


def test_a_claude_code_oauth_stream_leaves_its_plan_windows_and_session(meter: MeterProcess,
                                                                        fake_provider: FakeProvider) -> None:
    reset_5h, reset_7d = int(time.time()) + 2 * 3600, int(time.time()) + 4 * 86400
    headers = {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-reset": str(reset_5h),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-5h-utilization": "0.62",
        "anthropic-ratelimit-unified-5h-reset": str(reset_5h),
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.31",
        "anthropic-ratelimit-unified-7d-reset": str(reset_7d),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d_opus-utilization": "0.12",
        "x-unrelated": CANARY,
    }
    events = bodies.anthropic_stream_events(input_tokens=40, output_tokens=9, chunks=("o", "k"))
    fake_provider.add("POST", "/v1/messages", Reply(pieces=events, sse=True, headers=headers))
    before = len(meter.rows())
    body = {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 5, "messages": [],
            "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": SESSION})}}
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        with client.stream("POST", f"{ANTHROPIC}/v1/messages", json=body,
                           headers={"authorization": "Bearer sk-ant-oat01-CANARY-oauth-token",
                                    "anthropic-version": "2023-06-01", "user-agent": "claude-cli/2.1.90"}) as response:
            assert response.status_code == 200
            assert response.headers["anthropic-ratelimit-unified-5h-utilization"] == "0.62"  # untouched
            b"".join(response.iter_raw())
    row = last_row(meter, before)
    assert row["billing"] == "subscription" and row["session_id"] == SESSION and row["key_fingerprint"]
    snaps = snapshots_of(meter, row["id"])
    assert set(snaps) == {"5h", "7d", "7d_opus", "unified"}
    five = snaps["5h"]
    assert (five["provider"], five["account"], five["kind"], five["window_minutes"]) == (
        "anthropic", row["key_fingerprint"], "plan", 300)
    assert (five["utilization"], five["resets_at"], five["status"]) == (0.62, iso(reset_5h), "allowed")
    assert (snaps["7d"]["utilization"], snaps["7d"]["resets_at"]) == (0.31, iso(reset_7d))
    assert snaps["7d_opus"]["utilization"] == 0.12
    assert (snaps["unified"]["claim"], snaps["unified"]["status"]) == ("five_hour", "allowed")
    seen = datetime.datetime.fromisoformat(five["seen_at"].replace("Z", "+00:00"))
    assert row["started_at"] <= five["seen_at"] <= row["ended_at"], (seen, row)
    # Only the figures: no other header value, and neither the token nor the metadata, is on disk.
    for path in meter.files_at_rest():
        data = path.read_bytes()
        assert CANARY.encode() not in data and b"CANARY-oauth-token" not in data and b"d" * 64 not in data, path


def test_a_codex_stream_and_its_session_header(meter: MeterProcess, fake_provider: FakeProvider) -> None:
    from corpus.codex import HEADERS, MODEL, PATH, REQUEST
    from corpus.openai import response_object, responses_stream, responses_usage

    events = responses_stream(MODEL, "response.completed",
                              response_object(MODEL, usage=responses_usage(1000, 100, cached=0, reasoning=0),
                                              rid="resp_plan_01"), texts=("ok",))
    headers = {"x-codex-primary-used-percent": "12", "x-codex-primary-window-minutes": "300",
               "x-codex-primary-reset-after-seconds": "3600", "x-codex-secondary-used-percent": "40",
               "x-codex-secondary-window-minutes": "10080", "x-codex-secondary-reset-at": "1890000000"}
    fake_provider.add("POST", PATH, Reply(pieces=events, sse=True, headers=headers))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        sent = time.time()
        with client.stream("POST", f"https://chatgpt.com{PATH}", json=REQUEST, headers=HEADERS) as response:
            assert response.status_code == 200
            b"".join(response.iter_raw())
        done = time.time()
    row = last_row(meter, before)
    assert (row["provider"], row["session_id"]) == ("codex", HEADERS["session_id"])
    snaps = snapshots_of(meter, row["id"])
    assert set(snaps) == {"5h", "7d"}
    assert (snaps["5h"]["utilization"], snaps["5h"]["window_minutes"], snaps["5h"]["claim"]) == (0.12, 300, "primary")
    assert iso(sent + 3600) <= snaps["5h"]["resets_at"] <= iso(done + 3600)
    assert (snaps["7d"]["utilization"], snaps["7d"]["resets_at"]) == (0.4, iso(1890000000))


def test_api_key_rate_limits_from_anthropic_and_openai(meter: MeterProcess, fake_provider: FakeProvider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=2),
                                                    headers={"anthropic-ratelimit-tokens-limit": "80000",
                                                             "anthropic-ratelimit-tokens-remaining": "60000",
                                                             "anthropic-ratelimit-tokens-reset": "2026-12-03T20:00:00Z"}))
    fake_provider.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(prompt_tokens=5, completion_tokens=1),
                                                            headers={"x-ratelimit-limit-requests": "500",
                                                                     "x-ratelimit-remaining-requests": "125",
                                                                     "x-ratelimit-reset-requests": "1m30s"}))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        answer = client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 5,
                                                                "messages": []},
                             headers={"x-api-key": "sk-ant-api03-CANARY", "anthropic-version": "2023-06-01"})
        assert answer.status_code == 200
        first = last_row(meter, before)
        sent = time.time()
        answer = client.post("https://api.openai.com/v1/chat/completions",
                             json={"model": "gpt-4o", "messages": []}, headers={"authorization": "Bearer sk-proj-X"})
        assert answer.status_code == 200
        done = time.time()
    second = last_row(meter, before + 1)
    anthropic = snapshots_of(meter, first["id"])["tokens"]
    assert (anthropic["kind"], anthropic["limit_value"], anthropic["remaining"], anthropic["utilization"]) == (
        "api", 80000, 60000, 0.25)
    assert anthropic["resets_at"] == "2026-12-03T20:00:00.000000Z" and anthropic["account"] == first["key_fingerprint"]
    openai = snapshots_of(meter, second["id"])["requests"]
    assert (openai["provider"], openai["limit_value"], openai["remaining"], openai["utilization"]) == (
        "openai", 500, 125, 0.75)
    assert iso(sent + 90) <= openai["resets_at"] <= iso(done + 90)
    assert first["session_id"] is None and second["session_id"] is None


def test_the_api_and_the_dashboard_read_what_plan_json_reads(meter: MeterProcess) -> None:
    cli = json.loads(meter.cli("plan", "--json").stdout)
    reply = meter.api_get("/v1/plan")
    assert reply.status_code == 200
    api = reply.json()
    assert cli["windows"] and api["windows"] == cli["windows"] and api["api"] == cli["api"]
    assert {w["window"] for w in api["windows"]} >= {"5h", "7d", "7d_opus"}
    assert meter.api_get("/v1/plan", token=None).status_code == 401
    assert meter.api_get("/v1/plan?window=5h").status_code == 400
