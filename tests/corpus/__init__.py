"""The provider fixture corpus: wire-exact requests and responses, authored from the documented formats
(docs/providers/index.md), each with the record it must produce and the cost computed by hand from list prices.

Every case runs twice (tests/test_corpus.py): fed straight to the provider's parser (whole, and split at
random points by hypothesis), and replayed through a real `halton-meter serve` against the fake provider,
where the client's bytes must also match what the provider sent.

A module per provider defines `CASES: list[Case]`. Expected costs are written as arithmetic on published
per-million-token prices (`per_million(...)`), never copied from the meter's own output.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    """Unique, `provider/short-description`."""
    host: str
    path: str
    """Request path including any query string, exactly as the client sends it."""
    request: bytes | dict[str, Any] | None
    """Request body; a dict is sent as compact JSON. None: no body (GET)."""
    response: list[bytes] | bytes
    """Response body as the provider writes it, uncompressed: whole, or one element per write."""
    expect: dict[str, Any]
    """Record fields that must match exactly (public names, plus `cost_nanos`)."""
    status: int = 200
    method: str = "POST"
    sse: bool = False
    content_type: str | None = None
    """Response content type when not JSON/SSE (e.g. Gemini's JSON-array stream is application/json)."""
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None
    """Compress the response on the wire with this content-encoding (the parser sees it decoded)."""
    cut: bool = False
    """The provider's connection is reset after the last piece (a truncated response)."""
    client_view: bytes | None = None
    """What the client must receive when the meter documentedly changes it (usage-chunk handling);
    None means exactly the provider's bytes."""
    upstream_request: dict[str, Any] | None = None
    """The JSON body the provider must receive when the meter documentedly changes the request
    (an injected `stream_options.include_usage`); None means exactly the client's bytes."""
    e2e: bool = True
    """Replay through the real proxy as well (False only for cases a real client cannot produce)."""

    @property
    def request_bytes(self) -> bytes:
        if self.request is None:
            return b""
        if isinstance(self.request, bytes):
            return self.request
        return json.dumps(self.request, separators=(",", ":")).encode()

    @property
    def pieces(self) -> list[bytes]:
        return [self.response] if isinstance(self.response, bytes) else list(self.response)

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    @property
    def response_content_type(self) -> str:
        if self.content_type is not None:
            return self.content_type
        return "text/event-stream; charset=utf-8" if self.sse else "application/json"


def per_million(*terms: tuple[int, str]) -> int:
    """Nano-dollars for (tokens, USD per million tokens) terms, rounded half-even like the meter."""
    usd = sum((Decimal(tokens) * Decimal(price) for tokens, price in terms), Decimal(0)) / Decimal(1_000_000)
    return int((usd * 1_000_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def sse(data: Any, event: str | None = None, eol: str = "\n") -> bytes:
    """One SSE event; dicts are compact JSON as providers send them."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {payload}{eol}{eol}".encode()


FIXED_TIME = "2026-11-22T12:00:00.000000Z"


def replay(case: Case, provider: Any, pricer: Any = None, split: list[int] | None = None,
           started_at: str = FIXED_TIME) -> Any:
    """A case straight through `provider` with the test kit (halton_meter.testing.providers: the core's own
    per-call pipeline, no proxy): the wire body, compressed when the case says so, split at `split`
    offsets; then the record, priced as if started at `started_at`. The proxy does exactly this with the
    bytes it sees, so both must agree."""
    from halton_meter.pricing import Pricer
    from halton_meter.testing.providers import compress, parse_call

    headers = {"content-type": case.response_content_type, **case.response_headers}
    wire = case.body
    if case.encoding:
        wire, headers["content-encoding"] = compress(case.body, case.encoding), case.encoding
    return parse_call(provider, wire, path=case.path, request=case.request_bytes, method=case.method,
                      host=case.host, status=case.status, request_headers=case.request_headers,
                      response_headers=headers, split=split, eof=not case.cut, pricer=pricer or Pricer(),
                      started_at=started_at).record


def _modules() -> list[Any]:
    return [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)]


def corpus_config() -> str:
    """TOML the corpus needs (user-declared endpoints, price overrides): each module's `CONFIG`, joined."""
    return "\n".join(getattr(module, "CONFIG", "") for module in _modules())


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for module in _modules():
        cases.extend(getattr(module, "CASES", []))
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate corpus case names: {sorted(duplicates)}"
    return cases
