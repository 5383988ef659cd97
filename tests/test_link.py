"""The link from core workers to the first core (halton_meter/core/link.py), over real loopback TCP: records
arrive whole and in order, are acknowledged, a worker that goes away mid-call leaves `core_crash` rows, a
first core that goes away leaves the unacknowledged records in the worker's own journal, and budget questions
get the first core's ledger's answer (or pass when it does not answer)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from halton_meter.budget_config import parse_budgets
from halton_meter.budgets.ledger import Refusal
from halton_meter.core.link import LinkClient, LinkServer, RemoteLedger, decode_record
from halton_meter.core.worker import wait_for_first_core
from halton_meter.store import journal
from halton_meter.types import CallRecord

SECRET = b"s3cret-for-tests"


def record(i: int, *, provisional: bool = False, **extra: Any) -> CallRecord:
    return CallRecord(id=f"call-{i}", started_at="2026-12-04T10:00:00.000000Z", provider="anthropic",
                      endpoint_kind="messages", host="api.anthropic.com", method="POST", path="/v1/messages",
                      model="claude-sonnet-4-5", input_tokens=None if provisional else 10 + i,
                      output_tokens=None if provisional else 5,
                      incomplete_reason="in_progress" if provisional else None, complete=not provisional, **extra)


def keep(got: list[CallRecord], record: CallRecord, line: bytes) -> bool:
    """The first core's writer, standing in: the journal line it is handed is exactly the record's."""
    assert line == journal.encode(record)
    got.append(record)
    return True


class FakeLedger:
    """Stands in for budgets.ledger.Ledger: refuses calls whose dims name the project `over`."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any], int, bool]] = []
        self.budget = parse_budgets([{"name": "team", "period": "day", "limit_usd": 1, "action": "block"}], {})[0]

    def admit(self, call_id: str, dims: dict[str, Any], estimate: int, *, money: bool = True) -> Refusal | None:
        self.asked.append((call_id, dims, estimate, money))
        if dims.get("project") != "over":
            return None
        end = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
        return Refusal(self.budget, 1_000_000_000, 7, end)


async def _pair(tmp_path: Path, ledger: Any = None) -> tuple[LinkServer, LinkClient, list[CallRecord], list[str]]:
    got: list[CallRecord] = []
    lost: list[str] = []
    server = LinkServer(SECRET, lambda r, line: keep(got, r, line), ledger)
    port = await server.start()
    client = LinkClient(tmp_path / "spool", 1, on_lost=lost.append)
    await client.connect(port, SECRET)
    return server, client, got, lost


async def _until(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_records_arrive_in_order_and_are_acknowledged(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, client, got, _ = await _pair(tmp_path)
        sent = [record(i, provisional=i % 2 == 0) for i in range(500)]
        for r in sent:
            assert client.submit(r)
        await _until(lambda: len(got) == len(sent))
        assert await client.flush(5.0)
        assert client.unacked == 0
        assert got == sent  # every field round-trips, in order
        await _until(lambda: 1 in server.workers)
        assert server.workers[1].records == 500
        client.close()
        server.close()

    asyncio.run(scenario())


@given(st.lists(st.tuples(st.text(max_size=40), st.integers(min_value=0, max_value=10**12)), max_size=5))
def test_any_text_and_counts_round_trip(values: list[tuple[str, int]]) -> None:
    """A record's text fields (any Unicode, newlines included) and big integers come back as they went."""
    for text, number in values:
        original = dataclasses.replace(record(0), model=text, cost_nanos=number, extra={"note": text})
        line = journal.encode(original)
        assert line.count(b"\n") == 1 and line.endswith(b"\n")  # one message per line, whatever the text
        assert decode_record(json.loads(line)) == original


def test_a_worker_gone_mid_call_leaves_core_crash_rows(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, client, got, _ = await _pair(tmp_path)
        client.submit(record(1, provisional=True))
        client.submit(record(2, provisional=True))
        client.submit(record(2))  # call 2 finished; call 1 is still in flight
        assert await client.flush(5.0)
        assert client.transport is not None
        client.transport.abort()  # as a kill -9 would: no goodbye
        await _until(lambda: len(got) == 4)
        crashed = got[3]
        assert (crashed.id, crashed.incomplete_reason, crashed.complete) == ("call-1", "core_crash", False)
        assert server.crashed == 1
        assert 1 not in server.workers
        server.close()

    asyncio.run(scenario())


def test_first_core_gone_puts_unacknowledged_records_in_the_workers_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        got: list[CallRecord] = []
        lost: list[str] = []
        server = LinkServer(SECRET, lambda r, line: keep(got, r, line), None)
        port = await server.start()
        client = LinkClient(tmp_path / "spool", 2, on_lost=lost.append)
        await client.connect(port, SECRET)
        client.submit(record(1))
        assert await client.flush(5.0)
        # The first core stops reading (a wedged or dying process): what follows is never acknowledged.
        for conn in list(server._conns):
            assert conn.transport is not None
            conn.transport.pause_reading()
        client.submit(record(2))
        client.submit(record(3, provisional=True))
        await asyncio.sleep(0.1)
        server.close()  # and now it is gone
        await _until(lambda: bool(lost))
        client.submit(record(3))  # a call that finishes afterwards goes to the journal too
        client.close()
        kept = [r for p in sorted((tmp_path / "spool").glob("journal-*.seg")) for r in journal.read_segment(p)]
        assert [(r["id"], r["incomplete_reason"]) for r in kept] == [
            ("call-2", None), ("call-3", "in_progress"), ("call-3", None)]
        assert [r.id for r in got] == ["call-1"]
        assert "closed" in lost[0] or "failed" in lost[0]

    asyncio.run(scenario())


def test_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        got: list[CallRecord] = []
        server = LinkServer(SECRET, lambda r, line: keep(got, r, line), None)
        port = await server.start()
        lost: list[str] = []
        client = LinkClient(tmp_path / "spool", 1, on_lost=lost.append)
        await client.connect(port, b"not-the-secret")
        client.submit(record(1))
        await _until(lambda: bool(lost))
        assert got == [] and server.workers == {}
        client.close()  # the refused record is kept in the worker's journal, not lost
        assert [r["id"] for p in (tmp_path / "spool").glob("journal-*.seg") for r in journal.read_segment(p)] == ["call-1"]
        server.close()

    asyncio.run(scenario())


def test_budget_questions_get_the_first_cores_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = FakeLedger()
        server, client, _, _ = await _pair(tmp_path, ledger)
        remote = RemoteLedger(client, (ledger.budget,))
        assert remote.blocking
        assert await remote.admit("call-1", {"project": "fine"}, 123, money=True) is None
        refusal = await remote.admit("call-2", {"project": "over"}, 456, money=False)
        assert refusal is not None
        assert (refusal.budget.name, refusal.spent, refusal.reserved) == ("team", 1_000_000_000, 7)
        assert refusal.period_end == datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
        assert ledger.asked == [("call-1", {"project": "fine"}, 123, True), ("call-2", {"project": "over"}, 456, False)]
        client.close()
        server.close()

    asyncio.run(scenario())


def test_an_unanswered_budget_question_lets_the_call_pass(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = FakeLedger()
        server, client, _, _ = await _pair(tmp_path, ledger)
        for conn in list(server._conns):
            assert conn.transport is not None
            conn.transport.pause_reading()
        remote = RemoteLedger(client, (ledger.budget,))
        started = asyncio.get_running_loop().time()
        assert await remote.admit("call-9", {"project": "over"}, 1) is None  # fail open
        assert asyncio.get_running_loop().time() - started < 2.0
        client.close()
        server.close()

    asyncio.run(scenario())


def test_wait_for_first_core_reads_the_link_port(tmp_path: Path) -> None:
    path = tmp_path / "core.json"
    assert wait_for_first_core(path, 0.1) is None
    path.write_text(json.dumps({"port": 1, "pid": 2, "secret": "abc"}))  # an older core: no link
    assert wait_for_first_core(path, 0.1) is None
    path.write_text(json.dumps({"port": 1, "pid": 2, "secret": "abc", "link_port": 4321}))
    assert wait_for_first_core(path, 0.1) == (4321, b"abc")


def test_records_are_plain_dataclasses() -> None:
    """The link sends every CallRecord field: a new field is carried with no change here."""
    assert tuple(f.name for f in dataclasses.fields(CallRecord)) == journal.FIELDS


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_a_bad_worker_count_in_the_environment_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from halton_meter.config import Config
    from halton_meter.errors import ConfigError
    from halton_meter.paths import Paths

    monkeypatch.setenv("HALTON_METER_WORKERS", value)
    with pytest.raises(ConfigError, match="HALTON_METER_WORKERS must be"):
        Config(paths=Paths(tmp_path)).workers()


def test_worker_count_from_config_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from halton_meter.config import auto_workers, load_config
    from halton_meter.errors import ConfigError
    from halton_meter.paths import Paths

    paths = Paths(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.delenv("HALTON_METER_WORKERS")
    assert load_config(paths).workers() == auto_workers() == max(1, min(__import__("os").cpu_count() or 1, 4))
    paths.config.write_text("[core]\nworkers = 3\n")
    assert load_config(paths).workers() == 3
    paths.config.write_text('[core]\nworkers = "auto"\n')
    assert load_config(paths).workers() == auto_workers()
    monkeypatch.setenv("HALTON_METER_WORKERS", "2")
    assert load_config(paths).workers() == 2
    paths.config.write_text("[core]\nworkers = 0\n")
    with pytest.raises(ConfigError, match='core.workers must be "auto" or an integer between 1 and 16'):
        load_config(paths)
