"""The budget gate (halton_meter/core/budgetgate.py): every built-in provider refuses in its own API's 429
shape (Anthropic family `rate_limit_error`, Google `RESOURCE_EXHAUSTED`, the rest OpenAI-style with code
`budget_exceeded`), with retry-after and x-should-retry; free endpoints and subscription calls never spend a
money budget; the message names the budget and the override; a refused call's record costs nothing."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from reportkit import write

from halton_meter.budget_config import parse_budgets
from halton_meter.budgets.ledger import Ledger
from halton_meter.core.budgetgate import BudgetGate
from halton_meter.core.pipeline import CallPipeline
from halton_meter.host import PluginHost
from halton_meter.types import BILLING_SUBSCRIPTION, RequestFacts

NOW = datetime.datetime(2026, 11, 20, 12, tzinfo=datetime.UTC)
GOOGLE = {"gemini", "code-assist"}
ANTHROPIC_FAMILY = {"anthropic"}


@pytest.fixture(scope="module")
def providers() -> dict[str, object]:
    host = PluginHost(None).load(entry_points=False)
    return {p.name: p for p in host.registries.providers}


def gate(tmp_path: Path, limit: str = "0.000000001", **budget: object) -> BudgetGate:
    db = tmp_path / "db.sqlite"
    write(db, [])
    budgets = parse_budgets([{"name": "cap", "period": "day", "limit_usd": limit, "action": "block", **budget}], {})
    ledger = Ledger(budgets, db, clock=lambda: NOW.timestamp())
    ledger.load()
    ledger._states["cap"].spent = 10**9  # a dollar already spent today
    return BudgetGate(ledger, lambda record: 0, clock=lambda: NOW.timestamp())


def pipeline(provider: object, path: str, *, billing: str | None = None) -> CallPipeline:
    endpoint = provider.route("POST", path)  # type: ignore[attr-defined]
    assert endpoint is not None
    call = CallPipeline(provider=provider, endpoint=endpoint, method="POST", host="h", path=path)  # type: ignore[arg-type]
    call.facts = RequestFacts(model_requested="m", billing=billing, max_output_tokens=64)
    return call


PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions", "gemini": "/v1beta/models/gemini-2.5-pro:generateContent",
         "code-assist": "/v1internal:generateContent", "codex": "/backend-api/codex/responses"}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_provider_refuses_in_its_own_shape(tmp_path: Path, providers: dict[str, object], name: str) -> None:
    call = pipeline(providers[name], PATHS[name], billing="api")  # Code Assist and Codex are plans by default
    answer = gate(tmp_path).check(call, 100, {"provider": name, "model": "m"})
    assert answer is not None
    status, headers, body = answer
    data = json.loads(body)
    assert status == 429 and headers["content-type"] == "application/json"
    assert headers["x-should-retry"] == "false"
    assert int(headers["retry-after"]) == 12 * 3600 + 1  # to local midnight (the test runs in UTC)
    if name in ANTHROPIC_FAMILY:
        assert data["type"] == "error" and data["error"]["type"] == "rate_limit_error"
        text = data["error"]["message"]
    elif name in GOOGLE:
        assert data["error"]["status"] == "RESOURCE_EXHAUSTED" and data["error"]["code"] == 429
        text = data["error"]["message"]
    else:
        assert data["error"]["code"] == "budget_exceeded"
        text = data["error"]["message"]
    assert "budget cap reached ($1.00 of $0.00 this day)" in text
    assert "`halton-meter budgets override cap --for 1h`" in text
    assert call.refused_by == "cap"
    record = call.finish(eof=True)
    assert (record.error_type, record.billable, record.cost_nanos, record.extra["budget"]) == (
        "budget_exceeded", False, 0, "cap")


def test_free_endpoints_and_subscription_calls_pass_a_money_budget(tmp_path: Path, providers: dict[str, object]) -> None:
    anthropic = providers["anthropic"]
    checker = gate(tmp_path)
    assert checker.check(pipeline(anthropic, "/v1/messages/count_tokens"), 10, {"provider": "anthropic"}) is None
    assert checker.check(pipeline(anthropic, "/v1/messages", billing=BILLING_SUBSCRIPTION), 10,
                         {"provider": "anthropic"}) is None
    assert checker.check(pipeline(anthropic, "/v1/messages"), 10, {"provider": "anthropic"}) is not None
    assert checker.refused == 1


def test_the_reservation_prices_max_tokens_and_the_request_size(tmp_path: Path, providers: dict[str, object]) -> None:
    seen = []
    checker = gate(tmp_path, limit="1000")
    checker.price = lambda record: seen.append((record.input_tokens, record.output_tokens)) or 7
    assert checker.check(pipeline(providers["openai"], "/v1/chat/completions"), 4000, {"provider": "openai"}) is None
    assert seen == [(1000, 64)] and checker.ledger.status()[0]["reserved_nanos"] == 7
