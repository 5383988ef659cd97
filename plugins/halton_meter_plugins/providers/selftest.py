"""The self-test canary: a host that never resolves, answered by the core itself.

`init`'s last step and `doctor --curl` send a real HTTPS request through the edge and the core to
`https://selftest.halton-meter.invalid/v1/selftest` and then look for its record. The core answers it
without any upstream (no internet needed); the record's `endpoint_kind` is `self_test`, so reports leave it
out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping

from halton_meter.plugin import (
    CANARY_HOST,
    CANARY_PATH,
    Endpoint,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
)
from halton_meter_plugins.providers._common import json_request_facts
from halton_meter_plugins.providers.openai import ChatParser

SELF_TEST = Endpoint("self_test", billable=False, inference=False)


class SelfTestProvider(Provider):
    id = "provider.selftest"
    name = "selftest"
    hosts = (CANARY_HOST,)

    def route(self, method: str, path: str) -> Endpoint | None:
        return SELF_TEST if path == CANARY_PATH else None

    def inspect_request(self, endpoint: Endpoint, path: str, body: bytes,
                        headers: Mapping[str, str] | None = None) -> RequestFacts:
        facts = json_request_facts(body)
        facts.model_requested = facts.model_requested or "halton-meter-selftest"
        return facts

    def answer_locally(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if path != CANARY_PATH:
            return None
        answer = {"id": f"selftest-{uuid.uuid4()}", "object": "chat.completion", "model": "halton-meter-selftest",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return 200, {"content-type": "application/json", "x-halton-meter": "selftest"}, json.dumps(answer).encode()

    def response_parser(self, endpoint: Endpoint, request: RequestFacts, status: int,
                        content_type: str) -> ResponseParser:
        return ChatParser(endpoint, request, status, content_type)

    def describe(self) -> str:
        return f"{self.name}: {CANARY_HOST} (answered by the core itself)"


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(SelfTestProvider())
