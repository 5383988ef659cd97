"""`halton-meter prices` and `halton-meter reprice`: what the meter charges, and recomputing stored costs."""

from __future__ import annotations

import json
import uuid

from halton_meter.store.queries import list_calls, open_reader
from halton_meter.store.schema import migrate
from halton_meter.store.writer import Writer
from halton_meter.types import CallRecord


def seed(paths, **fields) -> CallRecord:
    migrate(paths.db)
    record = CallRecord(**{
        "id": str(uuid.uuid4()), "started_at": "2026-11-20T10:00:00.000000Z", "provider": "anthropic",
        "endpoint_kind": "messages", "host": "api.anthropic.com", "method": "POST", "path": "/v1/messages",
        "model": "claude-sonnet-4-5-20250929", "billable": True, "usage_reported": True, "complete": True,
        "input_tokens": 100_000, "output_tokens": 0, "price_provider_id": "anthropic", **fields})
    writer = Writer(paths.db).start()
    writer.submit(record)
    assert writer.close(10)
    return record


def test_prices_shows_the_source_and_tiers(cli) -> None:
    result = cli("prices", "claude-sonnet-4-5")
    assert result.exit_code == 0
    assert "anthropic · claude-sonnet-4-5   from genai-prices" in result.stdout
    assert "$3 (>200k: $6)" in result.stdout and "$6 (>200k: $12)" in result.stdout
    data = json.loads(cli("prices", "gpt-4o", "--provider", "openai", "--json").stdout)
    assert data[0]["per_million_tokens"]["input"] == "2.5" and "service_tier=priority" in data[0]["variants"]


def test_prices_unknown_model_and_provider(cli) -> None:
    unknown = cli("prices", "no-such-model-xyz")
    assert unknown.exit_code == 1 and "no price known for 'no-such-model-xyz'" in unknown.stderr
    bad = cli("prices", "gpt-4o", "--provider", "nope")
    assert bad.exit_code == 2 and "unknown provider 'nope'" in bad.stderr


def test_prices_lists_overrides(cli, paths) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text('[prices.anthropic."claude-sonnet-4-5"]\ninput = 2\noutput = 10\n')
    result = cli("prices")
    assert 'from config prices.anthropic."claude-sonnet-4-5"' in result.stdout and "$2" in result.stdout


def test_reprice_dry_run_then_apply(cli, paths) -> None:
    record = seed(paths)
    [before] = list_calls(open_reader(paths.db))
    assert before.cost_nanos == 300_000_000  # 100k input tokens at $3/MTok
    paths.config.write_text('[prices.anthropic."claude-sonnet-4-5"]\ninput = 2\noutput = 10\n')

    dry = json.loads(cli("reprice", "--since", "2026-11-01", "--dry-run", "--json").stdout)
    assert (dry["examined"], dry["changed"], dry["written"]) == (1, 1, False)
    assert (dry["before_usd"], dry["after_usd"]) == ("0.300000000", "0.200000000")
    assert list_calls(open_reader(paths.db))[0].cost_nanos == 300_000_000  # untouched

    applied = cli("reprice", "--since", "2026-11-01")
    assert applied.exit_code == 0 and "changed: 1" in applied.stdout and "$0.30 → $0.20" in applied.stdout
    [after] = list_calls(open_reader(paths.db))
    assert after.id == record.id and after.cost_nanos == 200_000_000
    assert after.price_source == 'config prices.anthropic."claude-sonnet-4-5"'
    assert after.input_tokens == before.input_tokens  # tokens never change

    again = json.loads(cli("reprice", "--since", "2026-11-01", "--json").stdout)
    assert again["changed"] == 0


def test_reprice_prices_rows_that_were_unknown(cli, paths) -> None:
    seed(paths, model="brand-new-model", price_provider_id=None, provider="anthropic")
    [row] = list_calls(open_reader(paths.db))
    assert (row.cost_nanos, row.priced) == (None, False)
    paths.config.write_text('[prices.anthropic."brand-new-model"]\ninput = 1\noutput = 1\n')
    dry = cli("reprice", "--since", "2026-11-01", "--dry-run")
    [line] = [x for x in dry.stdout.splitlines() if "brand-new-model" in x]
    assert "unpriced" in line and "$0.10" in line and "$0.00" not in line  # unpriced is not $0
    [model] = json.loads(cli("reprice", "--since", "2026-11-01", "--dry-run", "--json").stdout)["by_model"]
    assert (model["before_usd"], model["before_unpriced"], model["after_usd"]) == (None, 1, "0.100000000")
    data = json.loads(cli("reprice", "--since", "2026-11-01", "--json").stdout)
    assert data["newly_priced"] == 1
    assert list_calls(open_reader(paths.db))[0].cost_nanos == 100_000_000


def test_reprice_argument_errors(cli) -> None:
    assert cli("reprice", "--since", "1d", "--until", "2d").exit_code == 2


def test_prices_names_every_provider_that_bills_a_model(cli) -> None:
    result = cli("prices", "gpt-4o")
    assert result.exit_code == 0
    assert "openai (also codex) · gpt-4o" in result.stdout  # one shared price list, named once
    [sheet] = [s for s in json.loads(cli("prices", "gpt-4o", "--json").stdout) if s["provider"] == "openai"]
    assert sheet["also"] == ["codex"]
    elsewhere = cli("prices", "gpt-4o", "--provider", "groq")
    assert elsewhere.exit_code == 1
    assert "groq has no price for 'gpt-4o'; it is priced under openai, azure-openai, codex" in elsewhere.stderr


def test_prices_suggests_close_model_names(cli) -> None:
    typo = cli("prices", "gpt-4p")
    assert typo.exit_code == 1 and "Did you mean gpt-4, gpt-4o" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1
