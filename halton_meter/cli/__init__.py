"""The `halton-meter` command line: one module per command, loaded only when that command runs.

`main` is the only place exceptions turn into exit codes: a `HaltonError` prints its one line, click's
usage errors print theirs (exit 2), and anything else is a bug — one line naming the crash log, exit 70.
Bare `halton-meter` prints the help (exit 0); an unknown command names the closest one (exit 2).
"""

from __future__ import annotations

import datetime
import importlib
import sys
import traceback
from typing import Any

import click

from halton_meter import __version__
from halton_meter.errors import EXIT_CODE_HELP, ExitCode, HaltonError

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help shown in `--help` without importing the module)
    "init": ("halton_meter.cli.init", "Set the meter up (env-only, --apps or --full), start it and self-test."),
    "demo": ("halton_meter.cli.demo", "Try it without a provider: a throwaway meter, a local fake provider, real calls, the report."),
    "start": ("halton_meter.cli.start", "Start the meter through its service."),
    "stop": ("halton_meter.cli.stop", "Stop the meter."),
    "restart": ("halton_meter.cli.restart", "Restart the meter (same port)."),
    "reload": ("halton_meter.cli.reload", "Check config.toml and wait until the running meter has taken it."),
    "status": ("halton_meter.cli.status", "HEALTHY / DEGRADED / BROKEN, with a row per component."),
    "uninstall": ("halton_meter.cli.uninstall", "Undo everything init changed (keeps your calls)."),
    "reset-proxy": ("halton_meter.cli.reset_proxy", "Emergency: stop routing apps through the meter."),
    "logs": ("halton_meter.cli.logs", "Show (or follow) the meter's logs."),
    "serve": ("halton_meter.cli.serve", "Run the meter (edge, core, API) in the foreground."),
    "run": ("halton_meter.cli.run", "Run a command with its LLM calls metered."),
    "calls": ("halton_meter.cli.calls", "List recorded calls (filters; --follow for a live tail)."),
    "dashboard": ("halton_meter.cli.dashboard", "Open the dashboard in your browser, signed in (a one-time link)."),
    "report": ("halton_meter.cli.report", "Cost, tokens, cache savings and latency, by project, model, tool, …"),
    "budgets": ("halton_meter.cli.budgets", "Spend caps: spent, limit and state of each budget; override one for a while."),
    "sync": ("halton_meter.cli.sync", "Push your rows to the team's Postgres; status, now, backfill."),
    "plan": ("halton_meter.cli.plan", "Your Claude and ChatGPT plan limits: used, reset, pace, and which project used them."),
    "blocks": ("halton_meter.cli.blocks", "Past 5-hour plan windows: calls, tokens, API-equivalent cost, peak use."),
    "statusline": ("halton_meter.cli.statusline", "One line for Claude Code's status line: session, today, month, plan."),
    "projects": ("halton_meter.cli.projects", "Projects with their calls, cost and where attribution came from."),
    "retag": ("halton_meter.cli.retag", "Move past calls from one project to another."),
    "key-fingerprint": ("halton_meter.cli.key_fingerprint", "Print the fingerprint of an API key (to name it in [keys])."),
    "plugins": ("halton_meter.cli.plugins", "List loaded plugins and what they provide."),
    "prices": ("halton_meter.cli.prices", "Show what the meter charges for a model, and the price source."),
    "reprice": ("halton_meter.cli.reprice", "Recompute stored costs with current prices; report changes."),
    "import": ("halton_meter.cli.import_cmd", "Import past calls from Claude Code's or Codex's own usage logs."),
    "doctor": ("halton_meter.cli.doctor", "Check the setup read-only; say exactly what is off and how to fix it."),
}

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODE_HELP.items())


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # bare `halton-meter`: the help, and success
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        name = args[0]
        if name in COMMANDS or name.startswith("-") or ctx.resilient_parsing:
            return super().resolve_command(ctx, args)
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise click.UsageError(f"No such command {name!r}.{hint}", ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`, importing the schema only when asked (every other command starts without it)."""
    if not value or ctx.resilient_parsing:
        return
    from halton_meter.store.schema import LATEST_VERSION

    click.echo(f"halton-meter, version {__version__} (database schema v{LATEST_VERSION})")
    ctx.exit()


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the database schema it writes, and exit.")
def cli() -> None:
    """Halton Meter: know what your AI coding tools cost.

    A local HTTPS proxy that meters every LLM API call your tools make and writes one row per call,
    with tokens and cost, to a SQLite file on this machine. Data lives in $HALTON_METER_HOME
    (default ~/.halton-meter).
    """


def _crash_log(exc: BaseException) -> str | None:
    try:
        from halton_meter.paths import Paths, ensure_private_dir

        logs = ensure_private_dir(Paths.from_env().logs)
        path = logs / f"crash-{datetime.datetime.now():%Y%m%d-%H%M%S}.log"
        path.write_text("".join(traceback.format_exception(exc)))
        return str(path)
    except Exception:
        return None


def _os_problem(exc: OSError) -> str:
    """One line for an OSError from the environment: the read-only or full disk named, with the fix."""
    from halton_meter.paths import WRITABLE_FIX, Paths, writable_problem

    where = f" {exc.filename}" if exc.filename else ""
    problem = writable_problem(Paths.from_env().home) if exc.errno in (30, 13, 1, 28) else None
    if problem is not None:
        return f"cannot write{where}: {problem}; {WRITABLE_FIX}"
    return (f"cannot use{where}: {exc.strerror or exc}; make sure HALTON_METER_HOME (default ~/.halton-meter) is "
            "a writable local directory")


def _database_problem(exc: BaseException) -> str | None:
    """One line for an SQLite error reaching the top (directly or wrapped by SQLAlchemy), else None."""
    import sqlite3

    error = exc if isinstance(exc, sqlite3.DatabaseError) else getattr(exc, "orig", None)
    if not isinstance(error, sqlite3.DatabaseError):
        return None
    from halton_meter.paths import WRITABLE_FIX, Paths, writable_problem

    db = Paths.from_env().db
    text = str(error).lower()
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        problem = writable_problem(db.parent)
        if problem is not None:
            return f"cannot write the database {db}: {problem}; {WRITABLE_FIX}"
    return (f"cannot read the database {db} ({error}); the file may be damaged: "
            "`halton-meter doctor` checks it and says what to do")


def main(argv: list[str] | None = None) -> None:
    try:
        result: Any = cli.main(args=argv, prog_name="halton-meter", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        print(f"halton-meter: error: {exc.format_message()}{hint}", file=sys.stderr)
        code = exc.exit_code
    except click.exceptions.Abort:
        code = 130
    except HaltonError as exc:
        from halton_meter import terminal

        terminal.error(exc.message)
        code = int(exc.exit_code)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except OSError as exc:  # the environment, not a bug: a read-only or full disk, a missing directory
        print(f"halton-meter: error: {_os_problem(exc)}", file=sys.stderr)
        code = int(ExitCode.FAILURE)
    except Exception as exc:  # a traceback is a bug: say so in one line and keep the details
        damaged = _database_problem(exc)
        if damaged is not None:  # a file damaged under us (truncated, overwritten): the user's to fix, exit 3
            print(f"halton-meter: error: {damaged}", file=sys.stderr)
            sys.exit(int(ExitCode.DATABASE))
        where = _crash_log(exc)
        detail = f"; details in {where}" if where else ""
        print(f"halton-meter: internal error: {type(exc).__name__}: {exc}{detail}", file=sys.stderr)
        code = int(ExitCode.INTERNAL)
    sys.exit(code)
