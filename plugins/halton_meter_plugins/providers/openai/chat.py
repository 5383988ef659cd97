"""Chat Completions (and legacy Completions), JSON and SSE."""

from __future__ import annotations

from typing import Any

from halton_meter.plugin import ParseOutcome, SSEEvent, Usage
from halton_meter_plugins.providers._common import BodyParser
from halton_meter_plugins.providers.openai.estimate import ESTIMATOR, _tokens_from_bytes, delta_text_bytes
from halton_meter_plugins.providers.openai.mappings import chat_usage, error_type


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
