"""The one seam through which Halton Meter runs OS commands (systemctl, launchctl, schtasks, certutil …).

`SystemRunner` runs them for real; `RecordingRunner` records them and answers from a script, so the
macOS and Windows installers are tested by asserting the exact commands they would run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from halton_meter.errors import HaltonError
from halton_meter.types import CommandResult, CommandRunner

__all__ = ["Answer", "CommandFailed", "CommandResult", "CommandRunner", "RecordingRunner", "SystemRunner"]


class CommandFailed(HaltonError):
    def __init__(self, result: CommandResult) -> None:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit code {result.returncode}"
        super().__init__(f"`{' '.join(result.argv)}` failed: {reason}")
        self.result = result


class SystemRunner:
    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> CommandResult:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            result = CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            result = CommandResult(tuple(argv), 124, "", f"timed out after {timeout:g} s")
        else:
            result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def which(self, name: str) -> str | None:
        return shutil.which(name)


Answer = CommandResult | Callable[[tuple[str, ...]], CommandResult]


@dataclass
class RecordingRunner:
    """Records every command; answers from `script` (keyed by the full argv tuple, or by argv[0]), and
    with success and empty output otherwise. `present` lists the programs `which` finds."""

    script: Mapping[tuple[str, ...] | str, Answer] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> CommandResult:
        key = tuple(argv)
        self.calls.append(key)
        answer = self.script.get(key, self.script.get(key[0]))
        if answer is None:
            result = CommandResult(key, 0)
        elif callable(answer):
            result = answer(key)
        else:
            result = CommandResult(key, answer.returncode, answer.stdout, answer.stderr)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.present else None
