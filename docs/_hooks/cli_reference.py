"""MkDocs hook: pages generated from the code at build time, so they cannot drift from it.

* `reference/cli.md`: every command in `halton_meter.cli.COMMANDS`, rendered from its click command
  (usage, help text, arguments and options), replacing the `<!-- generated:cli -->` marker.
* `plugins/hooks.md`: every hook in `halton_meter.hookspecs`, with its signature, kind and docstring,
  replacing the `<!-- generated:hooks -->` marker.

Wired in through `hooks:` in mkdocs.yml; it needs nothing beyond MkDocs and an installed Halton Meter.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap

import click

CLI_MARKER = "<!-- generated:cli -->"
HOOKS_MARKER = "<!-- generated:hooks -->"


def _usage(command: click.Command, name: str) -> str:
    # The same help options as the real CLI's group: click caches a command's help option on first use, so
    # a context without them would strip `-h` from every later `--help` in this process.
    ctx = click.Context(command, info_name=f"halton-meter {name}", help_option_names=["-h", "--help"])
    pieces = command.collect_usage_pieces(ctx)
    return " ".join([f"halton-meter {name}", *pieces])


def _param_row(param: click.Parameter) -> tuple[str, str]:
    if isinstance(param, click.Argument):
        names = f"`{param.human_readable_name}`"
        text = "argument" + ("" if param.required else " (optional)") + (", repeatable" if param.nargs == -1 else "")
        return names, text
    assert isinstance(param, click.Option)
    opts = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    if not param.is_flag and param.metavar:
        opts += f" `{param.metavar}`"
    elif not param.is_flag and not param.count:
        type_name = param.type.name.upper().removesuffix(" RANGE") if param.type.name else "VALUE"
        if isinstance(param.type, click.Choice):
            type_name = "|".join(str(c) for c in param.type.choices)
        opts += f" `{type_name}`"
    text = (param.help or "").replace("\n", " ").replace("|", "\\|")
    extras = []
    if param.multiple:
        extras.append("repeatable")
    if param.show_default and param.default not in (None, False, ()):
        extras.append(f"default: `{param.default}`")
    if extras:
        text = f"{text} ({'; '.join(extras)})" if text else "; ".join(extras)
    return opts, text


def _help_markdown(command: click.Command) -> str:
    help_text = inspect.cleandoc(command.help or "")
    # click's `\b` marks a paragraph not to rewrap: keep those as preformatted blocks.
    blocks = []
    for paragraph in help_text.split("\n\n"):
        if paragraph.startswith("\b"):
            blocks.append("```text\n" + paragraph.lstrip("\b").strip("\n") + "\n```")
        else:
            blocks.append(" ".join(line.strip() for line in paragraph.splitlines()))
    return "\n\n".join(block for block in blocks if block)


def render_cli() -> str:
    from halton_meter.cli import COMMANDS

    out = []
    for name in sorted(COMMANDS):
        module_name, summary = COMMANDS[name]
        command = importlib.import_module(module_name).command
        out.append(f"### `{name}`\n")
        out.append(f"{summary}\n")
        out.append(f"```text\n{_usage(command, name)}\n```\n")
        help_md = _help_markdown(command)
        if help_md:
            out.append(help_md + "\n")
        rows = [_param_row(p) for p in command.params if not getattr(p, "hidden", False)]
        rows.append(("`-h`, `--help`", "Show the command's help and exit."))
        out.append("| argument / option | meaning |\n|---|---|")
        out.extend(f"| {names} | {text} |" for names, text in rows)
        out.append("")
    return "\n".join(out)


def render_hooks() -> str:
    from halton_meter import hookspecs

    out = []
    for name, func in list(vars(hookspecs).items()):  # definition order: the module is grouped by phase
        if not inspect.isfunction(func):
            continue
        opts = getattr(func, f"{hookspecs.PROJECT}_spec", None)
        if opts is None:
            continue
        kind = "historic" if opts.get("historic") else "first result wins" if opts.get("firstresult") else "every implementation is called"
        signature = str(inspect.signature(func)).replace("'", "")
        out.append(f"## `{name}`\n")
        out.append(f"```python\ndef {name}{signature}\n```\n")
        out.append(f"*Kind:* {kind}.\n")
        out.append(textwrap.dedent(inspect.cleandoc(func.__doc__ or "")) + "\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs hook signature
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    if HOOKS_MARKER in markdown:
        markdown = markdown.replace(HOOKS_MARKER, render_hooks())
    return markdown
