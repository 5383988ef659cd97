"""What Linux installers share: CA trust (system store only on request) and the environment for GUI apps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from halton_meter.plugin import InitContext, user_config_dir

SYSTEM_CA_PATH = Path("/usr/local/share/ca-certificates/halton-meter.crt")
ENV_FILE = "60-halton-meter.conf"


def trust_ca(ctx: InitContext) -> bool:
    """Linux has no per-user trust store that every client reads. Clients get our CA through the bundle
    (`run` and the apps-mode variables point at it). The system store only with `--trust-system`, and
    then visibly through sudo, never silently."""
    if not ctx.options.trust_system:
        ctx.notes.append("Linux has no per-user trust store; clients trust the meter through the CA bundle "
                         "(add --trust-system to also trust it system-wide, with sudo)")
        return False
    sudo = ["sudo", "-n"] if ctx.options.non_interactive else ["sudo"]
    ctx.run([*sudo, "install", "-m", "0644", str(ctx.paths.ca_cert), str(SYSTEM_CA_PATH)],
            undo=[[*sudo, "rm", "-f", str(SYSTEM_CA_PATH)], [*sudo, "update-ca-certificates", "--fresh"]],
            description="install the CA in the system store")
    ctx.run([*sudo, "update-ca-certificates"])
    return True


def environment_d(ctx: InitContext, env: Mapping[str, str]) -> Path:
    """`~/.config/environment.d/`: read by the systemd user manager for graphical sessions at login."""
    path = user_config_dir(ctx.user_home) / "environment.d" / ENV_FILE
    lines = ["# Written by `halton-meter init --apps`; removed by `halton-meter uninstall`."]
    lines += [f"{key}={value}" for key, value in env.items()]
    ctx.write_file(path, "\n".join(lines) + "\n", mode=0o644)
    return path
