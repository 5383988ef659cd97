"""Azure OpenAI (and Microsoft Foundry resources): the OpenAI API under Azure's hosts and paths.

Hosts: `{resource}.openai.azure.com`, `{resource}.cognitiveservices.azure.com` and the Foundry form
`{resource}.services.ai.azure.com` (docs/providers/azure-openai.md). Paths:

* the deployment form `/openai/deployments/{deployment}/{chat/completions,completions,embeddings}?api-version=…`,
  where the deployment (a name the user chose) selects the model;
* the v1 API `/openai/v1/{chat/completions,responses,embeddings}` (no api-version; `model` in the body is the
  deployment name), and the preview `/openai/responses?api-version=…`;
* on Foundry resources, the model-inference `/models/chat/completions` and Claude's Messages API
  `/anthropic/v1/messages`.

The bodies are OpenAI's and are read with the OpenAI parsers. Azure adds content-filter annotations
(`prompt_filter_results`, `content_filter_results`) and opens a Chat stream with a chunk that has empty
`choices` and empty `id` and `model`: empty strings are not a model, so the parser skips them and takes the
model from the first chunk that names one (Azure reports the underlying model, `gpt-4o-2024-11-20`).

`model_requested` is the body's `model` when it names one, else the deployment. Pricing uses the `azure`
price list, which falls back to OpenAI's list prices; `extra["price_as"] = "openai/<model>"` names the model
to price: the `[plugins.azure-openai.deployments]` mapping for the deployment when configured (for
deployments whose responses name no model or a model without a list price), else the response's model.

Chat streams report usage only when asked (`stream_options.include_usage`). On the v1 API the meter asks on
the client's behalf, exactly as for OpenAI (`[plugins.openai] include_usage`). On the deployment form it asks
too when the `api-version` (read from the query string) is 2024-09-01-preview or later; earlier versions
reject `stream_options` with a 400, so their streams are estimated unless the client asks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from halton_meter.plugin import (
    ConfigError,
    Endpoint,
    ParseOutcome,
    PartialDocument,
    PluginConfig,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
)
from halton_meter_plugins.providers import anthropic
from halton_meter_plugins.providers._common import USAGE_NOT_READ, NoUsageParser, UnparsedParser, request_json
from halton_meter_plugins.providers.openai import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    INPUT_TOKENS,
    OTHER,
    RESPONSES,
    RESPONSES_COMPACT,
    ChatParser,
    EmbeddingsParser,
    OpenAICompatibleProvider,
    ResponsesParser,
    error_type,
    include_usage_mode,
    message_text_bytes,
)

PLUGIN = "azure-openai"
HOSTS = ("*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com")
MESSAGES = Endpoint("messages", billable=True)
"""Claude on a Foundry resource (`/anthropic/v1/messages`), read with the Anthropic parser."""
CLAUDE_COUNT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)

_DEPLOYMENT = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)(?P<rest>/.*)$")
_DEPLOYMENT_ROUTES = {
    "/chat/completions": CHAT,
    "/extensions/chat/completions": CHAT,  # "on your data" (older api-versions)
    "/completions": COMPLETIONS,
    "/embeddings": EMBEDDINGS,
    "/responses": RESPONSES,
}
_PAID_UNREAD_PREFIXES = ("/audio/", "/images/")
_V1_ROUTES = {
    "/chat/completions": CHAT,
    "/completions": COMPLETIONS,
    "/responses": RESPONSES,
    "/responses/compact": RESPONSES_COMPACT,
    "/responses/input_tokens": INPUT_TOKENS,
    "/embeddings": EMBEDDINGS,
}
_OTHER_ROUTES = {
    "/openai/responses": RESPONSES,  # preview, `?api-version=2025-03-01-preview` and later
    "/models/chat/completions": CHAT,  # Foundry model inference (`?api-version=2024-05-01-preview`)
    "/models/embeddings": EMBEDDINGS,
    "/anthropic/v1/messages": MESSAGES,
    "/anthropic/v1/messages/count_tokens": CLAUDE_COUNT_TOKENS,
}
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


# --------------------------------------------------------------------------------------------------
# [plugins.azure-openai]
# --------------------------------------------------------------------------------------------------


def deployments_mapping(config: PluginConfig | None) -> dict[str, str]:
    """`[plugins.azure-openai.deployments]`: deployment name → model to price it as (`gpt-4o`, or
    `vendor/model` for a list other than OpenAI's). Empty without a config or a block; ConfigError (one
    line: the key and the fix) for anything else than that one table of strings."""
    if config is None:
        return {}
    block = config.plugin_config(PLUGIN)
    unknown = sorted(set(block) - {"deployments"})
    if unknown:
        raise ConfigError(
            f"config.toml: unknown key [plugins.{PLUGIN}] {unknown[0]} "
            f'(known: a [plugins.{PLUGIN}.deployments] table of "deployment-name" = "model")'
        )
    table = block.get("deployments", {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"config.toml: [plugins.{PLUGIN}] deployments must be a table of \"deployment-name\" = \"model\" "
            f'(e.g. [plugins.{PLUGIN}.deployments] then my-gpt = "gpt-4o"), not {type(table).__name__}'
        )
    mapping: dict[str, str] = {}
    for name, model in table.items():
        if not isinstance(model, str) or _MODEL_NAME.fullmatch(model) is None:
            raise ConfigError(
                f"config.toml: [plugins.{PLUGIN}.deployments] {name} must be a model name such as \"gpt-4o\" "
                f"(letters, digits and . _ : / @ + -), not {model!r}"
            )
        mapping[str(name)] = model
    return mapping


# --------------------------------------------------------------------------------------------------
# parsers
# --------------------------------------------------------------------------------------------------


def _filtered(results: Any) -> bool:
    """A content-filter annotation (a dict of categories, or a list of per-prompt results) that blocked
    something (`"filtered": true`)."""
    if isinstance(results, list):
        return any(_filtered(item.get("content_filter_results")) for item in results if isinstance(item, dict))
    if isinstance(results, dict):
        return any(isinstance(v, dict) and v.get("filtered") is True for v in results.values())
    return False


def _note_content_filter(outcome: ParseOutcome, document: dict[str, Any]) -> None:
    flagged = _filtered(document.get("prompt_filter_results")) or _filtered(document.get("prompt_annotations"))
    for choice in document.get("choices") or ():
        if isinstance(choice, dict) and _filtered(choice.get("content_filter_results")):
            flagged = True
    if flagged:
        outcome.extra["content_filtered"] = True


def _price_as(outcome: ParseOutcome, request: RequestFacts) -> None:
    """`extra["price_as"]` for a call with usage: the deployment's configured model, else the reported one."""
    if not (outcome.usage_reported or outcome.estimated):
        return
    mapped = request.extra.get("deployment_model")
    model = mapped if isinstance(mapped, str) and mapped else outcome.model
    if model:
        outcome.extra["price_as"] = model if "/" in model else f"openai/{model}"


class AzureChatParser(ChatParser):
    """Chat Completions as Azure writes them: empty `id`/`model` in the content-filter chunk that opens a
    stream are not values, and a blocked prompt or completion is noted (`extra["content_filtered"]`)."""

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("model") == "" or chunk.get("id") == "":
            chunk = {k: v for k, v in chunk.items() if not (k in ("model", "id") and v == "")}
        _note_content_filter(self.outcome, chunk)
        super().on_chunk(chunk)

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and not isinstance(document, PartialDocument):
            _note_content_filter(self.outcome, document)

    def finish(self, eof: bool) -> ParseOutcome:
        outcome = super().finish(eof)
        _price_as(outcome, self.request)
        return outcome


class AzureResponsesParser(ResponsesParser):
    def finish(self, eof: bool) -> ParseOutcome:
        outcome = super().finish(eof)
        _price_as(outcome, self.request)
        return outcome


class AzureEmbeddingsParser(EmbeddingsParser):
    def finish(self, eof: bool) -> ParseOutcome:
        outcome = super().finish(eof)
        _price_as(outcome, self.request)
        return outcome


# --------------------------------------------------------------------------------------------------
# the provider
# --------------------------------------------------------------------------------------------------


STREAM_OPTIONS_SINCE = "2024-09-01"
"""The first api-version (2024-09-01-preview; GA from 2024-10-21) whose chat streams take `stream_options`."""


def takes_stream_options(query: str) -> bool:
    """Whether the request's `api-version` (`2024-10-21`, `2025-01-01-preview`) accepts `stream_options`."""
    from urllib.parse import parse_qs

    versions = parse_qs(query).get("api-version") or [""]
    version = versions[0][:10]
    return len(version) == 10 and version >= STREAM_OPTIONS_SINCE


class AzureOpenAIProvider(OpenAICompatibleProvider):
    """The OpenAI API under Azure's hosts: the deployment form, the v1 API and Foundry's extra surfaces."""

    chat_parser_class = AzureChatParser
    responses_parser_class = AzureResponsesParser
    embeddings_parser_class = AzureEmbeddingsParser

    def __init__(self, deployments: Mapping[str, str] | None = None, include_usage: str = "inject") -> None:
        super().__init__(id="provider.azure-openai", name=PLUGIN, hosts=HOSTS, price_provider_id="azure",
                         path_prefix="/openai/v1", include_usage=include_usage)
        self.deployments = dict(deployments or {})

    def route(self, method: str, path: str) -> Endpoint | None:
        path = unquote(path).rstrip("/")
        if method != "POST":
            return OTHER
        deployment = _DEPLOYMENT.match(path)
        if deployment is not None:
            rest = deployment["rest"]
            if rest.startswith(_PAID_UNREAD_PREFIXES):
                return USAGE_NOT_READ
            return _DEPLOYMENT_ROUTES.get(rest, OTHER)
        if path.startswith(self.path_prefix + "/"):
            return _V1_ROUTES.get(path[len(self.path_prefix) :], OTHER)
        return _OTHER_ROUTES.get(path, OTHER)

    inspect_query = True

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        path, _, query = path.partition("?")
        facts = super().inspect_request(endpoint, path, body, headers)
        match = _DEPLOYMENT.match(unquote(path).rstrip("/"))
        deployment = match["deployment"] if match is not None else None
        if facts.model_requested is None:
            facts.model_requested = deployment
        mapped = self.deployments.get(deployment or facts.model_requested or "")
        if mapped:
            facts.extra["deployment_model"] = mapped
        if (
            match is not None
            and endpoint.kind == CHAT.kind
            and facts.stream_requested
            and not facts.extra.get("include_usage")
            and "prompt_text_bytes" not in facts.extra
            and not takes_stream_options(query)
        ):
            # The deployment form on an api-version that predates `stream_options`: usage is not asked for
            # on the client's behalf (module docstring), so a stream whose client did not ask is estimated.
            data = request_json(body)
            messages = data.get("messages") if isinstance(data, dict) else None
            if not isinstance(data, PartialDocument) or messages is not None:
                facts.extra["prompt_text_bytes"] = message_text_bytes(messages)
        return facts

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is MESSAGES:
            return anthropic.MessagesParser(endpoint, request, status, content_type)
        if endpoint is CLAUDE_COUNT_TOKENS:
            return anthropic.CountTokensParser(endpoint, request, status, content_type,
                                               error_type_of=anthropic.error_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type, error_type_of=error_type)
        if endpoint is OTHER:
            return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)
        return super().response_parser(endpoint, request, status, content_type)


@hookimpl
def halton_configure(config: PluginConfig) -> None:
    """Validate `[plugins.azure-openai]` when the configuration is read (a bad block stops the command)."""
    deployments_mapping(config)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(AzureOpenAIProvider(deployments=deployments_mapping(config), include_usage=include_usage_mode(config)))
