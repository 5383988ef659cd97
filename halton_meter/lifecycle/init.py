"""The init engine: resolve the plan, run the steps in `requires` order, record every change, roll back on
failure, and undo everything on `uninstall`.

Steps never touch the machine directly: they call the context (`write_file`, `add_block`, `run`), which
records each change in `system_state.json` before it makes it. Undo is therefore generic and exact.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.errors import HaltonError, StepSkipped
from halton_meter.errors import UnsupportedOnPlatform as UnsupportedOnPlatform  # its old import path
from halton_meter.lifecycle.commands import CommandFailed, CommandRunner
from halton_meter.lifecycle.state import Change, SystemState
from halton_meter.paths import Paths
from halton_meter.types import CommandResult, InitStep, PlatformInfo, PlatformInstaller

MODES = ("env", "apps", "full")
BLOCK_BEGIN = "# >>> halton-meter >>>"
BLOCK_END = "# <<< halton-meter <<<"


class StepFailed(HaltonError):
    def __init__(self, step: InitStep, cause: BaseException) -> None:
        reason = cause.message if isinstance(cause, HaltonError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"init step {step.id} ({step.title}) failed: {reason}")
        self.step = step
        self.cause = cause


@dataclass
class InitOptions:
    mode: str = "env"
    shell_rc: bool = True
    non_interactive: bool = False
    trust_system: bool = False
    """Linux: also add the CA to the system store (runs sudo, visibly; never silently)."""
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "shell_rc": self.shell_rc, "trust_system": self.trust_system}


@dataclass
class StepOutcome:
    step: InitStep
    status: str
    """`done` (already in place), `applied`, `skipped` (not for this mode or platform), `undone`, `failed`."""
    detail: str = ""


@dataclass
class InitContext:
    paths: Paths
    config: Any
    options: InitOptions
    runner: CommandRunner
    installer: PlatformInstaller
    platform: PlatformInfo
    user_home: Path
    state: SystemState
    report: Callable[[str], None] = lambda line: None
    current_step: str = ""
    run_log: list[tuple[Change, bytes | None, bool]] = field(default_factory=list)
    """This run's changes with the state *before this run*, for rollback: (change, previous, existed)."""
    notes: list[str] = field(default_factory=list)
    undo_failures: list[str] = field(default_factory=list)
    """One line per change (or step undo) a rollback could not reverse; each is also sent to `report`."""

    # ---- recorded changes ---------------------------------------------------------------------------

    def write_file(self, path: Path, content: bytes | str, mode: int = 0o644) -> bool:
        """Write a file we own (recorded). Returns False when it already had exactly this content."""
        data = content.encode() if isinstance(content, str) else content
        existed = path.exists()
        previous = path.read_bytes() if existed else None
        if existed and previous == data and stat.S_IMODE(path.stat().st_mode) == mode:
            self._record(Change(self.current_step, "file", str(path), existed, _b64(previous),
                                stat.S_IMODE(path.stat().st_mode)), previous, existed)
            return False
        self._record(Change(self.current_step, "file", str(path), existed, _b64(previous),
                            stat.S_IMODE(path.stat().st_mode) if existed else None,
                            created_dirs=_missing_dirs(path.parent)), previous, existed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.halton-meter.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return True

    def add_block(self, path: Path, body: str, comment: str = "#") -> bool:
        """Add (or update) our marked block at the end of a file the user owns (recorded)."""
        begin, end = BLOCK_BEGIN.replace("#", comment, 1), BLOCK_END.replace("#", comment, 1)
        block = f"{begin}\n{body.rstrip()}\n{end}\n"
        existed = path.exists()
        text = path.read_text() if existed else ""
        recorded = next((c for c in self.state.changes if c.kind == "block" and c.path == str(path)), None)
        if recorded is not None and recorded.block is not None and recorded.block in text:
            if recorded.block == block:
                return False
            text = text.replace(recorded.block, block, 1)  # same place, new content (e.g. a new port)
            recorded.block = block
            path.write_text(text)
            return True
        separator = "\n" if text and not text.endswith("\n") else ""
        change = Change(self.current_step, "block", str(path), existed, block=block, separator=separator,
                        created_file=not existed, created_dirs=_missing_dirs(path.parent))
        self._record(change, text.encode() if existed else None, existed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(separator + block)
        return True

    def run(self, argv: Sequence[str], undo: Sequence[Sequence[str]] = (), description: str = "",
            timeout: float = 60.0) -> CommandResult:
        """Run an OS command (through the runner seam), recording the commands that reverse it."""
        result = self.runner.run(argv, timeout=timeout)
        if undo:
            self._record(Change(self.current_step, "command", undo=[list(u) for u in undo],
                                description=description or " ".join(argv)), None, False)
        return result

    def _record(self, change: Change, previous: bytes | None, existed: bool) -> None:
        before = len(self.state.changes)
        self.state.add(change)
        if len(self.state.changes) > before:
            self.run_log.append((change, previous, existed))

    # ---- undo ---------------------------------------------------------------------------------------

    def undo_change(self, change: Change, previous: bytes | None = None, existed: bool | None = None,
                    strict: bool = False) -> None:
        """Reverse one change. With `previous`/`existed`, to that state (rollback); else to the recorded one.
        `strict`: an undo command that fails raises (`CommandFailed`) and the change stays recorded."""
        if change.kind == "command":
            results = [self.runner.run(argv, check=False) for argv in change.undo]
            failed = [r for r in results if not getattr(r, "ok", True)]
            if strict and failed:
                raise CommandFailed(failed[0])
        elif change.kind == "file" and change.path:
            path = Path(change.path)
            target_existed = change.existed if existed is None else existed
            target = change.previous if previous is None and existed is None else previous
            if target_existed and target is not None:
                path.write_bytes(target)
                if change.previous_mode is not None:
                    os.chmod(path, change.previous_mode)
            else:
                path.unlink(missing_ok=True)
        elif change.kind == "block" and change.path and change.block:
            path = Path(change.path)
            if path.exists():
                text = path.read_text()
                if change.separator + change.block in text:
                    text = text.replace(change.separator + change.block, "", 1)
                else:
                    text = text.replace(change.block, "", 1)
                if change.created_file and not text:
                    path.unlink()
                else:
                    path.write_text(text)
        if change.path and change.created_dirs and not Path(change.path).exists():
            _remove_empty(change.created_dirs)
        self.state.forget(change)

    def undo_step(self, step_id: str) -> int:
        changes = list(reversed(self.state.for_step(step_id)))
        for change in changes:
            self.undo_change(change)
        return len(changes)


def read_only_init_context(paths: Paths, config: Any, installer: PlatformInstaller, platform: PlatformInfo | None,
                           state: SystemState, runner: CommandRunner | None = None) -> InitContext:
    """An init context for read-only questions asked outside `init` (the doctor asks the installer for its
    `service_state`): a dry run in the recorded mode; nothing is recorded or saved."""
    from halton_meter.lifecycle.commands import SystemRunner

    return InitContext(paths=paths, config=config, options=InitOptions(mode=state.mode or "env", dry_run=True),
                       runner=runner or SystemRunner(), installer=installer,
                       platform=platform,  # type: ignore[arg-type]  # None was always passed through; installers' service_state never reads it
                       user_home=Path.home(), state=state)


def _missing_dirs(directory: Path) -> list[str]:
    """`directory` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not directory.exists() and directory.parent != directory:
        missing.append(str(directory))
        directory = directory.parent
    return missing


def _remove_empty(directories: Sequence[str]) -> None:
    """Remove directories we made (innermost first), stopping at the first one that is not empty: anything
    put there since is not ours to delete."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError:
            return


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


# --------------------------------------------------------------------------------------------------
# Running the plan
# --------------------------------------------------------------------------------------------------


@dataclass
class InitResult:
    outcomes: list[StepOutcome]
    failed: StepFailed | None = None
    rolled_back: int = 0
    """Changes the rollback after `failed` undid."""
    undo_failures: list[str] = field(default_factory=list)
    """What that rollback could not undo, one line each (they stay recorded, so `uninstall` retries them)."""


def ordered_steps(steps: Sequence[InitStep]) -> list[InitStep]:
    from halton_meter.host import topological_order

    by_id = {s.id: s for s in steps}
    return [by_id[i] for i in topological_order({s.id: s.requires for s in steps}, "init step")]


def plan(ctx: InitContext, steps: Sequence[InitStep]) -> list[StepOutcome]:
    """What `init` would do, read-only: each step's check, in order."""
    outcomes = []
    for step in ordered_steps(steps):
        if ctx.options.mode not in step.modes:
            recorded = ctx.state.for_step(step.id)
            detail = f"undo {len(recorded)} change(s) from an earlier mode" if recorded else "not in this mode"
            outcomes.append(StepOutcome(step, "skipped" if not recorded else "undo", detail))
            continue
        ctx.current_step = step.id
        try:
            done = step.check(ctx)
        except Exception as exc:  # a check that cannot tell means the step will run
            done = False
            detail = f"check failed ({type(exc).__name__}: {exc}); will apply"
        else:
            detail = "already in place" if done else "will apply"
        outcomes.append(StepOutcome(step, "done" if done else "apply", detail))
    return outcomes


def run_init(ctx: InitContext, steps: Sequence[InitStep], on_step: Callable[[StepOutcome], None]) -> InitResult:
    """Apply the plan. On the first failure, undo what *this run* changed (newest first), restore the
    state file as it was, and report the failing step."""
    outcomes: list[StepOutcome] = []
    applied: list[InitStep] = []
    for step in ordered_steps(steps):
        ctx.current_step = step.id
        if ctx.options.mode not in step.modes:
            undone = ctx.undo_step(step.id)
            outcome = StepOutcome(step, "undone" if undone else "skipped",
                                  f"undid {undone} change(s) from an earlier mode" if undone else "not in this mode")
            outcomes.append(outcome)
            on_step(outcome)
            continue
        try:
            if step.check(ctx):
                outcome = StepOutcome(step, "done", "already in place")
            else:
                applied.append(step)
                step.apply(ctx)
                outcome = StepOutcome(step, "applied", ctx.notes.pop() if ctx.notes else "")
        except StepSkipped as skip:
            outcome = StepOutcome(step, "skipped", str(skip))
        except Exception as exc:
            failure = exc if isinstance(exc, StepFailed) else StepFailed(step, exc)
            outcome = StepOutcome(step, "failed", failure.message)
            outcomes.append(outcome)
            on_step(outcome)
            rolled_back = rollback(ctx, applied)
            if ctx.undo_failures:
                # The outcome stays a failure (exit 1); its one line says the machine is not back as it was.
                failure.args = (f"{failure.message}; rollback incomplete: {len(ctx.undo_failures)} undo(s) failed "
                                "(listed above; `halton-meter uninstall` tries them again)",)
            return InitResult(outcomes, failure, rolled_back, list(ctx.undo_failures))
        if outcome.status == "done" and ctx.notes:
            outcome.detail = ctx.notes.pop()
        outcomes.append(outcome)
        on_step(outcome)
    return InitResult(outcomes)


def rollback(ctx: InitContext, applied: Sequence[InitStep] = ()) -> int:
    """Undo this run: steps' own undo (newest first), then every change recorded in this run. Returns how
    many changes were undone. What cannot be undone is never silent: one line each in `ctx.undo_failures`,
    sent to `ctx.report` as it happens; the rest is still undone, and a change that failed stays recorded in
    the state, so `uninstall` tries it again."""
    count = 0
    for step in reversed(applied):
        if step.undo is not None:
            ctx.current_step = step.id
            try:
                step.undo(ctx)
            except Exception as exc:
                _undo_failed(ctx, f"step {step.id} ({step.title})", exc)
    for change, previous, existed in reversed(ctx.run_log):
        try:
            ctx.undo_change(change, previous, existed, strict=True)
        except Exception as exc:  # keep undoing the rest
            _undo_failed(ctx, f"{_describe(change)} (step {change.step})", exc)
            continue
        count += 1
    ctx.run_log.clear()
    return count


def _describe(change: Change) -> str:
    if change.kind == "command":
        return f"command `{change.description}`" if change.description else "a command"
    if change.kind == "block":
        return f"the block added to {change.path}"
    return f"file {change.path}"


def _undo_failed(ctx: InitContext, what: str, exc: BaseException) -> None:
    reason = exc.message if isinstance(exc, HaltonError) else f"{type(exc).__name__}: {exc}"
    line = f"could not undo {what}: {reason}"
    ctx.undo_failures.append(line)
    ctx.report(line)


def undo_all(ctx: InitContext, steps: Mapping[str, InitStep]) -> int:
    """Uninstall: each step's own undo (if any) in reverse order, then every remaining recorded change."""
    count = 0
    for step_id in reversed([s.id for s in ordered_steps(list(steps.values()))]):
        ctx.current_step = step_id
        step = steps[step_id]
        if step.undo is not None:
            step.undo(ctx)
        count += ctx.undo_step(step_id)
    for change in reversed(list(ctx.state.changes)):  # changes of steps no longer registered
        ctx.undo_change(change)
        count += 1
    return count
