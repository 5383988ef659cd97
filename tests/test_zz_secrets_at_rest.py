"""Runs last (file order): search every file every meter of this test session wrote for the credentials
and prompt text the tests sent. Every such value in the suite contains `CANARY` (API keys in
x-api-key / authorization / x-goog-api-key headers, OAuth tokens, `?key=` values, prompts)."""

from __future__ import annotations

import pytest

from halton_meter.testing.meter import STARTED

CANARIES = (b"CANARY", b"SECRETKEY")


def test_no_credential_or_prompt_reached_disk() -> None:
    if not STARTED:
        pytest.skip("no meter ran in this session (run the whole suite)")
    searched = 0
    hits = []
    for meter in STARTED:
        meter.stop()  # flush and close everything first, so the WAL and logs are final
        for path in meter.files_at_rest():
            if path.parent.name == "ca":  # certificates and trust bundles: public material, no traffic
                continue
            data = path.read_bytes()
            searched += 1
            hits += [f"{path}: {canary.decode()}" for canary in CANARIES if canary in data]
    assert searched >= 3 * len(STARTED)  # at least a database, a WAL/log and the serve output each
    assert hits == []
