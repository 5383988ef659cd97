"""`--help` of every command, and the top-level command list against `halton_meter.cli.COMMANDS`.

The top-level help lists each command with the one-line summary from `COMMANDS` (so `--help` imports no
command module); every command's own `--help` must work and carry its own description."""

from __future__ import annotations

import importlib
import re

import pytest

from halton_meter.cli import COMMANDS

NAMES = sorted(COMMANDS)


def listed_commands(help_text: str) -> dict[str, str]:
    """The `Commands:` section of a help page as {name: summary}, wrapped lines joined."""
    section = help_text.split("\nCommands:\n", 1)[1]
    listed: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        if not line.strip():
            break
        entry = re.match(r"^  (\S+)\s{2,}(.*)$", line)
        if entry:
            name, summary = entry.groups()
            listed[name] = summary.strip()
        elif name is not None and line.startswith("   "):
            listed[name] += " " + line.strip()
        else:
            break
    return listed


def test_the_top_level_help_lists_every_command_with_its_summary(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0 and result.stderr == ""
    listed = listed_commands(result.stdout)
    assert list(listed) == NAMES  # every command, sorted, nothing else
    assert listed == {name: " ".join(COMMANDS[name][1].split()) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_every_command_has_help(cli, name: str) -> None:
    module, summary = COMMANDS[name]
    command = importlib.import_module(module).command
    assert command.name == name, f"{module} defines `{command.name}`, listed as `{name}`"
    assert summary.strip() and "\n" not in summary and summary.endswith((".", "…")), "one line, one sentence"
    result = cli(name, "--help")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: halton-meter {name}")
    description = " ".join((command.help or "").split("\n\n")[0].split())
    assert description, f"`{name}` has no description of its own"
    assert description[:60] in " ".join(result.stdout.split())
    assert "-h, --help" in result.stdout


@pytest.mark.parametrize("name", NAMES)
def test_help_needs_no_home_and_no_running_meter(cli, name: str, tmp_path, monkeypatch) -> None:
    home = tmp_path / "never-created"
    monkeypatch.setenv("HALTON_METER_HOME", str(home))
    assert cli(name, "-h").exit_code == 0
    assert not home.exists()
