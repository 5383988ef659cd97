"""Pass-through tunnels to metered hosts: what they carried, and when they may be closed.

While the core is down, the edge tunnels calls to metered hosts straight to the provider (traffic never
stops because the meter is down). Such a tunnel is opaque TLS, and SDKs keep connections alive, so one
tunnel can carry any number of calls — all unmetered for as long as it lives. Two things follow:

* **An honest gap.** The tunnel is recorded as one *connection* with its bytes, duration and client, plus
  an *estimate* of the calls inside it, read from the TLS record pattern (`TlsRequestCounter`).
* **A short life once the core is back.** The edge closes such a tunnel at its first idle moment after the
  core answers again (and after `max_seconds` in any case), so the client's next request opens a new
  connection, which goes through the core and is metered. "Idle" is chosen to never cut a call in flight
  (`PassThrough.closable`): quiet in both directions, not waiting for an answer, and a longer quiet when a
  streamed answer may only be pausing.

How requests are told apart from other records, by TLS record (5-byte header: type, version, length):
application-data records (type 23) a client sends in a burst — no server record in between — that holds
at least one record longer than `REQUEST_RECORD_MIN` count as one request. That skips the TLS 1.3 client
Finished (about 50 bytes, also type 23), HTTP/2 WINDOW_UPDATE, PING and SETTINGS acknowledgements, and
TCP-level noise; it counts an HTTP/1.1 request (or a burst of HTTP/2 requests sent together) once.

TLS 1.3 session tickets are the one kind of server record that is neither handshake nor answer: a server
sends one or a few, all the same size, right after the client's Finished — often between the first
request's head and its body. Records that arrive within a couple of handshake round trips of the Finished,
all of one length, at most `TICKETS_MAX` of them, are taken for tickets: they neither end a request burst
nor count as its answer.

When in doubt the tunnel is taken to be waiting for an answer, and is not closed: the price of a wrong
guess is one more call through the tunnel (counted in its estimate), never a cut call. The count is an
estimate and is labelled so everywhere it is shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

APPLICATION_DATA = 23
REQUEST_RECORD_MIN = 100
"""Smallest client record taken for a request: a TLS 1.3 Finished is about 50 bytes, an HTTP request never
fits in 100."""
TICKETS_MAX = 4
TICKET_WINDOW_MIN, TICKET_WINDOW_MAX = 0.05, 2.0
"""Tickets arrive within two handshake round trips (+50 ms) of the client's Finished, clamped to these."""
END_MARK_MAX = 40
"""A server record this small after a streamed answer is its end mark: the chunked terminator `0\\r\\n\\r\\n`
or an empty HTTP/2 DATA frame with END_STREAM (22–29 bytes once encrypted)."""
STREAM_RECORDS = 4
"""An answer of more records than this is a stream (SSE: an event per record) that may be pausing."""
QUIET_SECONDS = 2.0
STREAM_QUIET_SECONDS = 60.0
"""A stream whose last record was not an end mark may be a model thinking: close only after this long."""
MAX_SECONDS = 600.0


class _RecordScanner:
    """Walks TLS record headers across reads: calls `on_record(type, length)` once per record header."""

    __slots__ = ("_need", "_header", "valid")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current record still to skip
        self._header = b""
        self.valid = True

    def feed(self, data: bytes, on_record: Callable[[int, int], None]) -> None:
        pos, size = 0, len(data)
        while pos < size and self.valid:
            if self._need:
                step = min(self._need, size - pos)
                self._need -= step
                pos += step
                continue
            take = min(5 - len(self._header), size - pos)
            self._header += data[pos:pos + take]
            pos += take
            if len(self._header) < 5:
                return
            kind, major, length = self._header[0], self._header[1], int.from_bytes(self._header[3:5], "big")
            self._header = b""
            if kind not in (20, 21, 22, 23) or major != 3 or length > 18432:
                self.valid = False  # not TLS (plain bytes through a CONNECT): no estimate
                return
            self._need = length
            on_record(kind, length)


@dataclass(eq=False)
class PassThrough:
    """One pass-through tunnel to a metered host, observed from both pipes."""

    host: str
    opened: float = field(default_factory=lambda: time.monotonic())
    last_up: float = 0.0
    last_down: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    requests: int = 0
    awaiting: bool = False
    """A request went up and no answer has started coming back."""
    _in_request: bool = False
    _hello_at: float | None = None
    _round_trip: float | None = None
    _finished_at: float | None = None
    _ticket_length: int | None = None
    _tickets: int = 0
    _records_since_request: int = 0
    _last_down_record: int = 0
    _up: _RecordScanner = field(default_factory=_RecordScanner)
    _down: _RecordScanner = field(default_factory=_RecordScanner)

    def __post_init__(self) -> None:
        self.last_up = self.last_down = self.opened

    # ---- fed by the pipes --------------------------------------------------------------------------

    def up(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self.last_up = time.monotonic()
        self._up.feed(data, self._up_record)

    def down(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.last_down = time.monotonic()
        self._down.feed(data, self._down_record)

    def _up_record(self, kind: int, length: int) -> None:
        if kind == 22 and self._hello_at is None:
            self._hello_at = self.last_up
        if kind != APPLICATION_DATA:
            return
        if length < REQUEST_RECORD_MIN:
            if self.requests == 0 and self._finished_at is None:
                self._finished_at = self.last_up  # TLS 1.3: the client's Finished
            return
        if self._in_request:
            return
        self._in_request = True
        self.requests += 1
        self.awaiting = True
        self._records_since_request = 0

    def _down_record(self, kind: int, length: int) -> None:
        if kind == 22 and self._round_trip is None and self._hello_at is not None:
            self._round_trip = self.last_down - self._hello_at
        if kind != APPLICATION_DATA or self._ticket(length):
            return
        self._in_request = False
        self._last_down_record = length
        if length < REQUEST_RECORD_MIN or self.requests == 0:
            return  # HTTP/2 control frames and end marks; the handshake's encrypted records
        self._records_since_request += 1
        self.awaiting = False

    def _ticket(self, length: int) -> bool:
        """Whether this server record is (taken for) a TLS 1.3 session ticket."""
        if self._finished_at is None or self._tickets >= TICKETS_MAX or self._records_since_request:
            return False
        window = min(TICKET_WINDOW_MAX, max(TICKET_WINDOW_MIN, 2 * (self._round_trip or 0.0) + 0.05))
        if self.last_down - self._finished_at > window:
            return False
        if self._ticket_length is not None and length != self._ticket_length:
            return False
        self._ticket_length = length
        self._tickets += 1
        return True

    # ---- judged by the edge ------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self._up.valid and self._down.valid

    @property
    def calls_estimated(self) -> int | None:
        return self.requests if self.tls else None

    def closable(self, now: float, quiet: float = QUIET_SECONDS, stream_quiet: float = STREAM_QUIET_SECONDS) -> bool:
        """Whether closing now cuts nothing in flight: no bytes either way for `quiet` seconds, no request
        waiting for its answer, and — after a streamed answer that ended without an end mark — a longer
        quiet, because the stream may only be pausing while the model thinks."""
        idle = now - max(self.last_up, self.last_down)
        if idle < quiet:
            return False
        if not self.tls:
            return idle >= stream_quiet
        if self.awaiting:
            return False
        streamed = self._records_since_request > STREAM_RECORDS
        if streamed and self._last_down_record > END_MARK_MAX:
            return idle >= stream_quiet
        return True
