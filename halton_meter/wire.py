"""Generic, incremental readers for response bodies: content decoding, SSE framing, JSON accumulation.

Nothing here knows a provider. Everything is chunk-boundary-agnostic (a body split anywhere, one byte at
a time, gives the same result) and bounded (no input can grow memory past the caps below).

Why this module is long: its four readers (content decoding, SSE framing and byte-exact SSE rewriting,
JSON-array streams, the bounded JSON loader) share the caps and budgets defined here, which tests and
callers tune as `halton_meter.wire.NAME` (a package would split each cap from the code that reads it);
each section below stands alone.
"""

from __future__ import annotations

import gc
import itertools
import json
import re
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_DECODED_CAP = 16 * 1024 * 1024
"""Most decoded bytes we will parse from one body; a decompression bomb stops here."""
MAX_SSE_EVENT_BYTES = 8 * 1024 * 1024
"""Largest single SSE event we keep; a bigger one is skipped and counted, the stream keeps parsing."""


class DecodeLimitExceeded(Exception):
    """The decoded body would pass the cap; parsing stops, the client still gets every byte."""


class UnsupportedEncoding(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# Content-Encoding
# --------------------------------------------------------------------------------------------------


PIECE = 256 * 1024
"""Largest decoded piece handed on at once: a bomb never materialises more than this beyond the cap."""


class _Identity:
    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        if data:
            yield data

    def flush(self, limit: int) -> Iterator[bytes]:
        return iter(())


class _Zlib:
    """gzip (with multiple members) and deflate (zlib-wrapped or raw, detected from the first bytes)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._obj: Any = zlib.decompressobj(31) if gzip else None
        self._pending = b""

    def _start_deflate(self, data: bytes) -> bytes:
        self._pending += data
        if len(self._pending) < 2:
            return b""
        b0, b1 = self._pending[0], self._pending[1]
        zlib_wrapped = (b0 & 0x0F) == 8 and ((b0 << 8) | b1) % 31 == 0
        self._obj = zlib.decompressobj(15 if zlib_wrapped else -15)
        data, self._pending = self._pending, b""
        return data

    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        if self._obj is None:
            data = self._start_deflate(data)
            if self._obj is None:
                return
        produced = 0
        while data:
            piece = self._obj.decompress(data, min(PIECE, limit - produced + 1))
            produced += len(piece)
            if piece:
                yield piece
            if produced > limit:
                raise DecodeLimitExceeded
            data = self._obj.unconsumed_tail
            if self._obj.eof:
                rest = self._obj.unused_data
                if self._gzip and rest.lstrip(b"\0"):
                    self._obj = zlib.decompressobj(31)  # another gzip member follows
                    data = rest.lstrip(b"\0")
                else:
                    break

    def flush(self, limit: int) -> Iterator[bytes]:
        if self._obj is not None and limit >= 0:
            piece = self._obj.flush(min(PIECE, limit + 1))  # the initial buffer size, not a limit
            if piece:
                yield piece


class _Brotli:
    def __init__(self) -> None:
        import brotli

        self._obj = brotli.Decompressor()

    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        produced = 0
        piece = self._obj.process(data, output_buffer_limit=min(PIECE, limit + 1))
        while True:
            produced += len(piece)
            if piece:
                yield piece
            if produced > limit:
                raise DecodeLimitExceeded
            if self._obj.can_accept_more_data() or self._obj.is_finished():
                return
            piece = self._obj.process(b"", output_buffer_limit=min(PIECE, limit - produced + 1))
            if not piece:
                return

    def flush(self, limit: int) -> Iterator[bytes]:
        return iter(())


class _CappedSink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise DecodeLimitExceeded
        self.chunks.append(bytes(data))
        return len(data)


class _Zstd:
    def __init__(self) -> None:
        import zstandard

        self._sink = _CappedSink()
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            self._sink,  # type: ignore[arg-type]  # has the write() it calls; not a whole IO[bytes]
            write_size=64 * 1024, closefd=False
        )

    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        # Fed in slices so one wire chunk never inflates past a few pieces before they are handed on.
        self._sink.limit, self._sink.size = limit, 0
        for start in range(0, len(data), 16 * 1024):
            self._sink.chunks = []
            self._writer.write(data[start : start + 16 * 1024])
            yield from self._sink.chunks
        self._sink.chunks = []

    def flush(self, limit: int) -> Iterator[bytes]:
        return iter(())


def _decoder_for(token: str) -> Any:
    token = token.strip().lower()
    if token in ("", "identity"):
        return _Identity()
    if token in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if token == "deflate":
        return _Zlib(gzip=False)
    if token == "br":
        return _Brotli()
    if token == "zstd":
        return _Zstd()
    raise UnsupportedEncoding(token)


class BodyDecoder:
    """Undo Content-Encoding incrementally, for parsing only, with a hard cap on decoded bytes.

    `pieces(chunk)` yields the decoded bytes of one wire chunk in pieces of at most PIECE bytes, so memory
    stays bounded even for a bomb; `decode(chunk)` joins them. Both raise `DecodeLimitExceeded` once the
    total would pass `cap`, `UnsupportedEncoding` for an unknown coding, and the codec's own error
    (zlib.error, brotli.error, zstandard.ZstdError) for corrupt input. The cap applies to the final output;
    stacked intermediate stages are bounded per call by twice that, so memory stays bounded either way.
    """

    def __init__(self, content_encoding: str | None, cap: int = DEFAULT_DECODED_CAP) -> None:
        tokens = [t for t in (content_encoding or "").split(",") if t.strip()]
        # Encodings are listed in the order they were applied; undo them in reverse.
        self._stages = [_decoder_for(t) for t in reversed(tokens)] or [_Identity()]
        self._cap = cap
        self.decoded_bytes = 0

    @property
    def identity(self) -> bool:
        return all(isinstance(s, _Identity) for s in self._stages)

    def _limit(self, index: int) -> int:
        if index == len(self._stages) - 1:
            return self._cap - self.decoded_bytes
        # An intermediate stage yields the next stage's compressed input, which for incompressible data is
        # a little larger than the final output: bound it per call, generously but still in O(cap).
        return 2 * self._cap + 64 * 1024

    def _through(self, index: int, data: bytes, flush: bool) -> Iterator[bytes]:
        stage = self._stages[index]
        produced = stage.pieces(data, self._limit(index)) if data else iter(())
        if flush:
            produced = itertools.chain(produced, stage.flush(self._limit(index)))
        for piece in produced:
            if index == len(self._stages) - 1:
                if self.decoded_bytes + len(piece) > self._cap:
                    raise DecodeLimitExceeded
                self.decoded_bytes += len(piece)
                yield piece
            else:
                yield from self._through(index + 1, piece, False)
        if flush and index < len(self._stages) - 1:
            yield from self._through(index + 1, b"", True)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data, False)

    def flush_pieces(self) -> Iterator[bytes]:
        return self._through(0, b"", True)

    def decode(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))

    def flush(self) -> bytes:
        return b"".join(self.flush_pieces())


# --------------------------------------------------------------------------------------------------
# Server-sent events
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    event: str
    """The `event:` field, or "message" when absent (WHATWG default)."""
    data: str


_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Incremental SSE framing per the WHATWG rules.

    Lines end with CRLF, LF or CR; a CR ending one chunk swallows an LF starting the next. Only those bytes
    split lines, so U+2028/U+2029/NEL inside JSON strings stay intact, and multi-byte UTF-8 split across
    chunks is reassembled before decoding. One leading BOM is dropped. Lines starting with `:` are comments.
    Several `data:` lines join with `\\n`.

    Memory is bounded by `max_event_bytes`: an event whose data would pass it is skipped and counted in
    `oversize` (the stream keeps parsing), and any other line longer than it is dropped. Both decisions
    depend only on the bytes, never on how they were chunked.
    """

    def __init__(self, max_event_bytes: int = MAX_SSE_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._bom_pending: bytes | None = b""
        self._after_cr = False
        self._discarding = False
        self._event = ""
        self._data: list[bytes] = []
        self._data_size = 0
        self._skipping = False
        self._max = max_event_bytes
        self.oversize = 0
        self.events_seen = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume one chunk; return the events it completed (possibly none)."""
        events: list[SSEEvent] = []
        if self._bom_pending is not None:
            pending = self._bom_pending + chunk
            if len(pending) < len(_BOM) and _BOM.startswith(pending):
                self._bom_pending = pending
                return events
            self._bom_pending = None
            chunk = pending[len(_BOM):] if pending.startswith(_BOM) else pending
        if not chunk:
            return events
        pos, size = 0, len(chunk)
        if self._after_cr:
            self._after_cr = False
            if chunk[0] == 0x0A:
                pos = 1
        # The next CR and LF, each found at memchr speed and looked for again only once passed (a regex
        # character class scans about 40 times slower, which showed for multi-megabyte events).
        next_cr, next_lf = chunk.find(b"\r", pos), chunk.find(b"\n", pos)
        while pos < size:
            if 0 <= next_cr < pos:
                next_cr = chunk.find(b"\r", pos)
            if 0 <= next_lf < pos:
                next_lf = chunk.find(b"\n", pos)
            if next_cr < 0 and next_lf < 0:
                if not self._discarding:
                    self._buf += chunk[pos:]
                    self._bound_partial_line()
                break
            end = next_lf if next_cr < 0 or 0 <= next_lf < next_cr else next_cr
            if self._discarding:
                self._discarding = False  # the over-long line ends here
            else:
                if self._buf:
                    self._buf += chunk[pos:end]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = chunk[pos:end]
                event = self._line(line)
                if event is not None:
                    events.append(event)
            if chunk[end] == 0x0D:
                if end + 1 == size:
                    self._after_cr = True
                    pos = size
                else:
                    pos = end + 2 if chunk[end + 1] == 0x0A else end + 1
            else:
                pos = end + 1
        return events

    def _bound_partial_line(self) -> None:
        """An unfinished line may not grow past the cap; decide now what the finished line would mean."""
        buf = self._buf
        if len(buf) <= self._max:
            return
        if buf.startswith(b"data:"):
            value_len = len(buf) - (6 if buf.startswith(b"data: ") else 5)
            if self._data_size + value_len + 1 <= self._max:
                return  # still within the event cap; the buffer is at most the cap plus the field name
            self._skip_current()
        self._buf.clear()
        self._discarding = True

    def _skip_current(self) -> None:
        if not self._skipping:
            self.oversize += 1
        self._skipping = True
        self._data, self._data_size = [], 0

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            if self._skipping:
                return None
            if self._data_size + len(value) + 1 > self._max:
                self._skip_current()
                return None
            self._data_size += len(value) + 1
            self._data.append(value)
        elif name == b"event" and len(line) <= self._max:
            self._event = value.decode("utf-8", "replace")
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event, skipping = self._data, self._event, self._skipping
        self._data, self._data_size, self._event, self._skipping = [], 0, "", False
        if skipping or not data:
            return None
        self.events_seen += 1
        return SSEEvent(event or "message", b"\n".join(data).decode("utf-8", "replace"))

    def close(self) -> list[SSEEvent]:
        """End of body: a final line without its terminator still counts, then the pending event."""
        events: list[SSEEvent] = []
        if self._bom_pending:
            pending = self._bom_pending
            self._bom_pending = None
            events.extend(self.feed(pending))
        if self._buf and not self._discarding:
            line = bytes(self._buf)
            self._buf.clear()
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events


_LINE_BREAK = re.compile(rb"[\r\n]")
_LINES = re.compile(rb"([^\r\n]*)(\r\n|\r|\n|\Z)")


def sse_lines(event: bytes) -> list[tuple[bytes, bytes]]:
    """The lines of one held SSE event as (content, terminator) pairs; joined back they are the event."""
    return [(m.group(1), m.group(2)) for m in _LINES.finditer(event) if m.group(0)]


class SSEEventRewriter:
    """Byte-exact rewriting of an SSE stream, one whole event at a time (a `StreamRewriter`).

    Subclasses implement `rewrite_event(event) -> bytes`: it receives the raw bytes of one event (its
    lines with their terminators, and the blank line that ended it, when there was one) and returns what
    the client receives instead: the same bytes, other bytes, or nothing to drop the event. Anything not
    inside an event passes byte for byte.

    Bytes are held only until the current event is complete (its blank line); a complete event is never
    held. Lines end with LF, CRLF or CR, and a CRLF may be split across chunks (the LF of a dropped
    event's CRLF is dropped with it). An event larger than `max_held` is forwarded unchanged as it
    arrives, so memory stays bounded. `flush` hands a last event cut short of its blank line to
    `rewrite_event` too.
    """

    def __init__(self, max_held: int = MAX_SSE_EVENT_BYTES) -> None:
        self._held = bytearray()
        self._max_held = max_held
        self._passing = False
        """The current event outgrew `max_held`: its bytes go straight through until it ends."""
        self._line_open = False
        """The current line already has bytes (so a line break next does not make a blank line)."""
        self._after_cr: str | None = None
        """The last byte seen was a CR ending a line; an LF next belongs to that line's terminator.
        `line`: a line inside the current event; `kept` / `dropped`: the blank line that ended an event."""

    def rewrite_event(self, event: bytes) -> bytes:
        """What the client receives for one whole event (the default: the event unchanged)."""
        return event

    def rewrite(self, data: bytes) -> bytes:
        out = bytearray()
        pos, size = 0, len(data)
        if size and self._after_cr is not None:
            state, self._after_cr = self._after_cr, None
            if data[0] == 0x0A:
                pos = 1
                if state == "kept" or (state == "line" and self._passing):
                    out.append(0x0A)
                elif state == "line":
                    self._held.append(0x0A)
        while pos < size:
            match = _LINE_BREAK.search(data, pos)
            end = size if match is None else match.start()
            blank = match is not None and end == pos and not self._line_open
            trailing_cr = False
            if match is None:
                nxt = size
            elif data[end] == 0x0D:
                if end + 1 == size:
                    nxt, trailing_cr = size, True
                else:
                    nxt = end + 2 if data[end + 1] == 0x0A else end + 1
            else:
                nxt = end + 1
            if self._passing:
                out += data[pos:nxt]
            else:
                self._held += data[pos:nxt]
                if len(self._held) > self._max_held:
                    out += self._held
                    self._held.clear()
                    self._passing = True
            self._line_open = match is None and (self._line_open or nxt > pos)
            pos = nxt
            if match is None:
                break
            if blank:
                if self._passing:
                    self._passing = False
                    kept = True
                else:
                    event = bytes(self._held)
                    self._held.clear()
                    rewritten = self.rewrite_event(event)
                    out += rewritten
                    kept = bool(rewritten)
                if trailing_cr:
                    self._after_cr = "kept" if kept else "dropped"
            elif trailing_cr:
                self._after_cr = "line"
        return bytes(out)

    def flush(self) -> bytes:
        # An event without its blank line is never dispatched by a client; rewrite it all the same so that
        # what the rewriter removes cannot leak through when a stream is cut short of its terminator.
        event = bytes(self._held)
        self._held.clear()
        self._line_open = self._passing = False
        return self.rewrite_event(event) if event else b""


# --------------------------------------------------------------------------------------------------
# JSON-array streams (Gemini's streamGenerateContent without alt=sse)
# --------------------------------------------------------------------------------------------------

_STRUCTURAL = re.compile(rb'[\[\]{}"]')
_ELEMENT_START = re.compile(rb"[\[{\]]")
_IN_STRING = re.compile(rb'["\\]')


class JSONArrayStream:
    """Yields each top-level element of a JSON array as it completes: `[{…},\r\n{…}]` written incrementally.

    A scanner tracks nesting and string state across chunks (so a split anywhere, even inside a string or
    an escape, gives the same elements). Each element is parsed within the JSON budget (`load_json`). An
    element larger than `max_element_bytes`, or over the budget, is skipped and counted in `oversize`;
    with `partial`, an over-budget object yields what a targeted read recovers (a PartialDocument, counted
    in `partial_reads`; see `load_json` for `descend`) instead. `closed` turns true at the array's closing
    bracket.
    """

    def __init__(self, max_element_bytes: int = MAX_SSE_EVENT_BYTES, partial: bool = False,
                 descend: Collection[str] = ()) -> None:
        self._max = max_element_bytes
        self._partial = partial
        self._descend = descend
        self.partial_reads = 0
        self._started = False
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._element = bytearray()
        self._skipping = False
        self.closed = False
        self.oversize = 0
        self.invalid = 0

    def feed(self, chunk: bytes) -> list[Any]:
        out: list[Any] = []
        pos, size = 0, len(chunk)
        while pos < size and not self.closed:
            if not self._started:
                bracket = chunk.find(b"[", pos)
                if bracket < 0:
                    return out
                self._started, pos = True, bracket + 1
                continue
            if self._depth == 0:
                # Between elements: skip commas and whitespace; `]` ends the array; `{` or `[` opens one.
                match = _ELEMENT_START.search(chunk, pos)
                if match is None:
                    return out
                if match.group() == b"]":
                    self.closed = True
                    return out
                self._depth, pos = 1, match.end()
                self._element = bytearray(match.group())
                self._skipping = False
                continue
            start = pos
            while pos < size and self._depth:
                if self._in_string:
                    if self._escape:
                        self._escape, pos = False, pos + 1
                        continue
                    match = _IN_STRING.search(chunk, pos)
                    if match is None:
                        pos = size
                        break
                    pos = match.end()
                    if match.group() == b"\\":
                        self._escape = True
                    else:
                        self._in_string = False
                    continue
                match = _STRUCTURAL.search(chunk, pos)
                if match is None:
                    pos = size
                    break
                pos = match.end()
                char = match.group()
                if char == b'"':
                    self._in_string = True
                elif char in (b"{", b"["):
                    self._depth += 1
                else:
                    self._depth -= 1
            if not self._skipping:
                self._element += chunk[start:pos]
                if len(self._element) > self._max:
                    self._skipping = True
                    self.oversize += 1
                    self._element = bytearray()
            if self._depth == 0:
                if not self._skipping:
                    self._parse(bytes(self._element), out)
                self._element = bytearray()
        return out

    def _parse(self, element: bytes, out: list[Any]) -> None:
        try:
            value = load_json(element, partial=self._partial, descend=self._descend)
        except OverBudget:
            self.oversize += 1
            return
        except ValueError:
            self.invalid += 1
            return
        if isinstance(value, PartialDocument):
            self.partial_reads += 1
        out.append(value)


# --------------------------------------------------------------------------------------------------
# Bounded JSON: every parse of untrusted bytes goes through here
# --------------------------------------------------------------------------------------------------

MAX_JSON_ELEMENTS = 50_000
"""Most JSON elements one parse may materialise. Estimated before parsing, at C speed, as the count of `,`,
`{` and `[` (every value but a container's first follows a comma, every container opens with a bracket;
commas inside strings count too, so the estimate only errs high). Within it, the slowest shapes measured
(objects of short keys, logprob-like entries) parse in about 40 ms and 10 MiB on the 2-core reference box;
see docs/memory.md."""
MAX_JSON_INT_DIGITS = 40
"""Longest integer literal parsed: CPython converts decimal digits in quadratic time, so 16 MiB of
4,300-digit integers (few elements) would take half a second. Longer ones make the document over budget."""
MAX_SCAN_TOKENS = 8192
"""How many structural tokens (brackets, commas, strings) one direction of a targeted read may visit."""
REQUEST_SCAN_TOKENS = 32768
"""The same for a request body, which the targeted read must cover end to end to prove a key is absent."""
PARTIAL_WINDOW = 256 * 1024
"""Bytes kept from each end of a body too big to keep whole, and read backwards from the end of a document."""
_READ_DEPTH = 2
"""Object levels a targeted read records members of: the top level, and one declared member (`descend`)."""


class OverBudget(ValueError):
    """A JSON document that would cost more than the budget to materialise; it was not materialised.

    A ValueError, so code that treats unparsable JSON as "not JSON" treats this the same way. `reason` is
    `elements` (the estimate), `depth` (nesting past the decoder's guard) or `number` (an integer literal
    longer than MAX_JSON_INT_DIGITS)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"JSON over budget ({reason})")
        self.reason = reason


class PartialDocument(dict[str, Any]):
    """The complete members of an over-budget JSON object that a targeted read recovered from its start and
    its end (the end wins for a key read at both, as in `json.loads`); every value in it is exactly what
    `json.loads` gives, except a member declared for descent, itself a PartialDocument. `unread` names the
    member the read stopped in, when known."""

    def __init__(self, members: dict[str, Any] | None = None, unread: list[str] | None = None) -> None:
        super().__init__(members or {})
        self.unread = unread or []


def estimate_elements(data: str | bytes | bytearray) -> int:
    """C-speed counts of `,` `{` `[`: the values (containers and scalars) `json.loads(data)` would build are
    at most this plus one (the root), keys aside; a nested container counts twice, string contents add."""
    if isinstance(data, str):
        return data.count(",") + data.count("{") + data.count("[")
    return data.count(b",") + data.count(b"{") + data.count(b"[")


_ESTIMATE_STEP = 1 << 20


def over_estimate(data: str | bytes | bytearray, max_elements: int | None = None) -> bool:
    """`estimate_elements(data) > max_elements` (default MAX_JSON_ELEMENTS), counting a mebibyte at a time
    so that a document far over the budget is told after its first slice, not after all of it."""
    if max_elements is None:
        max_elements = MAX_JSON_ELEMENTS
    if len(data) <= max_elements:
        return False  # every counted character is one character
    total = 0
    for start in range(0, len(data), _ESTIMATE_STEP):
        end = start + _ESTIMATE_STEP
        if isinstance(data, str):
            total += data.count(",", start, end) + data.count("{", start, end) + data.count("[", start, end)
        else:
            total += data.count(b",", start, end) + data.count(b"{", start, end) + data.count(b"[", start, end)
        if total > max_elements:
            return True
    return False


def _parse_int(text: str) -> int:
    if len(text) > MAX_JSON_INT_DIGITS and len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise OverBudget("number")
    return int(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def _materialise(data: str | bytes | bytearray) -> Any:
    """`json.loads(data)` with integer lengths bounded and nesting past the decoder's recursion guard
    reported as OverBudget. The collector is paused meanwhile: a parse creates no cycles, and a full
    collection triggered by its allocations would walk the whole heap."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise ValueError("Unexpected UTF-8 BOM")
        text = data
    else:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise OverBudget("depth") from None
    finally:
        if collecting:
            gc.enable()


def bounded_loads(data: str | bytes | bytearray, max_elements: int | None = None) -> Any:
    """`json.loads` within the budget: raises OverBudget (before parsing, when the estimate is over) instead
    of materialising a document that would cost more, and ValueError for what is not JSON."""
    if over_estimate(data, max_elements):
        raise OverBudget("elements")
    return _materialise(data)


def load_json(data: str | bytes | bytearray, *, partial: bool = False, descend: Collection[str] = (),
              max_elements: int | None = None, max_tokens: int | None = None) -> Any:
    """Parse within the budget; when the estimate is over, walk the document's structure instead (bounded
    by `max_tokens`, default MAX_SCAN_TOKENS): if the walk reaches its end, the estimate was inflated by
    commas inside strings and the document is parsed whole after all. Otherwise, with `partial`, the
    complete members of a top-level object readable from its two ends come back as a PartialDocument; a
    member named in `descend` that is too big is read the same way one level down (e.g. a Responses
    event's `response`, whose `usage` follows its big `output`). Raises OverBudget when nothing can be read
    within the budget, ValueError for what is not JSON."""
    try:
        return bounded_loads(data, max_elements)
    except OverBudget as over:
        reason = over.reason
    tokens = MAX_SCAN_TOKENS if max_tokens is None else max_tokens
    value = _targeted_read(data, partial, tokens, descend=descend)
    if value is None:
        raise OverBudget(reason)
    return value


def loads_or_none(text: str | bytes | bytearray) -> Any:
    """The whole document within the budget (see `load_json`), or None: not JSON, or over budget."""
    try:
        return load_json(text)
    except ValueError:
        return None


# ---- targeted reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Syntax:
    token: re.Pattern[Any]
    quote: Any
    """The quote as an element of the sequence (int for bytes, a one-character str for str)."""
    quote_lit: Any
    backslash: Any
    key: re.Pattern[Any]
    non_ws: re.Pattern[Any]
    chars: dict[str, Any]


_BYTES = _Syntax(re.compile(rb'["{}\[\],]'), 0x22, b'"', b"\\", re.compile(rb'\s*("(?:[^"\\]|\\.)*")\s*:'),
                 re.compile(rb"\S"), {c: ord(c) for c in "{}[],"})
_STR = _Syntax(re.compile(r'["{}\[\],]'), '"', '"', "\\", re.compile(r'\s*("(?:[^"\\]|\\.)*")\s*:'),
               re.compile(r"\S"), {c: c for c in "{}[],"})
_KEY_LOOKAHEAD = 4096


def _backslashes(seq: Any, j: int, lo: int, syntax: _Syntax, after: bool) -> int:
    """How many backslashes run right before index `j` (down to `lo`), or right after it with `after`:
    at C speed, in slices that grow geometrically."""
    total, step = 0, 64
    while True:
        if after:
            seg = seq[j + 1 + total : j + 1 + total + step]
            run = len(seg) - len(seg.lstrip(syntax.backslash))
        else:
            start = max(lo, j - total - step)
            seg = seq[start : j - total]
            run = len(seg) - len(seg.rstrip(syntax.backslash))
        total += run
        if run < len(seg) or not seg or (not after and start == lo):
            return total
        step *= 4


@dataclass(slots=True)
class _Frame:
    opener: Any
    start: int
    marks: list[int] | None
    """For an object shallow enough to be read: the index of its opening bracket, then of each comma."""


@dataclass(slots=True)
class _Walk:
    path: list[_Frame]
    """The containers open where the walk stopped, outermost first."""
    closed_at: int | None = None
    """Index of the root's closing bracket, when the walk got that far."""


def _walk(seq: Any, start: int, syntax: _Syntax, reverse: bool, max_tokens: int) -> _Walk:
    """Follow the bracket structure from the root's opening bracket at `start`, skipping strings at C speed,
    until the root closes, the text ends or `max_tokens` tokens were visited. On reversed text (`reverse`)
    closing brackets open, and a quote is escaped by the backslashes that follow it."""
    chars = syntax.chars
    obj_open = chars["}"] if reverse else chars["{"]
    opens = (chars["}"], chars["]"]) if reverse else (chars["{"], chars["["])
    comma, quote, search = chars[","], syntax.quote, syntax.token.search
    path = [_Frame(seq[start], start, [start] if seq[start] == obj_open else None)]
    pos, tokens = start + 1, 0
    while tokens < max_tokens:
        match = search(seq, pos)
        if match is None:
            return _Walk(path)
        i = match.start()
        char = seq[i]
        tokens += 1
        if char == quote:
            j = i + 1
            while True:  # the string's closing quote: the next one with an even run of backslashes before it
                j = seq.find(syntax.quote_lit, j)
                tokens += 1
                if j < 0 or tokens >= max_tokens:
                    return _Walk(path)
                if _backslashes(seq, j, i + 1, syntax, after=reverse) % 2 == 0:
                    break
                j += 1
            pos = j + 1
            continue
        if char in opens:
            shallow = char == obj_open and len(path) < _READ_DEPTH
            path.append(_Frame(char, i, [i] if shallow else None))
        elif char == comma:
            if path[-1].marks is not None:
                path[-1].marks.append(i)
        else:
            path.pop()
            if not path:
                return _Walk([], i)
        pos = i + 1
    return _Walk(path)


@dataclass(slots=True)
class _Level:
    members: dict[str, Any]
    key: str | None
    """The member the walk stopped in, when its name could be read (reading forwards only)."""
    into_object: bool
    """That member's value is an object the walk went into (the next level)."""


def _members(text: Any, lo: int, hi: int) -> dict[str, Any]:
    """Parse the complete members between `lo` and `hi` (an object's inside without its brackets). The walk
    visited all of their structure, so their elements are bounded by its token budget."""
    if hi <= lo:
        return {}
    brace = ("{", "}") if isinstance(text, str) else (b"{", b"}")
    try:
        value = _materialise(brace[0] + text[lo:hi] + brace[1])
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _levels(seq: Any, walk: _Walk, syntax: _Syntax, original: Any = None) -> list[_Level]:
    """What a stopped walk read, level by level along its path. With `original`, `seq` is that text reversed
    (a backward walk): members are parsed from the original text, and the member stopped in has no name."""
    levels: list[_Level] = []
    size = len(seq)
    for depth, frame in enumerate(walk.path):
        if frame.marks is None:
            break
        first, last = frame.marks[0], frame.marks[-1]
        key = None
        if original is not None:  # reversed indices [a, b) are the original's [size - b, size - a)
            members = _members(original, size - last, size - first - 1)
        else:
            members = _members(seq, first + 1, last)
            match = syntax.key.match(seq, last + 1, min(size, last + 1 + _KEY_LOOKAHEAD))
            if match is not None:
                name = loads_or_none(match.group(1))
                key = name if isinstance(name, str) else None
        child = walk.path[depth + 1] if depth + 1 < len(walk.path) else None
        levels.append(_Level(members, key, child is not None and child.marks is not None))
    return levels


def _first_non_ws(seq: Any, syntax: _Syntax) -> int:
    match = syntax.non_ws.search(seq)
    return -1 if match is None else match.start()


def _targeted_read(data: str | bytes | bytearray, partial: bool, max_tokens: int,
                   tail: str | bytes | None = None, descend: Collection[str] = ()) -> Any:
    """See `load_json`. `data` is the whole document, or with `tail` its first bytes and `tail` its last."""
    seq: Any = bytes(data) if isinstance(data, bytearray) else data
    syntax = _STR if isinstance(seq, str) else _BYTES
    start = _first_non_ws(seq, syntax)
    if start < 0:
        return None
    if seq[start] not in (syntax.chars["{"], syntax.chars["["]):
        return _materialise(seq) if tail is None else None  # a scalar: its cost is its length
    forward = _walk(seq, start, syntax, reverse=False, max_tokens=max_tokens)
    if forward.closed_at is not None:
        # The whole structure fits the token budget: the estimate counted commas inside strings.
        if tail is not None or syntax.non_ws.search(seq, forward.closed_at + 1) is not None:
            raise ValueError("extra data after the JSON document")
        return _materialise(seq[start : forward.closed_at + 1])
    if not partial or seq[start] != syntax.chars["{"]:
        return None
    end_text = seq[-PARTIAL_WINDOW:] if tail is None else tail
    reversed_text = end_text[::-1]
    last = _first_non_ws(reversed_text, syntax)
    backward_levels: list[_Level] = []
    if last >= 0 and reversed_text[last] == syntax.chars["}"]:
        backward = _walk(reversed_text, last, syntax, reverse=True, max_tokens=max_tokens)
        if backward.closed_at is None:
            backward_levels = _levels(reversed_text, backward, syntax, original=end_text)
    return _merge(_levels(seq, forward, syntax), backward_levels, descend)


def _merge(forward: list[_Level], backward: list[_Level], descend: Collection[str]) -> PartialDocument | None:
    """The complete members read from the start and from the end; None when there are none.

    The member a walk stopped in is not read: it may be big, or merely where the walk's budget ran out. The
    one exception is a member named in `descend` that both walks stopped in, as an object: it is taken to
    be the same member (the document's one member too big to read), which is how the backward walk's
    members one level down get their name, and it becomes a PartialDocument of what both walks read in it.
    """
    ahead = forward[0] if forward else None
    behind = backward[0] if backward else None
    document = PartialDocument()
    if ahead is not None:
        document.update(ahead.members)
    if behind is not None:
        document.update(behind.members)  # later in the document: wins, as with json.loads
    key = ahead.key if ahead is not None else None
    if key is not None and key not in document:
        if (key in descend and ahead is not None and ahead.into_object and len(forward) > 1
                and behind is not None and behind.into_object and len(backward) > 1):
            inner = _merge(forward[1:2], backward[1:2], ())
            if inner is not None:
                document[key] = inner
            else:
                document.unread.append(key[:64])
        else:
            document.unread.append(key[:64])
    if not document:
        return None
    return document


# --------------------------------------------------------------------------------------------------
# JSON bodies
# --------------------------------------------------------------------------------------------------


class JSONAccumulator:
    """Collects a JSON body and parses it once at the end, within the JSON budget.

    The body is kept whole while it is within `cap` bytes and its element estimate within `max_elements`.
    Past either, it is dropped (`oversize`), or with `partial=True` only its first and last PARTIAL_WINDOW
    bytes are kept, from which `parse()` reads what a targeted read can (a PartialDocument); `oversize`
    then turns true only if nothing could be read. Memory: at most `cap` bytes, or 3 windows."""

    def __init__(self, cap: int = DEFAULT_DECODED_CAP, *, partial: bool = False,
                 descend: Collection[str] = (), max_elements: int | None = None) -> None:
        self._buf = bytearray()
        self._cap = cap
        self._partial = partial
        self._descend = descend
        self._max = MAX_JSON_ELEMENTS if max_elements is None else max_elements
        self._estimate = 0
        self._head: bytearray | None = None
        self._tail = bytearray()
        self._gap = False
        self.oversize = False

    def feed(self, data: bytes) -> None:
        if self.oversize or not data:
            return
        if self._head is not None:
            self._keep_ends(data)
            return
        self._estimate += estimate_elements(data)
        if len(self._buf) + len(data) <= self._cap and self._estimate <= self._max:
            self._buf += data
            return
        buffered, self._buf = self._buf, bytearray()
        if not self._partial:
            self.oversize = True
            return
        self._head = bytearray()
        self._keep_ends(bytes(buffered))
        del buffered
        self._keep_ends(data)

    def _keep_ends(self, data: bytes) -> None:
        head, window = self._head, PARTIAL_WINDOW
        assert head is not None
        view = memoryview(data)
        if len(head) < window:
            room = window - len(head)
            head += view[:room]
            view = view[room:]
        if len(view) >= window:  # the tail is all in this piece
            if len(self._tail) + len(view) > window:
                self._gap = True
            self._tail = bytearray(view[-window:])
        elif view:
            self._tail += view
            if len(self._tail) > 2 * window:  # trimmed in batches; parse() uses exactly one window
                del self._tail[: len(self._tail) - window]
                self._gap = True

    def parse(self) -> Any:
        """The document, a PartialDocument (over budget, `partial=True`), or None: empty, not JSON, or
        nothing readable within the budget (then `oversize` is true). Leading blank lines (DeepSeek's
        keep-alives before a delayed body) are skipped."""
        if self.oversize:
            return None
        if self._head is not None:
            return self._parse_ends()
        if _BYTES.non_ws.search(self._buf) is None:
            return None
        try:
            text = self._buf.decode(json.detect_encoding(self._buf), "surrogatepass")
        except UnicodeDecodeError:
            return None
        self._buf = bytearray()  # the decoded copy is all the parse needs: free the bytes first (parse once)
        try:
            return _materialise(text)
        except OverBudget:
            pass
        except ValueError:
            return None
        return self._read(text.encode("utf-8", "surrogatepass"), None)

    def _parse_ends(self) -> Any:
        head, self._head = bytes(self._head or b""), bytearray()
        tail, self._tail = bytes(self._tail), bytearray()
        if self._gap:  # the same two windows however the body was chunked
            return self._read(head, tail[-PARTIAL_WINDOW:])
        return self._read(head + tail, None)

    def _read(self, data: bytes, tail: bytes | None) -> Any:
        value = None
        if self._partial:
            try:
                value = _targeted_read(data, True, MAX_SCAN_TOKENS, tail, self._descend)
            except ValueError:
                value = None
        if value is None:
            self.oversize = True
        return value
