"""`include_usage` injection: the request rewrite that asks a Chat stream for usage on the client's behalf,
and the stream rewriter that removes what that adds from the client's view (package docstring)."""

from __future__ import annotations

import json
import re
from typing import Any

from halton_meter.plugin import (
    REQUEST_SCAN_TOKENS,
    PartialDocument,
    SSEEventRewriter,
    load_json,
    loads_or_none,
    sse_lines,
)

_INCLUDE_USAGE = b'"stream_options":{"include_usage":true},'


def inject_include_usage(body: bytes) -> bytes | None:
    """The request body with `stream_options.include_usage = true`, or None when it cannot be done safely.

    Without `stream_options` the member is inserted right after the opening brace, so every other byte is
    the client's. With one, the body is re-serialised compactly (same meaning; refused when a number
    would not survive, e.g. 1e400). The body is read within the JSON budget: one too big to parse whole is
    left alone unless the insertion alone will do, which needs every top-level member name, i.e. a
    targeted read that covered the whole body (`load_json` then returns the whole document)."""
    try:
        body.decode("utf-8")
        data = load_json(body, partial=True, max_tokens=REQUEST_SCAN_TOKENS)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("stream") is not True or isinstance(data, PartialDocument):
        return None
    if "stream_options" not in data:
        start = len(body) - len(body.lstrip(b" \t\r\n"))
        if body[start : start + 1] == b"{":
            return body[: start + 1] + _INCLUDE_USAGE + body[start + 1 :]
    options = data.get("stream_options")
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8: escape them instead, as the client did
        return json.dumps(data, allow_nan=False, separators=(",", ":")).encode("ascii")
    except (ValueError, RecursionError):
        return None


# --------------------------------------------------------------------------------------------------
# The response side
# --------------------------------------------------------------------------------------------------

_USAGE_NULL_TAIL = re.compile(rb',"usage":null(?:,"obfuscation":"[^"\\]*")?\}\Z')


class UsageChunkFilter(SSEEventRewriter):
    """Undo, in what the client receives, what an injected `include_usage` added to a Chat stream: the
    usage-only chunk (`"choices": []` with a usage object) is dropped, and the `"usage":null` member added to
    every other chunk is removed where it has one of the exact compact forms OpenAI writes in a one-line
    `data:` object (see `_without_usage_null`). Anything else passes byte for byte.

    The framing (events held only until complete, LF/CRLF/CR, a bound on what is held) is
    `halton_meter.wire.SSEEventRewriter`'s; this class only decides what one whole event becomes.
    """

    def rewrite_event(self, event: bytes) -> bytes:
        return self._filter(event)

    @staticmethod
    def _filter(event: bytes) -> bytes:
        lines = sse_lines(event)
        data_lines = [i for i, (content, _) in enumerate(lines) if content.startswith(b"data:")]
        if not data_lines:
            return event
        values = []
        for i in data_lines:
            value = lines[i][0][5:]
            values.append(value[1:] if value.startswith(b" ") else value)
        chunk = loads_or_none(b"\n".join(values))
        if not isinstance(chunk, dict):
            return event
        if chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict):
            return b""
        if len(data_lines) != 1 or "usage" not in chunk or chunk["usage"] is not None:
            return event
        stripped = _without_usage_null(values[0], chunk)
        if stripped is None:
            return event
        index = data_lines[0]
        content, terminator = lines[index]
        prefix = content[: len(content) - len(values[0])]
        lines[index] = (prefix + stripped, terminator)
        return b"".join(content + terminator for content, terminator in lines)


def _without_usage_null(value: bytes, chunk: dict[str, Any]) -> bytes | None:
    """`value` minus its top-level `"usage":null`, in the two compact forms OpenAI writes: the last member
    (`…,"usage":null}`) or the last but for the obfuscation padding (`…,"usage":null,"obfuscation":"…"}`).
    The result must parse to exactly the same object without `usage`, which rules out a match inside a
    string or a nested object. None (leave the chunk alone) for every other form."""
    match = _USAGE_NULL_TAIL.search(value)
    if match is None:
        return None
    candidate = value[: match.start()] + value[match.start() + len(b',"usage":null') :]
    parsed = loads_or_none(candidate)
    if isinstance(parsed, dict) and parsed == {k: v for k, v in chunk.items() if k != "usage"}:
        return candidate
    return None
