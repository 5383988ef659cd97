from __future__ import annotations

import sys

import click


@click.command("statusline")
@click.option("--format", "template", metavar="TEMPLATE", default=None,
              help="The line to print, with placeholders: {session} {today} {month} {project} {plan} {5h} {7d} "
                   "{model} (and any plan window, e.g. {7d_opus}); missing values are empty, and a ` · `-separated "
                   "piece whose placeholders are all empty is left out. Default: "
                   "'{session} session · {today} today · {project} {month} month · {plan}'.")
def command(template: str | None) -> None:
    """Print one line for Claude Code's status line: session, today, project month-to-date, plan windows.

    Put it in ~/.claude/settings.json:

    \b
        {"statusLine": {"type": "command", "command": "halton-meter statusline"}}

    Claude Code runs it after each message with a JSON object on standard input (its session id, model,
    directory). It reads the meter's database directly, read-only, so it works with the meter stopped, and
    never prompts. Money is what the calls cost at API list price, calls covered by a subscription
    included. Plan windows show use and reset time (red at 90% or rejected, yellow at 75%; no colour when
    NO_COLOR is set). It always exits 0: a problem is printed as the line itself.

    Example: echo '{"session_id": "abc"}' | halton-meter statusline --format '{today} today · {plan}'
    """
    from halton_meter.statusline import main

    sys.exit(main([] if template is None else ["--format", template]))
