"""`[plugins.openai]`: `include_usage = "inject" | "off"`, read from the configuration the register hook
is handed (never from a module global: the last host built in a process must not decide for the others)."""

from __future__ import annotations

from halton_meter.plugin import ConfigError, PluginConfig

INCLUDE_USAGE_MODES = ("inject", "off")
DEFAULT_INCLUDE_USAGE = "inject"


def checked_include_usage(mode: object) -> str:
    """`mode` when it is one of `INCLUDE_USAGE_MODES`; ConfigError (one line: the key and the fix) otherwise."""
    if not isinstance(mode, str) or mode not in INCLUDE_USAGE_MODES:
        raise ConfigError(
            f'config.toml: [plugins.openai] include_usage must be "inject" or "off", not {mode!r}'
        )
    return mode


def include_usage_mode(config: PluginConfig | None) -> str:
    """`inject` (ask for usage on the client's behalf and hide the extra chunk) or `off` (estimate), from
    `[plugins.openai] include_usage` (the default, `inject`, without a config or a block). Every
    OpenAI-compatible provider follows this one setting; ConfigError when the block is invalid."""
    if config is None:
        return DEFAULT_INCLUDE_USAGE
    block = config.plugin_config("openai")
    unknown = sorted(set(block) - {"include_usage"})
    if unknown:
        raise ConfigError(
            f"config.toml: unknown key [plugins.openai] {unknown[0]} (known: include_usage = \"inject\" | \"off\")"
        )
    return checked_include_usage(block.get("include_usage", DEFAULT_INCLUDE_USAGE))
