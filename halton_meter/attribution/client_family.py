"""Which tool made a call: a short, stable family name (`claude-code`, `anthropic-sdk-python`, `curl`).

Two sources, combined by `client_family`:

* the process (its name and command line): recognises the coding tools themselves, whatever HTTP library
  they use — Claude Code is a Node program that shows up as `claude` or as `node …/claude-code/cli.js`;
* the request's User-Agent: recognises the tools that announce themselves, then SDKs, then HTTP libraries.

A coding tool named by either source wins over an SDK or a library (Cursor's extension host calling the
OpenAI Node SDK is `cursor`, not `openai-sdk-node`). Nothing here is stored except the resulting name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

# Coding tools, recognised in the User-Agent (case-insensitive regex → family).
_UA_TOOLS: tuple[tuple[str, str], ...] = (
    (r"^claude-cli/|claude-code", "claude-code"),
    (r"^codex_cli_rs/|^codex[-_ ]|openai-codex", "codex"),
    (r"^GeminiCLI/|gemini-cli", "gemini-cli"),
    (r"\bCursor/", "cursor"),
    (r"\bWindsurf/", "windsurf"),
    (r"\bZed/", "zed"),
    (r"\baider/", "aider"),
    (r"^opencode/", "opencode"),
)

# SDKs and HTTP libraries, in the User-Agent.
_UA_LIBRARIES: tuple[tuple[str, str], ...] = (
    (r"^Anthropic/Python\b", "anthropic-sdk-python"),
    (r"^Anthropic/JS\b", "anthropic-sdk-node"),
    (r"^Anthropic/", "anthropic-sdk"),
    (r"^OpenAI/Python\b", "openai-sdk-python"),
    (r"^OpenAI/JS\b", "openai-sdk-node"),
    (r"^OpenAI/", "openai-sdk"),
    (r"google-genai-sdk/.*gl-python", "google-genai-python"),
    (r"google-genai-sdk/.*gl-node", "google-genai-node"),
    (r"google-genai-sdk/", "google-genai"),
    (r"google-api-python-client|gl-python/", "google-sdk-python"),
    (r"^curl/", "curl"),
    (r"^Wget/", "wget"),
    (r"^python-httpx/", "httpx"),
    (r"^python-requests/", "python-requests"),
    (r"\baiohttp/", "aiohttp"),
    (r"^Python-urllib/", "python-urllib"),
    (r"^Go-http-client/", "go"),
    (r"^undici\b|^node(-fetch)?\b|^node/", "node"),
    (r"^axios/", "axios"),
    (r"^okhttp/", "okhttp"),
    (r"^reqwest/", "reqwest"),
    (r"^PostmanRuntime/", "postman"),
    (r"^HTTPie/", "httpie"),
)

# Coding tools, by process name (lower-cased, extension dropped) or by a command-line argument.
_PROCESS_TOOLS: dict[str, str] = {
    "claude": "claude-code",
    "codex": "codex",
    "gemini": "gemini-cli",
    "cursor": "cursor",
    "cursor helper": "cursor",
    "cursor helper (plugin)": "cursor",
    "windsurf": "windsurf",
    "zed": "zed",
    "aider": "aider",
    "opencode": "opencode",
}
_CMDLINE_TOOLS: tuple[tuple[str, str], ...] = (
    (r"@anthropic-ai[/\\]claude-code|[/\\]claude-code[/\\]cli\.(m?js)", "claude-code"),
    (r"@openai[/\\]codex|[/\\]codex-cli[/\\]", "codex"),
    (r"@google[/\\]gemini-cli", "gemini-cli"),
    (r"[/\\]Cursor(\.app|[/\\]resources)|[/\\]cursor[/\\]resources[/\\]app", "cursor"),
    (r"[/\\]bin[/\\]aider$", "aider"),
)

_COMPILED_UA_TOOLS = [(re.compile(p, re.IGNORECASE), name) for p, name in _UA_TOOLS]
_COMPILED_UA_LIBRARIES = [(re.compile(p, re.IGNORECASE), name) for p, name in _UA_LIBRARIES]
_COMPILED_CMDLINE = [(re.compile(p, re.IGNORECASE), name) for p, name in _CMDLINE_TOOLS]


def tool_from_process(name: str | None, cmdline: Sequence[str] = ()) -> str | None:
    """The coding tool a process is, from its name or (for interpreters like `node`) its arguments."""
    if name:
        base = name.strip().lower().removesuffix(".exe")
        if base in _PROCESS_TOOLS:
            return _PROCESS_TOOLS[base]
    for arg in list(cmdline)[:2]:  # the program and its script; never the user's own arguments
        for pattern, family in _COMPILED_CMDLINE:
            if pattern.search(arg):
                return family
        base = os.path.basename(arg.replace("\\", "/")).lower().removesuffix(".exe")
        if base in _PROCESS_TOOLS:
            return _PROCESS_TOOLS[base]
    return None


def tool_from_user_agent(user_agent: str | None) -> str | None:
    if user_agent:
        for pattern, family in _COMPILED_UA_TOOLS:
            if pattern.search(user_agent):
                return family
    return None


def library_from_user_agent(user_agent: str | None) -> str | None:
    if user_agent:
        for pattern, family in _COMPILED_UA_LIBRARIES:
            if pattern.search(user_agent):
                return family
    return None


def client_family(user_agent: str | None, process_tool: str | None = None,
                  process_name: str | None = None) -> str | None:
    """The family name for a call: a tool (by User-Agent, then by process), else the SDK or library the
    User-Agent names, else the process name, else None."""
    return (tool_from_user_agent(user_agent) or process_tool or library_from_user_agent(user_agent)
            or _generic(user_agent) or (process_name.lower() if process_name else None))


def _generic(user_agent: str | None) -> str | None:
    """An unknown User-Agent's product token, lower-cased, without its version (`MyTool/1.2` → `mytool`)."""
    if not user_agent:
        return None
    match = re.match(r"\s*([A-Za-z][\w.+-]{0,39})", user_agent)
    return match.group(1).lower() if match else None
