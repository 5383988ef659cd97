"""Generic, incremental readers for response bodies: content decoding, SSE framing, JSON accumulation.

Nothing here knows a provider. Everything is chunk-boundary-agnostic (a body split anywhere, one byte at
a time, gives the same result) and bounded (no input can grow memory past the caps below).
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Iterator
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
            piece = self._obj.flush(limit + 1)
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
            self._sink, write_size=64 * 1024, closefd=False
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


_LINE_BREAK = re.compile(rb"[\r\n]")
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
        while pos < size:
            match = _LINE_BREAK.search(chunk, pos)
            if match is None:
                if not self._discarding:
                    self._buf += chunk[pos:]
                    self._bound_partial_line()
                break
            end = match.start()
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
            self._bom_pending, pending = None, self._bom_pending
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


# --------------------------------------------------------------------------------------------------
# JSON-array streams (Gemini's streamGenerateContent without alt=sse)
# --------------------------------------------------------------------------------------------------

_STRUCTURAL = re.compile(rb'[\[\]{}"]')
_ELEMENT_START = re.compile(rb"[\[{\]]")
_IN_STRING = re.compile(rb'["\\]')


class JSONArrayStream:
    """Yields each top-level element of a JSON array as it completes: `[{…},\r\n{…}]` written incrementally.

    A scanner tracks nesting and string state across chunks (so a split anywhere, even inside a string or
    an escape, gives the same elements). An element larger than `max_element_bytes` is skipped and
    counted in `oversize`; `closed` turns true at the array's closing bracket.
    """

    def __init__(self, max_element_bytes: int = MAX_SSE_EVENT_BYTES) -> None:
        self._max = max_element_bytes
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
                    value = loads_or_none(bytes(self._element))
                    if value is None:
                        self.invalid += 1
                    else:
                        out.append(value)
                self._element = bytearray()
        return out


# --------------------------------------------------------------------------------------------------
# JSON bodies
# --------------------------------------------------------------------------------------------------


class JSONAccumulator:
    """Collects a JSON body up to a cap and parses it once at the end."""

    def __init__(self, cap: int = DEFAULT_DECODED_CAP) -> None:
        self._buf = bytearray()
        self._cap = cap
        self.oversize = False

    def feed(self, data: bytes) -> None:
        if self.oversize:
            return
        if len(self._buf) + len(data) > self._cap:
            self.oversize = True
            self._buf.clear()
            return
        self._buf += data

    def parse(self) -> Any:
        """The parsed document, or None when empty, oversize or not JSON. Leading blank lines (DeepSeek's
        keep-alives before a delayed body) are skipped."""
        if self.oversize or not self._buf.strip():
            return None
        try:
            return json.loads(self._buf)
        except ValueError:
            return None


def loads_or_none(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
