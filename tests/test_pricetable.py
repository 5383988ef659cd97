"""Compiled prices equal genai-prices' own calculation: on every model it knows (each provider's list, every
service-tier variant), at random usages in every long-context tier, and through the Pricer for the whole
provider corpus."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.pricetable import FIELDS, PriceTable, compile_price

WHEN = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC)


def _models() -> list[tuple[str, str, Any]]:
    from genai_prices import data_snapshot

    out = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            contexts: list[dict[str, str] | None] = [None]
            contexts += [dict(variant.when) for variant in model.price_variants or ()]
            for context in contexts:
                out.append((provider.id, model.id, model.get_prices(WHEN, context)))
    return out


MODELS = _models()
_COMPILED: dict[int, Any] = {}


def compiled_for(index: int) -> Any:
    """Each model compiled once per test run (compiling measures genai-prices at a few dozen points)."""
    if index not in _COMPILED:
        _COMPILED[index] = compile_price(MODELS[index][2])
    return _COMPILED[index]


def _exact(model_price: Any, usage: tuple[int, ...]) -> Decimal:
    from genai_prices import Usage

    fields = {name: value for name, value in zip(FIELDS, usage, strict=True) if value}
    return Decimal(model_price.calc_price(Usage(**fields))["total_price"])


def _usage(data: st.DataObject, starts: tuple[int, ...]) -> tuple[int, ...]:
    """A usage whose prompt lands near a tier edge as often as anywhere (cache parts within the prompt)."""
    edge = data.draw(st.sampled_from([0, *starts]))
    prompt = max(0, edge + data.draw(st.integers(-3, 3)) if data.draw(st.booleans()) else data.draw(st.integers(0, 2_000_000)))
    cache_read = data.draw(st.integers(0, prompt))
    cache_write = data.draw(st.integers(0, prompt - cache_read))
    return (prompt, cache_read, cache_write, data.draw(st.integers(0, cache_write)), data.draw(st.integers(0, 300_000)),
            data.draw(st.integers(0, 40)))


def test_every_model_compiles() -> None:
    assert len(MODELS) > 1_000
    failed = [MODELS[i][:2] for i in range(len(MODELS)) if compiled_for(i) is None]
    assert failed == []


@settings(max_examples=1_500, deadline=None)
@given(data=st.data())
def test_compiled_totals_equal_genai_prices(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(MODELS) - 1))
    provider, model, price = MODELS[index]
    compiled = compiled_for(index)
    assert compiled is not None
    usage = _usage(data, compiled.starts)
    assert compiled.total(usage) == _exact(price, usage), (provider, model, usage)


def test_tiers_switch_on_the_whole_prompt_as_genai_prices_does() -> None:
    tiered = [i for i in range(len(MODELS)) if (c := compiled_for(i)) is not None and c.starts]
    assert tiered, "genai-prices has long-context tiers (Gemini, Claude Sonnet 4 1M)"
    for index in tiered:
        provider, model, price = MODELS[index]
        compiled = compiled_for(index)
        for start in compiled.starts:
            for prompt in (start - 1, start, start + 1):
                usage = (prompt, prompt // 4, prompt // 8, 0, 1_000, 0)
                assert compiled.total(usage) == _exact(price, usage), (provider, model, prompt)


def test_the_table_remembers_misses_and_resolves_variants() -> None:
    table = PriceTable()
    with pytest.raises(LookupError):
        table.resolve("openai", "no-such-model-zz", WHEN, None)
    with pytest.raises(LookupError):  # remembered: the second miss is a dict lookup
        table.resolve("openai", "no-such-model-zz", WHEN, None)
    _, standard = table.resolve("openai", "gpt-5", WHEN, None)
    _, flex = table.resolve("openai", "gpt-5", WHEN, {"service_tier": "flex"})
    usage = (100_000, 0, 0, 0, 10_000, 0)
    a, b = table.compiled(standard), table.compiled(flex)
    assert a is not None and b is not None and a.total(usage) == _exact(standard, usage)
    assert b.total(usage) == _exact(flex, usage) < a.total(usage)  # flex is half price
    assert table.compiled(standard) is a  # compiled once
