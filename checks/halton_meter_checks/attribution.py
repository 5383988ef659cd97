"""Which project calls made from here are counted under, and whether this directory's project file is valid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from halton_meter.plugin import (
    PROJECT_FILE,
    UNATTRIBUTED,
    Check,
    CheckContext,
    CheckResult,
    ClientInfo,
    attribute,
    find_project_file,
    git_info,
    hookimpl,
)


def check_project(ctx: CheckContext) -> CheckResult:
    cwd = ctx.cwd
    if not cwd:
        return CheckResult("skip", "the current directory is unknown (deleted?)")
    found = find_project_file(cwd)
    if found is not None and found.error is not None:
        return CheckResult("fail", found.error,
                           fix=f'write one line to {found.path}: project = "name" (or delete the file)',
                           details={"path": str(found.path)})
    environ = {k: v for k, v in ctx.environ.items() if k.startswith("HALTON_METER_")}
    client = ClientInfo(cwd=cwd, environ=environ, git=git_info(cwd))
    answer = attribute(ctx.attributors, client)
    details: dict[str, Any] = {"cwd": cwd, "project": answer.project, "source": answer.source}
    text = f"calls from {cwd} count as project {answer.project!r} ({answer.source})"
    if found is not None:
        details["project_file"] = str(found.path)
    if client.git is not None:
        details.update(repo=client.git.repo, branch=client.git.branch)
        text += f", branch {client.git.branch}" if client.git.branch else ""
    if answer == UNATTRIBUTED:
        return CheckResult("warn", text, fix=f'echo \'project = "name"\' > {cwd}/{PROJECT_FILE}', details=details)
    return CheckResult("ok", text, details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.project", "project here", check_project, requires=("check.config",)))
