"""The Responses API (JSON and SSE), Embeddings, and the free `responses/input_tokens` count."""

from __future__ import annotations

from typing import Any

from halton_meter.plugin import SSEEvent, Usage, is_identifier
from halton_meter_plugins.providers._common import BodyParser, NoUsageParser, count, dig
from halton_meter_plugins.providers.openai.mappings import embeddings_usage, error_type, responses_usage

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
