"""Plan and rate-limit snapshots from response headers (halton_meter/ratelimits.py), and the client's session
id from a request: every family, exact values, unknown windows kept, bad values left out, never an exception."""

from __future__ import annotations

import datetime
import json

from hypothesis import given
from hypothesis import strategies as st

from halton_meter.ratelimits import MAX_WINDOWS, session_from_request, snapshots, window_label

SEEN = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def by_window(snaps: list[dict]) -> dict[str, dict]:
    found = {s["window"]: s for s in snaps}
    assert len(found) == len(snaps)  # one snapshot per window
    return found


def test_anthropic_subscription_windows_are_read_exactly_and_unknown_ones_kept() -> None:
    headers = [
        ("Anthropic-Ratelimit-Unified-Status", "allowed_warning"),
        ("anthropic-ratelimit-unified-reset", "1790006400"),
        ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
        ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
        ("anthropic-ratelimit-unified-overage-status", "rejected"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.62"),
        ("anthropic-ratelimit-unified-5h-reset", "1790006400"),
        ("anthropic-ratelimit-unified-5h-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-utilization", "0.31"),
        ("anthropic-ratelimit-unified-7d-reset", "1790300000"),
        ("anthropic-ratelimit-unified-7d_opus-utilization", "0.9"),
        ("anthropic-ratelimit-unified-7d_future-utilization", "0.05"),  # a window nobody has heard of yet
        ("content-type", "text/event-stream"),
        ("request-id", "req_01"),
    ]
    snaps = by_window(snapshots(headers, SEEN, provider="anthropic", account="3f9a1c2e"))
    assert set(snaps) == {"5h", "7d", "7d_opus", "7d_future", "unified", "overage"}
    assert snaps["5h"] == {"seen_at": iso(SEEN), "provider": "anthropic", "account": "3f9a1c2e", "kind": "plan",
                           "window": "5h", "window_minutes": 300, "utilization": 0.62,
                           "resets_at": iso(1790006400), "status": "allowed"}
    assert (snaps["7d"]["utilization"], snaps["7d"]["resets_at"], snaps["7d"]["window_minutes"]) == (
        0.31, iso(1790300000), 10080)
    assert snaps["7d_opus"]["utilization"] == 0.9 and snaps["7d_future"]["utilization"] == 0.05
    assert snaps["unified"] == {"seen_at": iso(SEEN), "provider": "anthropic", "account": "3f9a1c2e", "kind": "plan",
                                "window": "unified", "status": "allowed_warning", "resets_at": iso(1790006400),
                                "claim": "five_hour", "fallback_percentage": 0.5}
    assert snaps["overage"]["status"] == "rejected" and snaps["overage"]["resets_at"] is None


def test_codex_windows_are_named_by_their_length_with_absolute_or_relative_resets() -> None:
    headers = {
        "x-codex-primary-used-percent": "37.5", "x-codex-primary-window-minutes": "10080",  # weekly as primary
        "x-codex-primary-reset-at": "1790300000",
        "x-codex-secondary-used-percent": "12", "x-codex-secondary-window-minutes": "300",
        "x-codex-secondary-reset-after-seconds": "600",
        "x-codex-active-limit": "premium", "x-codex-rate-limit-reached-type": "secondary",
        "x-codex-plan-type": "pro",  # not a figure we keep
    }
    snaps = by_window(snapshots(headers.items(), SEEN, provider="codex", account=None))
    assert set(snaps) == {"7d", "5h", "unified"}
    assert snaps["7d"] == {"seen_at": iso(SEEN), "provider": "codex", "account": "", "kind": "plan", "window": "7d",
                           "window_minutes": 10080, "utilization": 0.375, "resets_at": iso(1790300000),
                           "claim": "primary"}
    assert (snaps["5h"]["utilization"], snaps["5h"]["resets_at"]) == (0.12, iso(SEEN + 600))
    assert snaps["unified"]["status"] == "rejected:secondary" and snaps["unified"]["claim"] == "premium"
    assert not any("pro" == v for s in snaps.values() for v in s.values())


def test_api_key_limits_from_anthropic_and_openai_style_headers() -> None:
    anthropic = [
        ("anthropic-ratelimit-requests-limit", "4000"), ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2026-09-21T14:14:20Z"),
        ("anthropic-ratelimit-input-tokens-limit", "400000"), ("anthropic-ratelimit-input-tokens-remaining", "100000"),
        ("anthropic-ratelimit-input-tokens-reset", "2026-09-21T14:13:21.5+00:00"),
    ]
    snaps = by_window(snapshots(anthropic, SEEN, provider="anthropic", account="b07d44e1"))
    assert snaps["requests"] == {"seen_at": iso(SEEN), "provider": "anthropic", "account": "b07d44e1", "kind": "api",
                                 "window": "requests", "limit_value": 4000, "remaining": 3999,
                                 "resets_at": iso(SEEN + 60), "utilization": 1 - 3999 / 4000}
    assert snaps["input-tokens"]["utilization"] == 0.75 and snaps["input-tokens"]["resets_at"] == iso(SEEN + 1.5)

    openai = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
              "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "30000",
              "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "6m0.5s"}
    snaps = by_window(snapshots(openai.items(), SEEN, provider="openai", account="71aa0000"))
    assert snaps["requests"]["resets_at"] == iso(SEEN + 0.12) and snaps["requests"]["remaining"] == 499
    assert snaps["tokens"]["resets_at"] == iso(SEEN + 360.5)
    assert abs(snaps["tokens"]["utilization"] - 1000 / 30000) < 1e-12


def test_values_that_do_not_parse_are_left_out_and_windows_with_nothing_dropped() -> None:
    headers = [
        ("anthropic-ratelimit-unified-5h-utilization", "lots"), ("anthropic-ratelimit-unified-5h-reset", "1790006400"),
        ("anthropic-ratelimit-unified-7d-utilization", "NaN"),  # nothing else for 7d: dropped
        ("x-codex-primary-used-percent", "inf"),
        ("x-ratelimit-reset-tokens", "soon"),
        ("anthropic-ratelimit-unified-status", "\x1b[31mred"),  # not printable: not kept
    ]
    snaps = by_window(snapshots(headers, SEEN, provider="anthropic", account="x"))
    assert set(snaps) == {"5h"}
    assert snaps["5h"]["utilization"] is None and snaps["5h"]["resets_at"] == iso(1790006400)
    assert snapshots([("content-type", "application/json")], SEEN, provider="openai", account=None) == []


def test_a_response_cannot_make_more_than_a_few_windows() -> None:
    headers = [(f"anthropic-ratelimit-unified-w{i}-utilization", "0.1") for i in range(200)]
    assert len(snapshots(headers, SEEN, provider="anthropic", account="a")) == MAX_WINDOWS


@given(st.lists(st.tuples(
    st.sampled_from(["anthropic-ratelimit-unified-5h-utilization", "anthropic-ratelimit-unified-5h-reset",
                     "anthropic-ratelimit-unified-status", "x-codex-primary-used-percent",
                     "x-codex-primary-reset-after-seconds", "x-codex-primary-window-minutes",
                     "x-ratelimit-reset-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                     "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-unified-fallback-percentage"]),
    st.text(max_size=40)), max_size=12), st.floats(min_value=0, max_value=4e9))
def test_any_header_values_give_snapshots_never_an_exception(headers: list, seen: float) -> None:
    for snap in snapshots(headers, seen, provider="p", account=None):
        assert snap["window"] and snap["kind"] in ("plan", "api")
        json.dumps(snap)  # storable as it is


def test_window_names_from_lengths() -> None:
    assert [window_label(m) for m in (300, 10080, 1440, 90, 60)] == ["5h", "7d", "1d", "90m", "1h"]


def test_session_ids_from_headers_and_both_metadata_forms() -> None:
    uuid = "57a121ec-f78c-48c3-a745-e3036a3ecc33"
    assert session_from_request([("X-Claude-Code-Session-Id", uuid)], None) == uuid
    assert session_from_request([("session_id", uuid)], None) == uuid  # Codex
    legacy = {"metadata": {"user_id": f"user_{'ab' * 32}_account_{uuid}_session_{uuid}"}}
    assert session_from_request([], legacy) == uuid
    new = {"metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": uuid})}}
    assert session_from_request([], new) == uuid
    # Nothing id-shaped, nothing taken: never another part of the body.
    assert session_from_request([], {"metadata": {"user_id": "user_x_session_has spaces"}}) is None
    assert session_from_request([], {"metadata": {"user_id": "{broken"}}) is None
    assert session_from_request([("x-claude-code-session-id", "x" * 65)], {"metadata": "no"}) is None
    assert session_from_request([], ["not", "a", "dict"]) is None
