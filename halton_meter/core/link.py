"""The link from core workers to the first core, which owns the database.

`serve` runs one core process per CPU (up to four by default, `[core] workers`). Each reads metered traffic
on its own (the edge spreads connections across them), but only the first core writes SQLite: one writer,
one journal, one budget ledger, one sync loop. Workers send it their records over this link, a loopback TCP
connection (portable: Windows has no Unix sockets to pass around) authenticated by the first core's
per-start secret from `run/core.json`.

The wire is lines, one message each:

* worker → first core: `H <secret> <index> <pid>` once; `R <seq> <record>` for each record (the record is a
  journal line: a JSON array in `journal.FIELDS` order); `A <id> <json>` to ask the budget ledger whether a
  call may start; `S <json>` with the worker's counters, once a second.
* first core → worker: `K <seq>` once every record up to `seq` is journaled by the first core's writer (so
  it survives the first core crashing); `D <id> <json>` with the ledger's answer.

What survives what:

* A worker killed mid-call: the records it sent before are in the socket and reach the first core anyway
  (the kernel delivers what was written before the process died). Its calls still in flight had their
  provisional record sent when their request went upstream; when the link closes, the first core writes each
  of those as `core_crash`, exactly as the start-up recovery does for a crashed single core. Never silence.
* The first core dying: a worker keeps every record the first core has not acknowledged. It opens a journal
  of its own in the spool directory, puts them there, stops taking new connections, lets its calls in
  flight finish (their records go to the same journal) and exits. The supervisor starts the first core again
  only once the workers are gone, so its start-up recovery replays those journals with its own.
* A budget question with no answer within ADMIT_TIMEOUT passes the call (budgets fail open everywhere).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from halton_meter.budget_config import Budget
from halton_meter.budgets.ledger import Ledger, Refusal
from halton_meter.store import journal
from halton_meter.store.journal import FIELDS, Journal
from halton_meter.store.writer import IN_PROGRESS
from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.link")

CRASHED = "core_crash"
ADMIT_TIMEOUT = 0.25
"""How long a worker waits for the ledger's answer before letting the call pass."""
MAX_UNACKED = 50_000
"""Records a worker holds for a first core that does not acknowledge them: past this the first core is
treated as gone (the worker journals them itself and stops)."""
MAX_LINE = 8 * 1024 * 1024
"""A longer line is not ours (a captured body is capped far below this): the connection is closed."""


def take_lines(buffer: bytearray, data: bytes) -> list[bytes]:
    """Append `data` to `buffer` and take out the complete lines it now holds (without their newline)."""
    buffer += data
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buffer[:end]).split(b"\n")
    del buffer[:end + 1]
    return lines


def decode_record(values: list[Any]) -> CallRecord:
    return CallRecord(**dict(zip(FIELDS, values, strict=True)))


# --------------------------------------------------------------------------------------------------
# The first core's side
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerState:
    index: int
    pid: int
    records: int = 0
    counters: dict[str, Any] = dataclasses.field(default_factory=dict)


class LinkServer:
    """Accepts workers, hands their records to the writer, answers their budget questions."""

    def __init__(self, secret: bytes, submit: Callable[[CallRecord, bytes], bool], ledger: Ledger | None) -> None:
        self.secret = secret
        self.submit = submit
        self.ledger = ledger
        self.workers: dict[int, WorkerState] = {}
        self.crashed = 0
        """Calls written as `core_crash` because their worker's link closed in the middle of them."""
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_ServerConnection] = set()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ServerConnection(self), "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "pid": w.pid, "records": w.records, **w.counters}
                for w in sorted(self.workers.values(), key=lambda w: w.index)]

    def in_flight(self) -> int:
        return sum(int(w.counters.get("in_flight") or 0) for w in self.workers.values())

    def metered(self) -> int:
        return sum(int(w.counters.get("metered") or 0) for w in self.workers.values())

    def decide(self, request: list[Any]) -> dict[str, Any] | None:
        call_id, dims, estimate, money = request
        if self.ledger is None:
            return None
        refusal = self.ledger.admit(str(call_id), dims, int(estimate), money=bool(money))
        if refusal is None:
            return None
        return {"budget": refusal.budget.name, "spent": refusal.spent, "reserved": refusal.reserved,
                "period_end": refusal.period_end.isoformat() if refusal.period_end is not None else None,
                "utilization": refusal.utilization}


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: LinkServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.worker: WorkerState | None = None
        self.open: dict[str, CallRecord] = {}
        """This worker's calls whose provisional record came and whose final one has not."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._conns.add(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        lines = take_lines(self.buffer, data)
        acked = -1
        for line in lines:
            kind = line[:1]
            if self.worker is None:
                if not self._hello(line):
                    self.abort()
                    return
                continue
            try:
                if kind == b"R":
                    _, seq, payload = line.split(b" ", 2)
                    self._record(decode_record(json.loads(payload)), payload + b"\n")
                    acked = int(seq)
                elif kind == b"A":
                    _, ident, payload = line.split(b" ", 2)
                    answer = self.server.decide(json.loads(payload))
                    assert self.transport is not None
                    self.transport.write(b"D " + ident + b" " + json.dumps(answer).encode() + b"\n")
                elif kind == b"S":
                    self.worker.counters = dict(json.loads(line[2:]))
            except Exception as exc:  # one bad line costs that line (logged), never the link
                log.error("unreadable message from a core worker", worker=self.worker.index,
                          error=f"{type(exc).__name__}: {exc}")
        if acked >= 0 and self.transport is not None:
            self.transport.write(b"K %d\n" % acked)
        if len(self.buffer) > MAX_LINE:  # an unfinished line this long is not ours
            self.abort()

    def _hello(self, line: bytes) -> bool:
        parts = line.split(b" ")
        if len(parts) != 4 or parts[0] != b"H" or not hmac.compare_digest(parts[1], self.server.secret):
            return False
        try:
            index, pid = int(parts[2]), int(parts[3])
        except ValueError:
            return False
        self.worker = WorkerState(index=index, pid=pid)
        self.server.workers[index] = self.worker
        log.info("core worker linked", worker=index, pid=pid)
        return True

    def _record(self, record: CallRecord, line: bytes) -> None:
        if record.incomplete_reason == IN_PROGRESS:
            self.open[record.id] = record
        else:
            self.open.pop(record.id, None)
        assert self.worker is not None
        self.worker.records += 1
        self.server.submit(record, line)  # the journal line as received: the first core does not encode it again

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if self.worker is None:
            return
        if self.server.workers.get(self.worker.index) is self.worker:
            del self.server.workers[self.worker.index]
        for record in self.open.values():
            crashed = dataclasses.replace(record, incomplete_reason=CRASHED, complete=False)
            self.server.submit(crashed, journal.encode(crashed))
        self.server.crashed += len(self.open)
        if self.open:
            log.error("a core worker went away in the middle of calls; they are recorded as core_crash",
                      worker=self.worker.index, calls=len(self.open))
        else:
            log.info("core worker unlinked", worker=self.worker.index)
        self.open.clear()


# --------------------------------------------------------------------------------------------------
# A worker's side
# --------------------------------------------------------------------------------------------------


class LinkClient(asyncio.Protocol):
    """A worker's record sink: `submit` sends a record to the first core and keeps it until acknowledged."""

    def __init__(self, spool: Path, index: int, on_lost: Callable[[str], None]) -> None:
        self.spool = spool
        self.index = index
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.lost: str | None = None
        """Why the link is gone (the first core stopped or died): records now go to our own journal."""
        self._unacked: dict[int, CallRecord] = {}
        self._seq = 0
        self._buffer = bytearray()
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._next_question = 0
        self._journal: Journal | None = None
        self.journaled = 0

    async def connect(self, port: int, secret: bytes, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: self, "127.0.0.1", port), timeout)
        assert self.transport is not None
        self.transport.write(b"H %s %d %d\n" % (secret, self.index, os.getpid()))

    # ---- protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for line in take_lines(self._buffer, data):
            if line.startswith(b"K "):
                upto = int(line[2:])
                for seq in [s for s in self._unacked if s <= upto]:
                    del self._unacked[seq]
            elif line.startswith(b"D "):
                _, ident, payload = line.split(b" ", 2)
                future = self._answers.pop(int(ident), None)
                if future is not None and not future.done():
                    future.set_result(json.loads(payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose("the first core closed the link" if exc is None else f"the link to the first core failed: {exc}")

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self.transport = None
        for future in self._answers.values():
            if not future.done():
                future.set_result(None)
        self._answers.clear()
        self._journal_unacked()
        log.warning("core worker lost its link to the first core; its records go to its own journal",
                    worker=self.index, reason=reason, journaled=self.journaled)
        self.on_lost(reason)

    # ---- records -----------------------------------------------------------------------------------

    def submit(self, record: CallRecord) -> bool:
        if self.lost is not None or self.transport is None:
            return self._keep(record)
        self._seq += 1
        self._unacked[self._seq] = record
        self.transport.write(b"R %d " % self._seq + journal.encode(record))
        if len(self._unacked) > MAX_UNACKED:
            self.transport.abort()
            self._lose(f"the first core acknowledged none of the last {MAX_UNACKED} records")
        return True

    def _keep(self, record: CallRecord) -> bool:
        """Our own journal, for the first core's next start to replay (opened on first use)."""
        if self._journal is None:
            self._journal = Journal(self.spool).open()
        if self._journal.append(record) is None:
            log.error("record could not be journaled; counted as lost", record_id=record.id)
            return False
        self.journaled += 1
        return True

    def _journal_unacked(self) -> None:
        pending, self._unacked = list(self._unacked.values()), {}
        for record in pending:
            self._keep(record)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    async def flush(self, timeout: float) -> bool:
        """Wait (bounded) until the first core has acknowledged everything sent."""
        deadline = time.monotonic() + timeout
        while self._unacked and self.lost is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self._unacked

    def close(self) -> None:
        """At exit: anything still unacknowledged goes to our journal, which is left for the next start."""
        self._journal_unacked()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._journal is not None:
            self._journal.close(remove=False)
            self._journal = None

    # ---- budgets and counters ------------------------------------------------------------------------

    async def ask(self, question: list[Any], timeout: float = ADMIT_TIMEOUT) -> Any:
        """The first core's answer to a budget question, or None (no link, no answer in time)."""
        if self.lost is not None or self.transport is None:
            return None
        self._next_question += 1
        ident = self._next_question
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[ident] = future
        self.transport.write(b"A %d " % ident + json.dumps(question).encode() + b"\n")
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._answers.pop(ident, None)
            return None

    def report(self, counters: Mapping[str, Any]) -> None:
        if self.transport is not None and self.lost is None:
            self.transport.write(b"S " + json.dumps(dict(counters)).encode() + b"\n")


class RemoteLedger:
    """A worker's view of the budgets: the decision is the first core's ledger's, asked over the link."""

    def __init__(self, link: LinkClient, budgets: tuple[Budget, ...]) -> None:
        self.link = link
        self.budgets = budgets

    @property
    def blocking(self) -> bool:
        return any(b.blocks for b in self.budgets)

    def set_budgets(self, budgets: tuple[Budget, ...]) -> None:
        self.budgets = tuple(budgets)

    async def admit(self, call_id: str, dims: Mapping[str, str | None], estimate: int, *,
                    money: bool = True) -> Refusal | None:
        answer = await self.link.ask([call_id, dict(dims), int(estimate), money])
        if not isinstance(answer, dict):
            return None
        budget = next((b for b in self.budgets if b.name == answer.get("budget")), None)
        if budget is None:  # the two configs disagree for a moment (a reload under way): pass
            return None
        end = answer.get("period_end")
        return Refusal(budget, int(answer.get("spent") or 0), int(answer.get("reserved") or 0),
                       datetime.datetime.fromisoformat(end) if end else None, answer.get("utilization"))
