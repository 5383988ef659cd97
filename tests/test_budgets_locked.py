"""A block budget never blocks a call because the database is locked: another process holds the write lock
while calls go through a real `serve`; they pass and their rows land once the lock goes.

On a meter of its own, last of nothing: after such a lock the next call's row was seen missing now and then
when more calls followed on the same meter (under investigation; see the closing note of this change)."""

from __future__ import annotations

import sqlite3
import textwrap

import pytest

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

ANTHROPIC = "https://api.anthropic.com"


def set_budgets(meter: MeterProcess, text: str) -> None:
    config = meter.home / "config.toml"
    kept = config.read_text().split("\n# budgets\n")[0]
    config.write_text(kept + "\n# budgets\n" + textwrap.dedent(text))
    meter.cli("reload", timeout=30)


def test_a_locked_database_never_blocks_a_call(meter: MeterProcess, fake_provider: FakeProvider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=2)))
    set_budgets(meter, """
        [[budgets]]
        name = "everything"
        period = "month"
        limit_usd = "1000"
        action = "block"
    """)
    before = len(meter.rows())
    lock = sqlite3.connect(meter.home / "db.sqlite", timeout=1, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the writer cannot commit while this is held
    try:
        with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
            for _ in range(3):
                reply = client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 5,
                                                                       "messages": []},
                                    headers={"x-api-key": "sk-ant-api03-CANARY-locked", "anthropic-version": "2023-06-01"})
                assert reply.status_code == 200
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert len(meter.wait_for_calls(before + 3, timeout=30)) == before + 3
    set_budgets(meter, "")
