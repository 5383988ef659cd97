"""A failed `init` undoes what its run changed; whatever it cannot undo is said, one line each, and the
outcome stays a failure that says the machine is not back as it was (halton_meter/lifecycle/init.py)."""

from __future__ import annotations

from pathlib import Path

from halton_meter.config import load_config
from halton_meter.lifecycle.commands import CommandResult, RecordingRunner
from halton_meter.lifecycle.init import InitContext, InitOptions, run_init
from halton_meter.lifecycle.state import SystemState
from halton_meter.paths import Paths
from halton_meter.types import InitStep, PlatformInfo


def context(tmp_path: Path, runner: RecordingRunner, reported: list[str]) -> InitContext:
    paths = Paths(tmp_path / "home")
    user = tmp_path / "user"
    user.mkdir(exist_ok=True)
    return InitContext(paths=paths, config=load_config(paths), options=InitOptions(mode="env"), runner=runner,
                       installer=None, platform=PlatformInfo("linux"), user_home=user, state=SystemState(),
                       report=reported.append)


def steps(tmp_path: Path, own_undo_fails: bool = False) -> list[InitStep]:
    def write(ctx: InitContext) -> None:
        ctx.write_file(tmp_path / "user" / "a.conf", "ours\n")

    def register(ctx: InitContext) -> None:
        ctx.run(["svc", "enable"], undo=[["svc", "disable"], ["svc", "forget"]], description="svc enable")

    def broken_undo(ctx: InitContext) -> None:
        raise OSError("permission denied")

    def fail(ctx: InitContext) -> None:
        raise RuntimeError("the last step breaks")

    return [
        InitStep("step.write", "write a file", check=lambda ctx: False, apply=write),
        InitStep("step.service", "register a service", check=lambda ctx: False, apply=register,
                 undo=broken_undo if own_undo_fails else None, requires=("step.write",)),
        InitStep("step.fail", "fail", check=lambda ctx: False, apply=fail, requires=("step.service",)),
    ]


def test_a_clean_rollback_undoes_everything_and_reports_nothing(tmp_path: Path) -> None:
    reported: list[str] = []
    ctx = context(tmp_path, RecordingRunner(), reported)
    result = run_init(ctx, steps(tmp_path), lambda outcome: None)
    assert result.failed is not None and result.failed.message.endswith("RuntimeError: the last step breaks")
    assert (result.rolled_back, result.undo_failures, reported) == (2, [], [])
    assert not (tmp_path / "user" / "a.conf").exists() and ctx.state.changes == []


def test_what_cannot_be_undone_is_one_line_each_and_the_outcome_says_so(tmp_path: Path) -> None:
    reported: list[str] = []
    runner = RecordingRunner(script={("svc", "disable"): CommandResult(("svc", "disable"), 1, "",
                                                                       "svc: unit is masked")})
    ctx = context(tmp_path, runner, reported)
    result = run_init(ctx, steps(tmp_path, own_undo_fails=True), lambda outcome: None)
    assert result.undo_failures == [
        "could not undo step step.service (register a service): OSError: permission denied",
        "could not undo command `svc enable` (step step.service): `svc disable` failed: svc: unit is masked",
    ]
    assert reported == result.undo_failures  # shown as they happen, through the init's own output
    assert ("svc", "forget") in runner.calls  # the rest of that change's undo still ran
    assert result.rolled_back == 1 and not (tmp_path / "user" / "a.conf").exists()  # the file was undone
    assert [c.kind for c in ctx.state.changes] == ["command"]  # kept: `uninstall` tries it again
    assert result.failed is not None and result.failed.exit_code == 1
    assert result.failed.message.endswith(
        "the last step breaks; rollback incomplete: 2 undo(s) failed (listed above; `halton-meter uninstall` tries "
        "them again)")
