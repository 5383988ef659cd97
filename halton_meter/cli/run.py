from __future__ import annotations

import os
import sys

import click

from halton_meter.config import load_config
from halton_meter.errors import ExitCode, HaltonError
from halton_meter.runtime import metering_env, require_running


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[--] COMMAND [ARGS]...")
def command(argv: tuple[str, ...]) -> int:
    """Run COMMAND with its LLM API calls metered.

    Sets HTTPS_PROXY/HTTP_PROXY to the running meter and points SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE and NODE_EXTRA_CA_CERTS at a bundle that trusts the meter's CA. Only hosts of known
    providers are read; everything else is tunnelled untouched. Exits with COMMAND's exit code.
    """
    config = load_config()
    runtime = require_running(config.paths)
    env = {**os.environ, **metering_env(runtime)}
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise click.UsageError("give a command to run, e.g. halton-meter run -- claude")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(args[0], args, env)
    except FileNotFoundError:
        raise HaltonError(f"command not found: {args[0]}", exit_code=ExitCode.COMMAND_NOT_FOUND) from None
    except PermissionError:
        raise HaltonError(f"command not executable: {args[0]}",
                          exit_code=ExitCode.COMMAND_NOT_EXECUTABLE) from None
    except OSError as exc:
        raise HaltonError(f"cannot run {args[0]}: {exc.strerror}",
                          exit_code=ExitCode.COMMAND_NOT_EXECUTABLE) from None
    return 0  # not reached: exec replaced this process
