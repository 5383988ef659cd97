"""Incremental decoder of the AWS event-stream framing (`application/vnd.amazon.eventstream`).

AWS streaming APIs (Bedrock's InvokeModelWithResponseStream and ConverseStream among them) frame a response
as a sequence of binary messages, each:

    total length (uint32 BE) | headers length (uint32 BE) | prelude CRC32 (of the 8 bytes before it)
    headers (headers-length bytes) | payload | message CRC32 (of every byte of the message before it)

A header is a 1-byte name length, the name (UTF-8), a 1-byte value type and the value: 0 true, 1 false (no
bytes), 2 byte, 3 short, 4 int, 5 long (signed, big-endian, 1/2/4/8 bytes), 6 bytes and 7 string (a 2-byte
length, then the bytes), 8 timestamp (int64 milliseconds since the epoch), 9 UUID (16 bytes).

The decoder takes the body in arbitrary pieces and returns each message once it is complete. It holds at most
one unfinished message (a declared length over `max_message` is refused before anything is buffered), never
raises on bad input, and stops at the first damage it finds: a prelude CRC or message CRC mismatch, a length
that cannot be, headers it cannot read. `broken` then names the reason and every later byte is ignored
(a stream whose framing is lost cannot be resynchronised reliably).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

PRELUDE_BYTES = 12
CRC_BYTES = 4
MIN_MESSAGE_BYTES = PRELUDE_BYTES + CRC_BYTES
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest message accepted (AWS's own decoders allow 128 KiB of headers and 24 MiB of payload; Bedrock's
messages are a few hundred bytes)."""

HeaderValue = bool | int | bytes | str

# Reasons a stream is `broken`.
PRELUDE_CRC = "prelude_crc"
MESSAGE_CRC = "message_crc"
BAD_LENGTH = "bad_length"
OVERSIZE = "oversize"
BAD_HEADERS = "bad_headers"

_INTS = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


class HeaderError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header's value (`:event-type`, `:message-type`, ...), or None."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def parse_headers(data: bytes | memoryview) -> dict[str, HeaderValue]:
    """The headers section of one message; raises HeaderError when it cannot be read to its exact end."""
    headers: dict[str, HeaderValue] = {}
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        name_len = view[pos]
        pos += 1
        if pos + name_len + 1 > end:
            raise HeaderError("header name runs past the headers")
        name = bytes(view[pos:pos + name_len]).decode("utf-8", errors="replace")
        pos += name_len
        kind = view[pos]
        pos += 1
        value: HeaderValue
        if kind in (0, 1):
            value = kind == 0
        elif kind in _INTS:
            size = struct.calcsize(_INTS[kind])
            if pos + size > end:
                raise HeaderError("header value runs past the headers")
            value = struct.unpack(_INTS[kind], view[pos:pos + size])[0]
            pos += size
        elif kind in (6, 7):
            if pos + 2 > end:
                raise HeaderError("header value length runs past the headers")
            size = struct.unpack(">H", view[pos:pos + 2])[0]
            pos += 2
            if pos + size > end:
                raise HeaderError("header value runs past the headers")
            raw = bytes(view[pos:pos + size])
            value = raw.decode("utf-8", errors="replace") if kind == 7 else raw
            pos += size
        elif kind == 9:
            if pos + 16 > end:
                raise HeaderError("header value runs past the headers")
            value = str(uuid.UUID(bytes=bytes(view[pos:pos + 16])))
            pos += 16
        else:
            raise HeaderError("unknown header value type")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Feed bytes, get complete messages. See the module docstring for the rules."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message = max_message
        self.broken: str | None = None
        """Why decoding stopped (`prelude_crc`, `message_crc`, `bad_length`, `oversize`, `bad_headers`)."""
        self.messages = 0
        self._buf = bytearray()
        self._total: int | None = None
        """The current message's length, once its prelude was read and checked."""
        self._headers_len = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held (0 between messages)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[EventStreamMessage]:
        if self.broken is not None or not data:
            return []
        buf = self._buf
        buf += data
        out: list[EventStreamMessage] = []
        pos = 0
        while True:
            available = len(buf) - pos
            if self._total is None:
                if available < PRELUDE_BYTES:
                    break
                if not self._prelude(buf, pos):
                    self._buf = bytearray()
                    return out
            total = self._total
            assert total is not None
            if available < total:
                break
            message = self._message(bytes(buf[pos:pos + total]))
            if message is None:
                self._buf = bytearray()
                return out
            out.append(message)
            self.messages += 1
            pos += total
            self._total = None
        if pos:
            del buf[:pos]
        return out

    def _prelude(self, buf: bytearray, pos: int) -> bool:
        total, headers_len, crc = struct.unpack_from(">III", buf, pos)
        if zlib.crc32(bytes(buf[pos:pos + 8])) != crc:
            self.broken = PRELUDE_CRC
            return False
        if total < MIN_MESSAGE_BYTES or headers_len > total - MIN_MESSAGE_BYTES:
            self.broken = BAD_LENGTH
            return False
        if total > self.max_message:
            self.broken = OVERSIZE
            return False
        self._total, self._headers_len = total, headers_len
        return True

    def _message(self, raw: bytes) -> EventStreamMessage | None:
        view = memoryview(raw)
        body_end = len(view) - CRC_BYTES
        (crc,) = struct.unpack(">I", view[body_end:])
        if zlib.crc32(view[:body_end]) != crc:
            self.broken = MESSAGE_CRC
            return None
        headers_end = PRELUDE_BYTES + self._headers_len
        try:
            headers = parse_headers(view[PRELUDE_BYTES:headers_end])
        except HeaderError:
            self.broken = BAD_HEADERS
            return None
        return EventStreamMessage(headers, bytes(view[headers_end:body_end]))


__all__ = [
    "BAD_HEADERS",
    "BAD_LENGTH",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_CRC",
    "OVERSIZE",
    "PRELUDE_CRC",
    "EventStreamDecoder",
    "EventStreamMessage",
    "HeaderValue",
    "parse_headers",
]
