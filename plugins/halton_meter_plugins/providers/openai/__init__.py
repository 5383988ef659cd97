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
counts instead (flagged `estimated`, never mixed with reported numbers). The setting reaches each
provider through the register hook's `config` (`include_usage_mode(config)`), never a module global.

Modules: `mappings` (endpoints, usage and error mappings), `chat`, `responses` (and embeddings),
`estimate`, `usage_injection` (the request rewrite and the stream filter), `config` (`[plugins.openai]`),
`provider` (`OpenAICompatibleProvider`). Everything is importable from the package itself.
"""

from __future__ import annotations

from collections.abc import Callable

from halton_meter.plugin import PluginConfig, hookimpl
from halton_meter.plugin import Provider as Provider  # the base, re-exported for vendors
from halton_meter_plugins.providers.openai.chat import ChatParser
from halton_meter_plugins.providers.openai.config import (
    DEFAULT_INCLUDE_USAGE,
    INCLUDE_USAGE_MODES,
    checked_include_usage,
    include_usage_mode,
)
from halton_meter_plugins.providers.openai.estimate import (
    ESTIMATOR,
    delta_text_bytes,
    message_text_bytes,
)
from halton_meter_plugins.providers.openai.mappings import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    INPUT_TOKENS,
    OTHER,
    RESPONSES,
    RESPONSES_COMPACT,
    chat_usage,
    embeddings_usage,
    error_type,
    responses_usage,
)
from halton_meter_plugins.providers.openai.provider import OpenAICompatibleProvider
from halton_meter_plugins.providers.openai.responses import (
    EMBEDDINGS_DECODED_CAP,
    EmbeddingsParser,
    InputTokensParser,
    ResponsesParser,
)
from halton_meter_plugins.providers.openai.usage_injection import UsageChunkFilter, inject_include_usage


@hookimpl
def halton_configure(config: PluginConfig) -> None:
    """Validate `[plugins.openai]` when the configuration is read, so a bad value stops the command (exit
    2) rather than failing one plugin's registration. Keeps nothing: providers get the mode through
    `halton_register_providers`."""
    include_usage_mode(config)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(OpenAICompatibleProvider(include_usage=include_usage_mode(config)))


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "DEFAULT_INCLUDE_USAGE",
    "EMBEDDINGS",
    "EMBEDDINGS_DECODED_CAP",
    "ESTIMATOR",
    "INCLUDE_USAGE_MODES",
    "INPUT_TOKENS",
    "OTHER",
    "RESPONSES",
    "RESPONSES_COMPACT",
    "ChatParser",
    "EmbeddingsParser",
    "InputTokensParser",
    "OpenAICompatibleProvider",
    "Provider",
    "ResponsesParser",
    "UsageChunkFilter",
    "chat_usage",
    "checked_include_usage",
    "delta_text_bytes",
    "embeddings_usage",
    "error_type",
    "halton_configure",
    "halton_register_providers",
    "include_usage_mode",
    "inject_include_usage",
    "message_text_bytes",
    "responses_usage",
]
