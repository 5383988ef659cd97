"""Test kits for Halton Meter and for plugin authors.

`providers` runs a provider plugin through the core's own per-call pipeline without a proxy: bytes in, the
record out (`parse_response`, `replay`, `parse_call`, and the hypothesis property
`assert_any_split_gives_the_same_record`); its names are re-exported here. `fake_provider` is a scripted
HTTPS server that answers for the real provider host names, `bodies` builds the JSON and SSE bodies those
providers send, and `meter` runs a real `halton-meter serve` against them (`pytest_plugin` has them as
fixtures). The meter's own processes import nothing from here; `halton-meter demo` runs the fake provider
and a meter with these modules, so they work with the runtime dependencies alone (trustme, which makes the
fake's CA, is one). Their httpx clients (`fake.http_client()`, `meter.client()`) need httpx from the `test`
extra, and the split property needs hypothesis.
"""

from halton_meter.testing.providers import (
    FIXED_TIME,
    RECORD_ID,
    ParsedCall,
    assert_any_split_gives_the_same_record,
    comparable,
    compress,
    parse_call,
    parse_response,
    replay,
    split_points,
)

__all__ = [
    "FIXED_TIME", "RECORD_ID", "ParsedCall", "assert_any_split_gives_the_same_record", "comparable", "compress",
    "parse_call", "parse_response", "replay", "split_points",
]
