"""User-facing errors and the exit codes they map to.

Every error a user can cause is raised as a `HaltonError` subclass carrying one line that names the cause
and the fix. The CLI prints that line and exits with the class's code; nothing else reaches the terminal.
The table below is the documented contract (README, `halton-meter --help`), and `tests/test_exit_codes.py`
exercises each code.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # an operation failed for a reason outside the user's input (details in the message)
    USAGE = 2  # bad command line, or config.toml invalid
    DATABASE = 3  # database unreadable, corrupt, or from a newer version of Halton Meter
    PORT_IN_USE = 4  # a port Halton Meter needs is held by another process
    NOT_RUNNING = 5  # the command needs a running meter (`halton-meter serve`) and none answers
    DEGRADED = 6  # `status`: traffic flows but metering is impaired; `doctor`: a check failed
    INTERNAL = 70  # a bug: a one-line summary is printed and the traceback goes to the log
    COMMAND_NOT_EXECUTABLE = 126  # `run`: the command exists but cannot be executed
    COMMAND_NOT_FOUND = 127  # `run`: the command was not found on PATH


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "the operation failed (the message says why)",
    ExitCode.USAGE: "bad arguments, or config.toml is invalid",
    ExitCode.DATABASE: "the database is corrupt, unreadable or from a newer version",
    ExitCode.PORT_IN_USE: "a port Halton Meter needs is held by another process",
    ExitCode.NOT_RUNNING: "no running meter answers (`halton-meter start`, or `serve` in the foreground)",
    ExitCode.DEGRADED: "`status`: DEGRADED (traffic flows, metering impaired); `doctor`: a check failed",
    ExitCode.INTERNAL: "internal error (a bug; please report it with the log file named)",
    ExitCode.COMMAND_NOT_EXECUTABLE: "`run`: the command cannot be executed",
    ExitCode.COMMAND_NOT_FOUND: "`run`: the command was not found",
}


class HaltonError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(HaltonError):
    exit_code = ExitCode.USAGE


class UsageError(HaltonError):
    exit_code = ExitCode.USAGE


class DatabaseError(HaltonError):
    exit_code = ExitCode.DATABASE


class PortInUseError(HaltonError):
    exit_code = ExitCode.PORT_IN_USE


class NotRunningError(HaltonError):
    exit_code = ExitCode.NOT_RUNNING


class PluginError(HaltonError):
    """A plugin misbehaved (duplicate id, bad registration). Becomes an error record, never a crash."""

    exit_code = ExitCode.FAILURE


class UnsupportedOnPlatform(HaltonError):
    """What a platform installer raises for a feature this platform does not offer (e.g. `init --full`)."""

    exit_code = ExitCode.USAGE


class StepSkipped(Exception):
    """Raised by a step's apply when it does not apply here (e.g. no per-user trust store); not a failure."""
