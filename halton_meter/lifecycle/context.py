"""Building the lifecycle context every lifecycle command shares (init, start, stop, status, uninstall)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from halton_meter.config import Config, load_config
from halton_meter.errors import HaltonError
from halton_meter.host import PluginHost
from halton_meter.lifecycle.commands import CommandRunner, SystemRunner
from halton_meter.lifecycle.init import InitContext, InitOptions
from halton_meter.lifecycle.platforms import detect_platform
from halton_meter.lifecycle.state import SystemState
from halton_meter.types import PlatformInfo

STATE_FILE = "system_state.json"


def state_path(config: Config) -> Path:
    return config.paths.home / STATE_FILE


def build_context(
    options: InitOptions | None = None,
    *,
    config: Config | None = None,
    host: PluginHost | None = None,
    runner: CommandRunner | None = None,
    platform: PlatformInfo | None = None,
    user_home: Path | None = None,
) -> tuple[InitContext, PluginHost]:
    config = config or load_config()
    host = host or PluginHost(config).load()
    runner = runner or SystemRunner()
    platform = platform or detect_platform(runner)
    installer: Any = host.hook.halton_platform_installer(platform=platform)
    if installer is None:
        raise HaltonError(f"no installer plugin handles this platform ({platform.system}); "
                          "see `halton-meter plugins` for one that failed to load")
    ctx = InitContext(
        paths=config.paths,
        config=config,
        options=options or InitOptions(),
        runner=runner,
        installer=installer,
        platform=platform,
        user_home=user_home or Path.home(),
        state=SystemState.load(state_path(config)),
    )
    return ctx, host
