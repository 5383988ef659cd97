"""The AWS event-stream decoder (plugins/halton_meter_plugins/providers/_eventstream.py).

Messages are built by the corpus's own encoder (tests/corpus/bedrock.py, written from the smithy
amazon-eventstream specification) and, where botocore is installed, checked against AWS's own decoder, so the
decoder is not only consistent with an encoder written alongside it.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from corpus.bedrock import frame
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter_plugins.providers._eventstream import (
    BAD_HEADERS,
    BAD_LENGTH,
    MESSAGE_CRC,
    OVERSIZE,
    PRELUDE_CRC,
    EventStreamDecoder,
    parse_headers,
)

ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)
MESSAGES = st.lists(
    st.tuples(st.dictionaries(ASCII, st.text(max_size=40), max_size=4), st.binary(max_size=300)),
    min_size=1, max_size=6,
)


def decode_all(wire: bytes, cuts: list[int]) -> tuple[list[tuple[dict, bytes]], EventStreamDecoder]:
    decoder = EventStreamDecoder()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        out += [(m.headers, m.payload) for m in decoder.feed(wire[a:b])]
    return out, decoder


@settings(max_examples=200, deadline=None)
@given(messages=MESSAGES, data=st.data())
def test_any_split_decodes_identically(messages, data) -> None:
    wire = b"".join(frame(h, p) for h, p in messages)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(wire)), max_size=30))))
    decoded, decoder = decode_all(wire, cuts)
    assert decoded == [(h, p) for h, p in messages]
    assert decoder.broken is None and decoder.pending == 0 and decoder.messages == len(messages)


def test_one_byte_at_a_time_holds_at_most_one_message() -> None:
    wire = b"".join(frame({":event-type": "chunk"}, bytes([i]) * 50) for i in range(20))
    decoder = EventStreamDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i:i + 1])
        assert decoder.pending < len(frame({":event-type": "chunk"}, b"x" * 50))
    assert [m.payload for m in got] == [bytes([i]) * 50 for i in range(20)]


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(ASCII, st.text(max_size=30), max_size=3), payload=st.binary(max_size=200),
       data=st.data())
def test_any_flipped_byte_is_detected(headers, payload, data) -> None:
    wire = bytearray(frame(headers, payload))
    index = data.draw(st.integers(0, len(wire) - 1), label="index")
    wire[index] ^= data.draw(st.integers(1, 255), label="xor")
    decoded, decoder = decode_all(bytes(wire), [])
    assert decoded == []
    if index < 12:
        # The prelude is checked first: a flip in the lengths or in their CRC fails the prelude CRC.
        assert decoder.broken == PRELUDE_CRC
    else:
        # A complete message with a flip in its headers, payload or trailing CRC fails the message CRC; a
        # flip cannot make it complete earlier than its (intact) length says.
        assert decoder.broken == MESSAGE_CRC


def test_broken_stream_ignores_everything_after() -> None:
    good = frame({":event-type": "chunk"}, b"{}")
    bad = bytearray(good)
    bad[-1] ^= 1
    decoder = EventStreamDecoder()
    assert [m.payload for m in decoder.feed(good)] == [b"{}"]
    assert decoder.feed(bytes(bad) + good) == []
    assert decoder.broken == MESSAGE_CRC
    assert decoder.feed(good) == [] and decoder.pending == 0


def _prelude(total: int, headers_len: int) -> bytes:
    head = struct.pack(">II", total, headers_len)
    return head + struct.pack(">I", zlib.crc32(head))


def test_absurd_lengths_are_refused_before_buffering() -> None:
    decoder = EventStreamDecoder(max_message=1024)
    assert decoder.feed(_prelude(2 * 1024 * 1024 * 1024, 0) + b"x" * 100) == []
    assert decoder.broken == OVERSIZE and decoder.pending == 0
    for total, headers_len in ((8, 0), (15, 0), (100, 90)):
        decoder = EventStreamDecoder()
        decoder.feed(_prelude(total, headers_len))
        assert decoder.broken == BAD_LENGTH


def test_unreadable_headers_break_the_stream() -> None:
    head = bytes([3]) + b"abc" + bytes([42])  # value type 42 does not exist
    prelude = _prelude(12 + len(head) + 4, len(head))
    body = prelude + head
    decoder = EventStreamDecoder()
    assert decoder.feed(body + struct.pack(">I", zlib.crc32(body))) == []
    assert decoder.broken == BAD_HEADERS


def test_every_header_value_type() -> None:
    raw = b"".join([
        bytes([1]) + b"t" + bytes([0]),
        bytes([1]) + b"f" + bytes([1]),
        bytes([1]) + b"b" + bytes([2]) + struct.pack(">b", -2),
        bytes([1]) + b"s" + bytes([3]) + struct.pack(">h", -300),
        bytes([1]) + b"i" + bytes([4]) + struct.pack(">i", 70000),
        bytes([1]) + b"l" + bytes([5]) + struct.pack(">q", 2**40),
        bytes([1]) + b"y" + bytes([6]) + struct.pack(">H", 3) + b"\x00\x01\x02",
        bytes([1]) + b"u" + bytes([7]) + struct.pack(">H", 4) + "✓a".encode(),
        bytes([1]) + b"d" + bytes([8]) + struct.pack(">q", 1_700_000_000_000),
        bytes([1]) + b"g" + bytes([9]) + bytes(range(16)),
    ])
    assert parse_headers(raw) == {"t": True, "f": False, "b": -2, "s": -300, "i": 70000, "l": 2**40,
                                  "y": b"\x00\x01\x02", "u": "✓a", "d": 1_700_000_000_000,
                                  "g": "00010203-0405-0607-0809-0a0b0c0d0e0f"}


@settings(max_examples=50, deadline=None)
@given(messages=MESSAGES)
def test_agrees_with_botocore(messages) -> None:
    eventstream = pytest.importorskip("botocore.eventstream")
    wire = b"".join(frame(h, p) for h, p in messages)
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(wire)
    theirs = [(m.headers, m.payload) for m in buffer]
    ours, _ = decode_all(wire, [])
    assert ours == theirs


def test_botocore_rejects_what_we_reject() -> None:
    eventstream = pytest.importorskip("botocore.eventstream")
    wire = bytearray(frame({":event-type": "chunk"}, b'{"bytes":"e30="}'))
    wire[20] ^= 0x40
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(bytes(wire))
    with pytest.raises(eventstream.ChecksumMismatch):
        list(buffer)
    assert decode_all(bytes(wire), [])[1].broken == MESSAGE_CRC
