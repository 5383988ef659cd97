"""No credential or prompt text any test sent reaches a meter's files. Every such value in the suite
contains `CANARY` or `SECRETKEY` (API keys in x-api-key / authorization / x-goog-api-key headers, OAuth
tokens, `?key=` values, prompts).

The search over every meter the session started runs after the last test, whatever the order or the
selection: `_no_secrets_at_rest` in tests/conftest.py, a session-scoped fixture whose teardown fails the
run (as an error in the last test's teardown) when a canary is found. This file checks that search."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from halton_meter.testing.meter import secrets_at_rest

CANARIES = (b"CANARY", b"SECRETKEY")


def fake_meter(home: Path, files: dict[str, bytes]) -> SimpleNamespace:
    for name, data in files.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_bytes(data)
    return SimpleNamespace(stop=lambda: 0, files_at_rest=lambda: sorted(p for p in home.rglob("*") if p.is_file()))


def test_the_search_finds_a_canary_in_any_file_but_certificates(tmp_path: Path) -> None:
    meter = fake_meter(tmp_path, {"db.sqlite-wal": b"..x-api-key: sk-CANARY-1..", "logs/core.log": b"clean",
                                  "ca/ca.pem": b"CANARY in a certificate is public"})
    searched, hits = secrets_at_rest([meter], CANARIES)  # type: ignore[list-item]
    assert searched == 2
    assert hits == [f"{tmp_path / 'db.sqlite-wal'}: CANARY"]


def test_a_clean_meter_has_no_hits(tmp_path: Path) -> None:
    meter = fake_meter(tmp_path, {"db.sqlite": b"tokens only", "serve.out": b"READY 1234"})
    assert secrets_at_rest([meter], CANARIES) == (2, [])  # type: ignore[list-item]
