"""Redaction of credential-shaped strings, for the only place bodies are ever stored: opt-in capture."""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_PATTERNS = [
    r"sk-ant-[A-Za-z0-9_\-]{8,}",  # Anthropic keys and OAuth tokens
    r"sk-(?:proj|svcacct|admin|or-v1)-[A-Za-z0-9_\-]{8,}",  # OpenAI project/service keys, OpenRouter
    r"sk-[A-Za-z0-9]{20,}",  # classic OpenAI, DeepSeek
    r"xai-[A-Za-z0-9]{20,}",
    r"gsk_[A-Za-z0-9]{20,}",
    r"AIza[0-9A-Za-z_\-]{30,}",  # Google API keys
    r"ya29\.[0-9A-Za-z_\-]{20,}",  # Google OAuth access tokens
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs (ChatGPT sign-in)
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens pasted into prompts
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
]
_TOKEN = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}")
_ASSIGNMENT = re.compile(
    r"""(?i)((?:api[_-]?key|access[_-]?token|secret|password|passwd|authorization)["']?\s*[:=]\s*["']?)"""
    r"""[^\s"',}]{6,}"""
)


def redact(text: str) -> str:
    text = _TOKEN.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
