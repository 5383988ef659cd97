from __future__ import annotations

import os
import sys

import click

from halton_meter.config import load_config, valid_project_name
from halton_meter.errors import ExitCode, HaltonError, NotRunningError
from halton_meter.serve.runtime import metering_env, require_running


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--shell", "shell", is_flag=True, help="Start an interactive shell ($SHELL) with metering on.")
@click.option("--project", "project", metavar="NAME", default=None,
              help="Attribute every call of COMMAND and its child processes to project NAME.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[--] COMMAND [ARGS]...")
def command(shell: bool, project: str | None, argv: tuple[str, ...]) -> int:
    """Run COMMAND (or, with --shell, a shell) with its LLM API calls metered.

    Sets HTTPS_PROXY/HTTP_PROXY to the running meter and points SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE and NODE_EXTRA_CA_CERTS at a bundle that trusts the meter's CA. Only hosts of known
    providers are read; everything else is tunnelled untouched. If the meter's core is down the command
    still runs (its calls pass through, unmetered) and you are warned. Exits with COMMAND's exit code.
    """
    from halton_meter import terminal
    from halton_meter.lifecycle.services import probe

    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if shell and args:
        raise click.UsageError("give either --shell or a command, not both")
    if not shell and not args:
        raise click.UsageError("give a command to run, e.g. halton-meter run -- claude (or --shell)")
    if project is not None:
        project = project.strip()
        if not valid_project_name(project):
            raise click.UsageError(f"--project {project!r}: a project name is 1-100 characters, without slashes "
                                   "or control characters, e.g. --project acme-api")
    config = load_config()
    try:
        runtime: dict[str, object] | None = require_running(config.paths)
    except NotRunningError:
        runtime = None  # fail open: the user's tool runs, unmetered, and says so once
        terminal.warn(f"no meter is running for {config.paths.home}: running this command UNMETERED; start the "
                      "meter with `halton-meter start`")
    if runtime is not None and not probe(config.paths).core:
        terminal.warn("the meter's core is not running: this command's calls pass through UNMETERED "
                      "(see `halton-meter status`)")
    env = {**os.environ, **(metering_env(runtime, project) if runtime is not None else {})}
    if shell:
        env["HALTON_METER_ACTIVE"] = "1"
        args = [os.environ.get("SHELL") or "/bin/sh"]
        for_project = f", project {project}" if project else ""
        if runtime is not None:
            terminal.line(f"metering on for this shell (proxy 127.0.0.1:{runtime['edge_port']}{for_project}); "
                          "`exit` to leave")
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
