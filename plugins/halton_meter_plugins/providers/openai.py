"""OpenAI (`api.openai.com`): Chat Completions, Responses and Embeddings, JSON and SSE, and the
OpenAI-compatible family that reuses these parsers under its own hosts and path prefix.

Chat mapping (docs/concepts/tokens.md): input = prompt_tokens − cached_tokens; cache_read =
cached_tokens; output = max(completion_tokens, total_tokens − prompt_tokens) (xAI reports reasoning outside
completion_tokens; for OpenAI itself this is completion_tokens); reasoning is a subset of output. In streams
the usage chunk (empty `choices`, or attached to the finish chunk by some vendors) carries totals: the last
one seen wins, none is ever added to another.

Responses mapping: input = input_tokens − cached_tokens; output = max(output_tokens, total_tokens −
input_tokens). Usage lives only in the terminal event (`response.completed`, `response.incomplete`,
`response.failed`); there is no `[DONE]`. Embeddings: `prompt_tokens` is all input, there is no output.

A Chat stream reports usage only when the request asks for it (`stream_options.include_usage`). By default
the meter asks on the client's behalf (`rewrite_request`) and removes what that adds from the client's view
(`UsageChunkFilter`), so the client sees the stream it asked for and the record gets exact numbers. With
`[plugins.openai] include_usage = "off"` the request is left alone and such streams are estimated from byte
counts instead (flagged `estimated`, never mixed with reported numbers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from halton_meter import hookimpl
from halton_meter.errors import ConfigError
from halton_meter.redact import is_identifier
from halton_meter.types import Endpoint, ParseOutcome, RequestFacts, ResponseParser, Usage
from halton_meter.wire import (
    MAX_SSE_EVENT_BYTES,
    REQUEST_SCAN_TOKENS,
    PartialDocument,
    SSEEvent,
    load_json,
    loads_or_none,
)
from halton_meter_plugins.providers._common import (
    BodyParser,
    NoUsageParser,
    Provider,
    count,
    dig,
    is_event_stream,
    json_request_facts,
    optional_count,
    request_json,
)

CHAT = Endpoint("chat.completions", billable=True)
COMPLETIONS = Endpoint("completions", billable=True)
RESPONSES = Endpoint("responses", billable=True)
RESPONSES_COMPACT = Endpoint("responses.compact", billable=True)
EMBEDDINGS = Endpoint("embeddings", billable=True)
INPUT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
OTHER = Endpoint("other", billable=False, inference=False)

# --------------------------------------------------------------------------------------------------
# Configuration: [plugins.openai]
# --------------------------------------------------------------------------------------------------

INCLUDE_USAGE_MODES = ("inject", "off")
_settings: dict[str, str] = {"include_usage": "inject"}


def include_usage_mode() -> str:
    """`inject` (ask for usage on the client's behalf and hide the extra chunk) or `off` (estimate)."""
    return _settings["include_usage"]


def set_include_usage_mode(mode: str) -> None:
    if mode not in INCLUDE_USAGE_MODES:
        raise ConfigError(
            f'config.toml: [plugins.openai] include_usage must be "inject" or "off", not {mode!r}'
        )
    _settings["include_usage"] = mode


@hookimpl
def halton_configure(config: Any) -> None:
    block = config.plugin_config("openai")
    unknown = sorted(set(block) - {"include_usage"})
    if unknown:
        raise ConfigError(
            f"config.toml: unknown key [plugins.openai] {unknown[0]} (known: include_usage = \"inject\" | \"off\")"
        )
    # Every host build re-reads the block, so an absent block restores the default.
    set_include_usage_mode(block.get("include_usage", "inject"))


# --------------------------------------------------------------------------------------------------
# Shared mappings
# --------------------------------------------------------------------------------------------------


def error_type(document: Any) -> str | None:
    """`error.code`, else `error.type`, whichever first is an identifier (some compatible servers put a
    sentence in `code`; sentences are never an error id); `error` when the body has an error object but
    names it with neither."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # OpenRouter: {"error": {"code": 502, "message": ...}}
        if is_identifier(value):
            return value
    return "error"


def chat_usage(usage: dict[str, Any]) -> Usage:
    prompt = count(usage.get("prompt_tokens"))
    completion = count(usage.get("completion_tokens"))
    total = count(usage.get("total_tokens"))
    cached = min(count(dig(usage, "prompt_tokens_details", "cached_tokens")), prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=max(completion, total - prompt),
        cache_read_tokens=cached,
        reasoning_tokens=optional_count(dig(usage, "completion_tokens_details", "reasoning_tokens")),
    )


def responses_usage(usage: dict[str, Any]) -> Usage:
    given = count(usage.get("input_tokens"))
    produced = count(usage.get("output_tokens"))
    total = count(usage.get("total_tokens"))
    cached = min(count(dig(usage, "input_tokens_details", "cached_tokens")), given)
    return Usage(
        input_tokens=given - cached,
        output_tokens=max(produced, total - given),
        cache_read_tokens=cached,
        reasoning_tokens=optional_count(dig(usage, "output_tokens_details", "reasoning_tokens")),
    )


def embeddings_usage(usage: dict[str, Any]) -> Usage:
    return Usage(input_tokens=count(usage.get("prompt_tokens")))


# --------------------------------------------------------------------------------------------------
# Estimation (include_usage = "off", or a compressed request the meter will not rewrite)
# --------------------------------------------------------------------------------------------------

ESTIMATOR = "utf8_bytes_div_4"
"""ceil(UTF-8 bytes / 4) for the prompt's message text and for the streamed delta text. No tokenizer is
available offline (tiktoken downloads its BPE files), and ~4 bytes per token is OpenAI's own rule of thumb
for English; the record says `estimated` so nobody mistakes it for the provider's count."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def message_text_bytes(messages: Any) -> int:
    """UTF-8 bytes of the text a Chat request sends: message contents (strings or `text` parts), refusals,
    and the names and arguments of tool calls. Images, audio and files are not text and are not counted."""
    total = 0
    if not isinstance(messages, list):
        return 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += _utf8_len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += _utf8_len(part["text"])
        if isinstance(message.get("refusal"), str):
            total += _utf8_len(message["refusal"])
        for call in message.get("tool_calls") or ():
            total += _function_text_bytes(dig(call, "function"))
        total += _function_text_bytes(message.get("function_call"))
    return total


def _function_text_bytes(function: Any) -> int:
    if not isinstance(function, dict):
        return 0
    return sum(_utf8_len(function[k]) for k in ("name", "arguments") if isinstance(function.get(k), str))


_DELTA_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


def delta_text_bytes(chunk: dict[str, Any]) -> int:
    """UTF-8 bytes of generated text in one stream chunk (content, reasoning, tool-call arguments)."""
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key in _DELTA_TEXT_FIELDS:
            if isinstance(delta.get(key), str):
                total += _utf8_len(delta[key])
        for call in delta.get("tool_calls") or ():
            total += _function_text_bytes(dig(call, "function"))
        total += _function_text_bytes(delta.get("function_call"))
    return total


def _tokens_from_bytes(size: int) -> int:
    return math.ceil(size / 4)


# --------------------------------------------------------------------------------------------------
# Chat Completions
# --------------------------------------------------------------------------------------------------


class ChatParser(BodyParser):
    """Chat Completions, JSON and SSE. Vendors with their own usage fields subclass and override
    `usage_from` (how a usage object maps to buckets) and `usage_in` (where a chunk carries usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finish_seen = False
        prompt_bytes = self.request.extra.get("prompt_text_bytes")
        self._prompt_bytes: int | None = prompt_bytes if isinstance(prompt_bytes, int) else None
        self._output_bytes = 0

    def usage_from(self, usage: dict[str, Any]) -> Usage:
        return chat_usage(usage)

    def usage_in(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        usage = chunk.get("usage")
        return usage if isinstance(usage, dict) else None

    def on_event(self, event: SSEEvent) -> None:
        if event.data.strip() == "[DONE]":
            self.outcome.complete = self.outcome.incomplete_reason is None
            return
        chunk = self.read_json(event.data)
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and isinstance(chunk["error"], dict):
            self.outcome.error_type = error_type(chunk)
            self.outcome.incomplete_reason = "stream_error"
            return
        if self._prompt_bytes is not None:
            self._output_bytes += delta_text_bytes(chunk)  # a running count only; the text is never kept
        self.on_chunk(chunk)

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        """One parsed stream chunk (not an error, not [DONE])."""
        self._head(chunk)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_seen = True
        usage = self.usage_in(chunk)
        if usage is not None:
            self._usage(usage)

    def on_document(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if self.status >= 400 or ("error" in document and "choices" not in document):
            self.outcome.error_type = error_type(document)
            return
        self._head(document)
        usage = self.usage_in(document)
        if usage is not None:
            self._usage(usage)

    def finish(self, eof: bool) -> ParseOutcome:
        outcome = super().finish(eof)
        if self._prompt_bytes is not None and outcome.streamed and not outcome.usage_reported:
            # The provider said nothing (usage was not asked for): a flagged estimate, never "reported".
            outcome.estimated = True
            outcome.usage = Usage(
                input_tokens=_tokens_from_bytes(self._prompt_bytes),
                output_tokens=_tokens_from_bytes(self._output_bytes),
            )
            outcome.extra["estimator"] = ESTIMATOR
            # The record builder keeps bucket values only for reported usage; keep the estimate visible.
            outcome.extra["estimated_input_tokens"] = outcome.usage.input_tokens
            outcome.extra["estimated_output_tokens"] = outcome.usage.output_tokens
        return outcome

    def _head(self, chunk: dict[str, Any]) -> None:
        if self.outcome.model is None and isinstance(chunk.get("model"), str):
            self.outcome.model = chunk["model"]
        if self.outcome.provider_request_id is None and isinstance(chunk.get("id"), str):
            self.outcome.provider_request_id = chunk["id"]
        if isinstance(chunk.get("service_tier"), str):
            self.outcome.extra["service_tier"] = chunk["service_tier"]

    def _usage(self, usage: dict[str, Any]) -> None:
        # Cumulative: a later usage object replaces an earlier one, it is never added to it.
        self.outcome.usage = self.usage_from(usage)
        self.outcome.usage_reported = True


# --------------------------------------------------------------------------------------------------
# include_usage injection: the request side
# --------------------------------------------------------------------------------------------------

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
# include_usage injection: the response side
# --------------------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(rb"[\r\n]")
_LINES = re.compile(rb"([^\r\n]*)(\r\n|\r|\n|\Z)")
_USAGE_NULL_TAIL = re.compile(rb',"usage":null(?:,"obfuscation":"[^"\\]*")?\}\Z')


class UsageChunkFilter:
    """Undo, in what the client receives, what an injected `include_usage` added to a Chat stream: the
    usage-only chunk (`"choices": []` with a usage object) is dropped, and the `"usage":null` member added to
    every other chunk is removed where it has one of the exact compact forms OpenAI writes in a one-line
    `data:` object (see `_without_usage_null`). Anything else passes byte for byte.

    Bytes are held only until the current SSE event is complete (its blank line); a complete event is
    never held. Lines end with LF, CRLF or CR, and a CRLF may be split across chunks. An event larger than
    `max_held` is forwarded unfiltered as it arrives, so memory stays bounded.
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
                    filtered = self._filter(event)
                    out += filtered
                    kept = bool(filtered)
                if trailing_cr:
                    self._after_cr = "kept" if kept else "dropped"
            elif trailing_cr:
                self._after_cr = "line"
        return bytes(out)

    def flush(self) -> bytes:
        # An event without its blank line is never dispatched by a client; filter it all the same so a
        # usage chunk cut short of its terminator does not leak through.
        event = bytes(self._held)
        self._held.clear()
        self._line_open = self._passing = False
        return self._filter(event) if event else b""

    @staticmethod
    def _filter(event: bytes) -> bytes:
        lines = [(m.group(1), m.group(2)) for m in _LINES.finditer(event) if m.group(0)]
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


# --------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class ResponsesParser(BodyParser):
    """Responses API, JSON (the Response object) and SSE (named events, usage in the terminal event).

    `response.incomplete` (e.g. max_output_tokens reached) is a normal end: its usage is billed, the
    stream is complete, and `extra["response_status"]` says "incomplete". `response.failed` is a terminal
    event too (complete, with the error's code); a separate `error` event is a mid-stream error."""

    partial_descend = ("response",)  # a terminal event too big to parse: its usage follows the output

    def error_id(self, error: Any) -> str | None:
        """The record's error id for an error object (`code`, else `type`)."""
        return error_type({"error": error}) if isinstance(error, dict) else None

    def usage_from(self, usage: dict[str, Any]) -> Usage:
        return responses_usage(usage)

    def on_usage(self, usage: dict[str, Any]) -> None:
        """A usage object was read (subclasses keep vendor extras from it)."""

    # ---- streams ---------------------------------------------------------------------------------

    def on_event(self, event: SSEEvent) -> None:
        data = self.read_json(event.data)
        if not isinstance(data, dict):
            return
        kind = data.get("type") if isinstance(data.get("type"), str) else event.event
        if kind == "error":
            nested = data.get("error")
            code = data.get("code")
            if is_identifier(code):
                self.outcome.error_type = code
            else:
                self.outcome.error_type = self.error_id(nested) or self._string(data, "type") or "error"
            self.outcome.incomplete_reason = "stream_error"
            self.outcome.complete = False
            return
        response = data.get("response")
        if isinstance(response, dict):
            self._response(response, terminal=kind in _TERMINAL)
        if kind in _TERMINAL:
            if kind == "response.failed" and self.outcome.error_type is None:
                self.outcome.error_type = "response_failed"
            self.outcome.complete = self.outcome.incomplete_reason is None

    # ---- whole bodies ----------------------------------------------------------------------------

    def on_document(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if self.status >= 400 or (
            isinstance(document.get("error"), dict) and "output" not in document and "usage" not in document
        ):
            self.outcome.error_type = self.error_id(document.get("error"))
            self.on_error_document(document)
            return
        self._response(document, terminal=True)
        if document.get("status") == "failed" and self.outcome.error_type is None:
            self.outcome.error_type = "response_failed"

    def on_error_document(self, document: dict[str, Any]) -> None:
        """An error body was read (subclasses keep vendor extras from it)."""

    # ---- shared ----------------------------------------------------------------------------------

    @staticmethod
    def _string(obj: dict[str, Any], key: str) -> str | None:
        value = obj.get(key)
        return value if isinstance(value, str) and value else None

    def _response(self, response: dict[str, Any], terminal: bool) -> None:
        outcome = self.outcome
        if isinstance(response.get("model"), str):
            outcome.model = response["model"]
        if isinstance(response.get("id"), str):
            outcome.provider_request_id = response["id"]
        if isinstance(response.get("service_tier"), str):
            outcome.extra["service_tier"] = response["service_tier"]
        usage = response.get("usage")
        if isinstance(usage, dict):
            # Cumulative: the terminal event's usage replaces anything earlier.
            outcome.usage = self.usage_from(usage)
            outcome.usage_reported = True
            self.on_usage(usage)
        if not terminal:
            return
        status = response.get("status")
        if isinstance(status, str) and status != "completed":
            # incomplete (billed, e.g. max_output_tokens), failed, or a background call still queued
            outcome.extra["response_status"] = status
        reason = dig(response, "incomplete_details", "reason")
        if isinstance(reason, str):
            outcome.extra["incomplete_details"] = reason
        if status == "failed" or isinstance(response.get("error"), dict):
            outcome.error_type = self.error_id(response.get("error")) or outcome.error_type


EMBEDDINGS_DECODED_CAP = 128 * 1024 * 1024
"""An embeddings body may legitimately be tens of MB (2,048 inputs × 1,536 floats, pretty-printed as the API
writes it, is about 70 MB); its `model` and `usage` follow the vectors at the top level, where the JSON
accumulator's two-ended read finds them while keeping only the body's first and last 256 KiB."""


class EmbeddingsParser(BodyParser):
    """Embeddings: one JSON body; `usage.prompt_tokens` is all input (vectors may be base64 strings)."""

    decoded_cap = EMBEDDINGS_DECODED_CAP

    def on_event(self, event: SSEEvent) -> None:
        pass

    def on_document(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if self.status >= 400 or ("error" in document and "data" not in document):
            self.outcome.error_type = error_type(document)
            return
        if isinstance(document.get("model"), str):
            self.outcome.model = document["model"]
        usage = document.get("usage")
        if isinstance(usage, dict):
            self.outcome.usage = embeddings_usage(usage)
            self.outcome.usage_reported = True


class InputTokensParser(NoUsageParser):
    """`POST /v1/responses/input_tokens`: a token count, free, never usage."""

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if self.status < 400 and isinstance(document, dict) and document.get("input_tokens") is not None:
            self.outcome.extra["counted_input_tokens"] = count(document["input_tokens"])


# --------------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------------


class OpenAICompatibleProvider(Provider):
    """Any host speaking the OpenAI API under `path_prefix` (default `/v1`): Chat Completions, Responses,
    Embeddings (and legacy Completions).

    Third-party plugins (and, later, user-declared endpoints) instantiate this with their own id, name
    and hosts; see `contrib/halton-meter-provider-example`. Vendors subclass and swap the parser classes.
    """

    chat_parser_class: type[ChatParser] = ChatParser
    responses_parser_class: type[ResponsesParser] = ResponsesParser
    embeddings_parser_class: type[BodyParser] = EmbeddingsParser
    inject_usage: bool = True
    """Ask for Chat stream usage on the client's behalf (see the module docstring); False for an API that
    rejects `stream_options`."""

    def __init__(
        self,
        id: str = "provider.openai",
        name: str = "openai",
        hosts: tuple[str, ...] = ("api.openai.com",),
        price_provider_id: str | None = "openai",
        path_prefix: str = "/v1",
    ) -> None:
        self.id, self.name, self.hosts = id, name, hosts
        self.price_provider_id = price_provider_id
        self.path_prefix = path_prefix.rstrip("/")

    def route(self, method: str, path: str) -> Endpoint | None:
        path = path.rstrip("/")
        if method != "POST" or not path.startswith(self.path_prefix + "/"):
            return OTHER
        return {
            "/chat/completions": CHAT,
            "/completions": COMPLETIONS,
            "/responses": RESPONSES,
            "/responses/compact": RESPONSES_COMPACT,
            "/responses/input_tokens": INPUT_TOKENS,
            "/embeddings": EMBEDDINGS,
        }.get(path[len(self.path_prefix) :], OTHER)

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        facts = json_request_facts(body)
        if endpoint.kind == CHAT.kind and facts.stream_requested and not facts.extra.get("include_usage"):
            encoded = (headers or {}).get("content-encoding", "").strip().lower() not in ("", "identity")
            # Estimate when usage will not be asked for: the mode is off, or the body is compressed (the
            # core never re-encodes a client's body, so it cannot be rewritten).
            if include_usage_mode() == "off" or encoded or not self.inject_usage:
                data = request_json(body)
                messages = data.get("messages") if isinstance(data, dict) else None
                if not isinstance(data, PartialDocument) or messages is not None:
                    # a count, never the text; not for a body over the JSON budget (messages unread)
                    facts.extra["prompt_text_bytes"] = message_text_bytes(messages)
        return facts

    def rewrite_request(self, endpoint: Endpoint, request: RequestFacts, body: bytes) -> bytes | None:
        if (
            endpoint.kind != CHAT.kind
            or not self.inject_usage
            or include_usage_mode() != "inject"
            or not request.stream_requested
            or request.extra.get("include_usage")
            or "prompt_text_bytes" in request.extra
        ):
            return None
        replacement = inject_include_usage(body)
        if replacement is not None:
            request.usage_injected = True
        return replacement

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint.kind in (CHAT.kind, COMPLETIONS.kind):
            return self.chat_parser_class(endpoint, request, status, content_type)
        if endpoint.kind in (RESPONSES.kind, RESPONSES_COMPACT.kind):
            return self.responses_parser_class(endpoint, request, status, content_type)
        if endpoint.kind == EMBEDDINGS.kind:
            return self.embeddings_parser_class(endpoint, request, status, content_type)
        if endpoint.kind == INPUT_TOKENS.kind:
            return InputTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)

    def response_rewriter(
        self, endpoint: Endpoint, request: RequestFacts, status: int, headers: Mapping[str, str]
    ) -> UsageChunkFilter | None:
        if (
            request.usage_injected
            and endpoint.kind == CHAT.kind
            and status == 200
            and is_event_stream(headers.get("content-type", ""))
        ):
            return UsageChunkFilter()
        return None


@hookimpl
def halton_register_providers(register: Any) -> None:
    register(OpenAICompatibleProvider())
