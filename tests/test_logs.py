"""`halton-meter logs`: the processes' files merged in time order (structlog key=value lines in UTC and
stdlib lines in local time), rendered readably; `--raw` keeps the lines as written; `--follow` merges new
lines as they come (partial lines wait, a rotated file starts over)."""

from __future__ import annotations

import datetime
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from reportkit import local_zone

from halton_meter import logread
from halton_meter.paths import Paths

CORE = [
    "timestamp='2026-12-03T14:46:42.876543Z' process='core' level='warning' "
    "event='core unavailable: passing through' reason='core did not answer the probe' port=8081",
    "2026-12-03 09:46:46,486 core ERROR mitmproxy.proxy: upstream reset",  # local time: New York, 14:46:46Z
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "ZeroDivisionError: division by zero",
    "timestamp='2026-12-03T14:46:50.000001Z' process='core' level='error' event='crashed' "
    "exception='Traceback (most recent call last):\\n  boom\\nValueError: x' hosts=['a b', 'c'] who=\"it's\"",
]
EDGE = [
    "timestamp='2026-12-03T14:46:40.000000Z' process='edge' level='info' event='listening' port=8080",
    "timestamp='2026-12-03T14:46:44.000000Z' process='edge' level='info' event='tunnel' host='api.anthropic.com'",
    "timestamp='2026-12-03T14:46:51.500000Z' process='edge' level='debug' event='closed' took=0.25 ok=True",
]
SERVE = ["2026-12-03 09:46:39,000 serve INFO halton_meter.serve.supervisor: started edge, core and api"]


@pytest.fixture
def new_york():
    with local_zone("America/New_York"):
        yield


def write_logs(paths: Paths, **files: list[str]) -> None:
    paths.logs.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (paths.logs / f"{name}.log").write_text("".join(line + "\n" for line in lines))


def append(paths: Paths, name: str, text: str) -> None:
    with (paths.logs / f"{name}.log").open("a") as fh:
        fh.write(text)


def test_both_formats_parse() -> None:
    entry = logread.parse_line("core", CORE[0])
    assert entry.parsed and entry.process == "core" and entry.level == "warning"
    assert entry.at == datetime.datetime(2026, 12, 3, 14, 46, 42, 876543, tzinfo=datetime.UTC)
    assert entry.event == "core unavailable: passing through"
    assert entry.fields == {"reason": "core did not answer the probe", "port": 8081}
    crashed = logread.parse_line("core", CORE[5])
    assert crashed.fields == {"exception": "Traceback (most recent call last):\n  boom\nValueError: x",
                              "hosts": ["a b", "c"], "who": "it's"}
    with local_zone("America/New_York"):
        std = logread.parse_line("x", CORE[1])
    assert std.parsed and (std.process, std.level, std.event) == ("core", "error", "mitmproxy.proxy: upstream reset")
    assert std.at == datetime.datetime(2026, 12, 3, 14, 46, 46, 486000, tzinfo=datetime.UTC)
    assert not logread.parse_line("core", CORE[2]).parsed
    assert not logread.parse_line("core", "timestamp='unterminated").parsed
    odd = logread.parse_line("core", "timestamp='2026-12-03T14:46:42Z' event='x' obj=<Foo at 0x1>")
    assert odd.parsed and odd.fields == {"obj": "<Foo at 0x1>"}


def test_lines_are_merged_in_time_order_and_rendered(cli, paths: Paths, new_york) -> None:
    write_logs(paths, core=CORE, edge=EDGE, serve=SERVE)
    result = cli("logs")
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == [
        "── 2026-12-03 ──",
        "09:46:39.000 serve info     halton_meter.serve.supervisor: started edge, core and api",
        "09:46:40.000 edge  info     listening port=8080",
        "09:46:42.876 core  warning  core unavailable: passing through reason=core did not answer the probe "
        "port=8081",
        "09:46:44.000 edge  info     tunnel host=api.anthropic.com",
        "09:46:46.486 core  error    mitmproxy.proxy: upstream reset",
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "    ZeroDivisionError: division by zero",
        "09:46:50.000 core  error    crashed hosts=['a b', 'c'] who=it's",
        "    exception:",
        "      Traceback (most recent call last):",
        "        boom",
        "      ValueError: x",
        "09:46:51.500 edge  debug    closed took=0.25 ok=True",
    ]


def test_raw_keeps_the_lines_as_written_merged(cli, paths: Paths, new_york) -> None:
    write_logs(paths, core=CORE, edge=EDGE, serve=SERVE)
    result = cli("logs", "--raw")
    assert result.stdout.splitlines() == [SERVE[0], EDGE[0], CORE[0], EDGE[1], *CORE[1:5], CORE[5], EDGE[2]]
    only = cli("logs", "--raw", "--process", "edge", "-n", "2")
    assert only.stdout.splitlines() == EDGE[1:]


def test_each_file_keeps_its_own_order_when_times_tie(cli, paths: Paths, new_york) -> None:
    """stdlib stamps have milliseconds, structlog's microseconds: a file's own order wins over them."""
    core = ["timestamp='2026-12-03T14:46:42.876900Z' process='core' level='info' event='first'",
            "2026-12-03 09:46:42,876 core INFO x: second"]
    write_logs(paths, core=core)
    assert cli("logs", "--raw").stdout.splitlines() == core


def test_a_line_before_any_timestamp_is_shown_with_its_process(cli, paths: Paths, new_york) -> None:
    write_logs(paths, edge=["some stray output", EDGE[0]])
    lines = cli("logs").stdout.splitlines()
    assert lines[0] == "edge: some stray output" and lines[-1].startswith("09:46:40.000 edge  info")


def run_following(cli, monkeypatch: pytest.MonkeyPatch, steps: list[Callable[[], None]], *args: str):
    """`logs --follow` in-process: each poll first runs the next step; after the last, Ctrl-C."""
    import halton_meter.cli.logs as logs_module

    pending = list(steps)

    def sleep(seconds: float) -> None:
        if not pending:
            raise KeyboardInterrupt
        pending.pop(0)()

    monkeypatch.setattr(logs_module, "time", types.SimpleNamespace(sleep=sleep))
    return cli("logs", "--follow", *args)


def test_follow_merges_new_lines_as_they_come(cli, paths: Paths, monkeypatch, new_york) -> None:
    write_logs(paths, core=CORE[:1], edge=EDGE[:1])
    late_core = "timestamp='2026-12-03T14:47:02.000000Z' process='core' level='info' event='later'"
    early_edge = "timestamp='2026-12-03T14:47:01.000000Z' process='edge' level='info' event='earlier'"

    def both() -> None:  # one poll finds new lines in two files: printed in time order
        append(paths, "core", late_core + "\n")
        append(paths, "edge", early_edge + "\n")

    def partial() -> None:  # half a line waits for the rest
        append(paths, "core", "timestamp='2026-12-03T14:47:03.000000Z' process='core' ")

    def rest() -> None:
        append(paths, "core", "level='info' event='whole'\n")

    def rotated() -> None:  # the file starts over
        (paths.logs / "edge.log").write_text("timestamp='2026-12-03T14:47:04.000000Z' process='edge' "
                                             "level='info' event='after rotation'\n")

    def new_day() -> None:
        append(paths, "serve", "timestamp='2026-12-04T05:00:00.000000Z' process='serve' level='info' "
                               "event='tomorrow'\n")

    result = run_following(cli, monkeypatch, [both, partial, rest, rotated, new_day])
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    shown = [(line[13:18].strip(), line[28:]) for line in lines if line[:2].isdigit()]
    assert shown == [("edge", "listening port=8080"),
                     ("core", "core unavailable: passing through reason=core did not answer the probe port=8081"),
                     ("edge", "earlier"), ("core", "later"), ("core", "whole"), ("edge", "after rotation"),
                     ("serve", "tomorrow")]
    assert lines[-2:] == ["── 2026-12-04 ──", "00:00:00.000 serve info     tomorrow"]  # a new day is marked


def test_follow_waits_for_logs_to_appear(cli, paths: Paths, monkeypatch, new_york) -> None:
    def first() -> None:
        write_logs(paths, edge=EDGE[:1])

    result = run_following(cli, monkeypatch, [lambda: None, first])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["── 2026-12-03 ──", "09:46:40.000 edge  info     listening port=8080"]


def test_no_logs_yet(cli, paths: Paths) -> None:
    result = cli("logs")
    assert result.exit_code == 0 and "No logs in" in result.stdout


def test_tail_leaves_a_partial_line_for_later(tmp_path: Path) -> None:
    path = tmp_path / "core.log"
    path.write_text("a\nb\nc\npart")
    lines, offset = logread.tail(path, 2)
    assert lines == ["b", "c"] and offset == len("a\nb\nc\n")


def test_core_workers_logs_are_merged_with_the_first_cores(cli, paths: Paths, new_york) -> None:
    """Core workers write core-1.log, core-2.log, …: `--process core` shows them with the first core's."""
    worker = ["timestamp='2026-12-03T14:46:43.000000Z' process='core-1' level='info' event='core listening' "
              "port=40001 worker=1"]
    write_logs(paths, core=CORE[:1], edge=EDGE, **{"core-1": worker})
    result = cli("logs", "--raw", "--process", "core")
    assert result.stdout.splitlines() == [CORE[0], worker[0]]
    assert worker[0] in cli("logs", "--raw").stdout.splitlines()
