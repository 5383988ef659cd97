"""Block budgets through a real `halton-meter serve`, with the official SDKs (default retries on) and httpx:
the call that finds the budget spent fails at once with the SDK's own rate-limit error carrying our
message, nothing reaches the provider, the SDK does not retry, and the refusal is a row; 20 parallel
streams against a nearly spent budget overshoot by no more than the documented bound. (A locked database
never blocking a call is tests/test_budgets_locked.py, on a meter of its own.)"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from halton_meter.budget_config import usd as money
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Pause, Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

ANTHROPIC = "https://api.anthropic.com"


@pytest.fixture(autouse=True)
def _fresh_routes(fake_provider: FakeProvider) -> None:
    fake_provider.clear()


def set_budgets(meter: MeterProcess, text: str) -> None:
    """Replace the [[budgets]] of the meter's config.toml and wait until the running meter has them."""
    config = meter.home / "config.toml"
    kept = config.read_text().split("\n# budgets\n")[0]
    config.write_text(kept + "\n# budgets\n" + textwrap.dedent(text))
    meter.cli("reload", timeout=30)


def usd(nanos: int) -> str:
    return str(Decimal(nanos).scaleb(-9))


def spent(meter: MeterProcess, **scope: str) -> int:
    return sum(r["cost_nanos"] or 0 for r in meter.rows()
               if r["billing"] == "api" and all(r[k] == v for k, v in scope.items()))


def run_python(meter: MeterProcess, code: str, cwd: Path, **env: str) -> Any:
    return meter.cli("run", "--", sys.executable, "-c", textwrap.dedent(code), cwd=cwd, check=False, **env)


def budget_rows(meter: MeterProcess) -> list[dict[str, Any]]:
    return [r for r in meter.rows() if r["error_type"] == "budget_exceeded"]


def test_the_anthropic_sdk_gets_its_own_rate_limit_error_and_does_not_retry(meter: MeterProcess,
                                                                            fake_provider: FakeProvider,
                                                                            tmp_path: Path) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=1000,
                                                                                   output_tokens=100)))
    project = tmp_path / "acme"
    project.mkdir()
    call = """
        import anthropic, sys
        client = anthropic.Anthropic(api_key="sk-ant-api03-CANARY-budget")  # default retries: 2
        try:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
            print("OK")
        except anthropic.RateLimitError as exc:
            print("REFUSED", exc.response.headers.get("retry-after"), exc.response.headers.get("x-should-retry"))
            print(exc.message)
    """
    assert run_python(meter, call, project).stdout.startswith("OK")
    meter.wait_for_calls(1)
    one_call = spent(meter, project="acme")
    assert one_call == (1000 * 3 + 100 * 15) * 1000  # sonnet: $3 / $15 per MTok
    # The budget: just above what one more call brings.
    set_budgets(meter, f"""
        [[budgets]]
        name = "acme-monthly"
        scope = {{ project = "acme" }}
        period = "month"
        limit_usd = "{usd(one_call * 2 + one_call // 2)}"
        action = "block"
    """)
    before = len(meter.rows())
    assert run_python(meter, call, project).stdout.startswith("OK")  # 1 → 2 calls: under the limit
    meter.wait_for_calls(before + 1)
    assert run_python(meter, call, project).stdout.startswith("OK")  # 2 → 3 calls: crosses it
    meter.wait_for_calls(before + 2)
    upstream = len(fake_provider.requests)
    result = run_python(meter, call, project)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("REFUSED"), result.stdout + result.stderr
    _, retry_after, should_retry = lines[0].split()
    assert int(retry_after) > 0 and should_retry == "false"
    assert "budget acme-monthly reached" in lines[1] and "halton-meter budgets override acme-monthly --for 1h" in lines[1]
    assert len(fake_provider.requests) == upstream  # nothing was sent
    rows = meter.wait_for_calls(before + 3)
    refused = budget_rows(meter)
    assert len(refused) == 1  # and the SDK did not retry: one refusal, one row
    [row] = refused
    assert (row["status"], row["billable"], row["cost_nanos"], row["project"]) == (429, 0, 0, "acme")
    assert row["extra"]["budget"] == "acme-monthly"
    assert len(rows) == before + 3
    notes = {n["kind"]: n for n in json.loads(meter.cli("report", "--json", "--project", "acme").stdout)["notes"]}
    assert notes["budget"]["calls"] == 1 and "refused by a budget" in notes["budget"]["text"]
    # Another project is not in scope: it still goes through.
    other = tmp_path / "other"
    other.mkdir()
    assert run_python(meter, call, other).stdout.startswith("OK")
    set_budgets(meter, "")


def test_the_openai_sdk_gets_its_rate_limit_error_shape(meter: MeterProcess, fake_provider: FakeProvider,
                                                        tmp_path: Path) -> None:
    fake_provider.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(prompt_tokens=5,
                                                                                     completion_tokens=1)))
    set_budgets(meter, """
        [[budgets]]
        name = "openai-day"
        scope = { provider = "openai" }
        period = "day"
        limit_usd = "0.000000001"
        action = "block"
    """)
    # A limit of one nano-dollar: the first call (nothing of OpenAI spent before it) passes, the next is refused.
    before = len(meter.rows())
    code = """
        import openai
        client = openai.OpenAI(api_key="sk-proj-CANARY")
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            print("OK")
        except openai.RateLimitError as exc:
            print("REFUSED", exc.code, exc.response.headers.get("x-should-retry"))
    """
    first = run_python(meter, code, tmp_path).stdout
    meter.wait_for_calls(before + 1)
    upstream = len(fake_provider.requests)
    second = run_python(meter, code, tmp_path).stdout
    assert first.startswith("OK") and second.split() == ["REFUSED", "budget_exceeded", "false"], (first, second)
    assert len(fake_provider.requests) == upstream
    meter.wait_for_calls(before + 2)
    assert sum(1 for r in budget_rows(meter) if r["extra"]["budget"] == "openai-day") == 1
    set_budgets(meter, "")


def test_parallel_streams_against_a_nearly_spent_budget_stay_within_the_bound(meter: MeterProcess,
                                                                              fake_provider: FakeProvider) -> None:
    events = bodies.anthropic_stream_events(input_tokens=2000, output_tokens=200, chunks=("a", "b", "c"))
    pieces: list[Any] = []
    for event in events:
        pieces += [event, Pause(0.05)]
    fake_provider.add("POST", "/v1/messages", Reply(pieces=pieces[:-1], sse=True))
    key = "sk-ant-api03-CANARY-parallel"
    # One stream costs C = 2000 × $3 + 200 × $15 per MTok on sonnet; max_tokens 400 and an 8 kB body make the
    # reservation (400 × $15 + the body's bytes / 4 × $3 ≈ 1.3 C) at least C, the case the documented bound
    # is stated for.
    cost = (2000 * 3 + 200 * 15) * 1000
    limit = cost * 5 + cost // 2
    set_budgets(meter, f"""
        [[budgets]]
        name = "parallel"
        scope = {{ model = "claude-sonnet-4-5*" }}
        period = "day"
        limit_usd = "{usd(spent(meter, model='claude-sonnet-4-5-20250929') + limit)}"
        action = "block"
    """)
    start_spent = spent(meter, model="claude-sonnet-4-5-20250929")
    before = len(meter.rows())
    upstream = len(fake_provider.requests)

    async def one(client: Any) -> int:
        body = {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 400,
                "messages": [{"role": "user", "content": "x" * 8000}]}
        async with client.stream("POST", f"{ANTHROPIC}/v1/messages", json=body,
                                 headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as response:
            await response.aread()
            return int(response.status_code)

    async def burst() -> list[int]:
        async with meter.async_client(extra_ca=fake_provider.ca_pem, timeout=60) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(20))))

    statuses = asyncio.run(burst())
    rows = meter.wait_for_calls(before + 20, timeout=30)[before:]
    assert len(rows) == 20 and sorted(statuses) == sorted(r["status"] for r in rows)
    passed = [r for r in rows if r["status"] == 200]
    refused = [r for r in rows if r["error_type"] == "budget_exceeded"]
    assert len(passed) + len(refused) == 20 and passed and refused  # nothing lost, some refused
    assert all(r["complete"] and r["output_tokens"] == 200 for r in passed)
    assert len(fake_provider.requests) - upstream == len(passed)
    overshoot = spent(meter, model="claude-sonnet-4-5-20250929") - start_spent - limit
    # The bound (docs/budgets.md): with reservations at least each call's cost, at most one call beyond.
    assert overshoot <= cost, (overshoot, len(passed))
    set_budgets(meter, "")


def test_alerts_reach_on_alert_once_and_an_override_lets_calls_through_within_seconds(
        meter: MeterProcess, fake_provider: FakeProvider, tmp_path: Path) -> None:
    model = "claude-opus-4-1-20250805"
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(model=model, input_tokens=1000,
                                                                                   output_tokens=100)))
    cost = 1000 * 15_000 + 100 * 75_000  # opus 4.1: $15 / $75 per MTok
    hook, out = tmp_path / "hook.py", tmp_path / "events.jsonl"
    hook.write_text(f"import sys\nopen({str(out)!r}, 'a').write(sys.stdin.read().strip() + '\\n')\n")
    before_spent = spent(meter, model=model)
    set_budgets(meter, f"""
        [[budgets]]
        name = "opus-day"
        scope = {{ model = "claude-opus-4-1*" }}
        period = "day"
        limit_usd = "{usd(before_spent + 2 * cost + cost // 2)}"
        warn_at = [0.5]
        action = "block"
        on_alert = ["{sys.executable}", "{hook}"]
    """)

    def post(client: Any) -> int:
        reply = client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-opus-4-1", "max_tokens": 5, "messages": []},
                            headers={"x-api-key": "sk-ant-api03-CANARY-opus", "anthropic-version": "2023-06-01"})
        return int(reply.status_code)

    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        for n in range(3):  # 2 × C crosses 50 %, 3 × C the limit
            assert post(client) == 200
            meter.wait_for_calls(before + n + 1)
        assert post(client) == 429
        meter.cli("budgets", "override", "opus-day", "--for", "1h")
        deadline = time.monotonic() + 10
        while post(client) == 429:  # the core reads overrides every 2 s
            assert time.monotonic() < deadline, "the override was not picked up within 10 s"
            time.sleep(0.5)
    deadline = time.monotonic() + 10
    while len(out.read_text().splitlines() if out.exists() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["budget"], e["kind"], e["threshold"]) for e in events] == [("opus-day", "warn", 0.5),
                                                                          ("opus-day", "limit", 1.0)]
    assert events[1]["limit_usd"] == money(before_spent + 2 * cost + cost // 2)
    assert events[1]["spent_usd"] == money(before_spent + 3 * cost) and events[0]["scope"] == {"model": ["claude-opus-4-1*"]}
    history = json.loads(meter.cli("budgets", "history", "opus-day", "--json").stdout)
    kinds = sorted(e["kind"] for e in (history["events"] if isinstance(history, dict) else history))
    assert kinds == ["limit", "override", "warn"], kinds
    set_budgets(meter, "")


def test_a_plan_budget_refuses_a_claude_code_login_past_its_share_of_the_5h_window(
        meter: MeterProcess, fake_provider: FakeProvider) -> None:
    reset = int(time.time()) + 3 * 3600
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=2),
                                                    headers={"anthropic-ratelimit-unified-5h-utilization": "0.95",
                                                             "anthropic-ratelimit-unified-5h-reset": str(reset)}))
    set_budgets(meter, """
        [[budgets]]
        name = "max-5h"
        plan_window = "5h"
        limit_plan = 0.9
        action = "block"
    """)
    oauth = {"authorization": "Bearer sk-ant-oat01-CANARY-plan-budget", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        assert client.post(f"{ANTHROPIC}/v1/messages", json=body, headers=oauth).status_code == 200
        meter.wait_for_calls(before + 1)
        upstream = len(fake_provider.requests)
        refused = client.post(f"{ANTHROPIC}/v1/messages", json=body, headers=oauth)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
    assert "5h plan window is at 95 %" in refused.json()["error"]["message"]
    assert reset - 5 <= time.time() + int(refused.headers["retry-after"]) <= reset + 5
    assert len(fake_provider.requests) == upstream
    [row] = meter.wait_for_calls(before + 2)[before + 1:]
    assert (row["error_type"], row["billing"], row["extra"]["budget"]) == ("budget_exceeded", "subscription", "max-5h")
    shown = {b["name"]: b for b in json.loads(meter.cli("budgets", "--json").stdout)["budgets"]}
    assert shown["max-5h"]["state"] == "blocked" and shown["max-5h"]["utilization"] == 0.95
    set_budgets(meter, "")
