"""CLI behaviour that needs no running meter: help, version, empty data, argument errors, crash handling."""

from __future__ import annotations

import json

import pytest

from halton_meter import __version__
from halton_meter.errors import EXIT_CODE_HELP, ExitCode


def test_version(cli) -> None:
    result = cli("--version")
    from halton_meter.store.schema import LATEST_VERSION

    assert result.exit_code == 0
    assert result.stdout.strip() == f"halton-meter, version {__version__} (database schema v{LATEST_VERSION})"


def test_help_lists_commands_and_every_exit_code(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("serve", "run", "calls", "report", "plugins"):
        assert f"  {command} " in result.stdout
    for code, text in EXIT_CODE_HELP.items():
        assert f"{int(code):>3}  {text}" in result.stdout


def test_bare_command_prints_the_help_and_succeeds(cli) -> None:
    result = cli()
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == cli("--help").stdout


@pytest.mark.parametrize(("typed", "meant"), [("reprot", "report"), ("doctr", "doctor"), ("call", "calls"),
                                              ("unintsall", "uninstall"), ("key-fingerprnt", "key-fingerprint")])
def test_an_unknown_command_suggests_the_closest_one(cli, typed: str, meant: str) -> None:
    result = cli(typed, "--json")
    assert result.exit_code == ExitCode.USAGE and result.stdout == ""
    assert result.stderr == (f"halton-meter: error: No such command '{typed}'. Did you mean `{meant}`? "
                             "(see `halton-meter --help`)\n")


def test_an_unknown_command_with_nothing_close_is_one_line_without_a_guess(cli) -> None:
    result = cli("xyzzy")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr == "halton-meter: error: No such command 'xyzzy'. (see `halton-meter --help`)\n"


@pytest.mark.parametrize("command", ["serve", "run", "calls", "report", "plugins"])
def test_every_command_has_help(cli, command) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0 and result.stdout.startswith(f"Usage: halton-meter {command}")


def test_calls_and_report_before_any_data(cli) -> None:
    assert cli("calls", "--json").stdout.strip() == "[]"
    assert "No calls recorded yet" in cli("calls").stdout
    report = json.loads(cli("report", "--json").stdout)
    assert report["totals"]["calls"] == 0 and report["groups"] == [] and report["gaps"]["calls_at_least"] == 0
    assert "No calls recorded in this window." in cli("report").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "--since", "-1"], "--since '-1' is not a time"),
        (["report", "--since", "2026-13-01"], "--since '2026-13-01' is not a time"),
        (["report", "--since", "1d", "--until", "2d"], "--since (1d) must be before --until (2d)"),
        (["calls", "--limit", "-3"], "Invalid value for '--limit'"),
        (["nonsense"], "No such command 'nonsense'"),
        (["run"], "give a command to run"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, args, message) -> None:
    result = cli(*args)
    assert result.exit_code == ExitCode.USAGE
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unexpected_exception_is_one_line_with_a_crash_log(cli, monkeypatch, paths) -> None:
    import halton_meter.cli.calls as calls_module

    def explode(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(calls_module, "load_config", explode)
    result = cli("calls")
    assert result.exit_code == ExitCode.INTERNAL
    line = result.stderr.strip()
    assert line.startswith("halton-meter: internal error: RuntimeError: simulated bug; details in ")
    log = line.rsplit(" ", 1)[1]
    assert "Traceback" in open(log).read() and log.startswith(str(paths.logs))
