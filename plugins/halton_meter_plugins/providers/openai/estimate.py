"""Estimation from byte counts, for Chat streams whose usage was not asked for (`include_usage = "off"`, a
compressed request the meter will not rewrite, or a vendor that cannot take `stream_options`)."""

from __future__ import annotations

import math
from typing import Any

from halton_meter_plugins.providers._common import dig

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
