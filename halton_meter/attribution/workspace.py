"""What a client's working directory tells us: its project file and its git repository and branch.

Both are read from the file system only (no `git` subprocess, no network), walking up from the directory,
and both are cheap enough to run for every call on the attribution worker threads.

The project file is `.halton-meter.toml` with exactly one documented format::

    project = "my-project"

TOML, UTF-8 (a byte-order mark and CRLF line ends are fine). Anything else — `project: x`, an unquoted
name, unknown keys — is an error that `halton-meter doctor` names with the file and line; the meter then
ignores that file and attributes the call by the next source.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from halton_meter.config import valid_project_name

PROJECT_FILE = ".halton-meter.toml"
MAX_DEPTH = 64
"""Directories walked up at most (a symlink loop or a pathological tree cannot make this unbounded)."""


class ProjectFileError(ValueError):
    """A project file that is not in the documented format; the message names the file (and line)."""


@dataclass(frozen=True, slots=True)
class ProjectFile:
    path: Path
    project: str | None
    error: str | None = None


def _ancestors(directory: str) -> list[str]:
    out = []
    path = os.path.normpath(directory)
    for _ in range(MAX_DEPTH):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def parse_project_file(path: Path) -> str:
    """The project a project file names; ProjectFileError (one line, with the fix) otherwise."""
    fix = 'the format is one line: project = "name"'
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProjectFileError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > 64 * 1024:
        raise ProjectFileError(f"{path}: too large for a project file; {fix}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ProjectFileError(f"{path}: not UTF-8 text; {fix}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        where = f"{path}:{match.group(1)}:{match.group(2)}" if match else str(path)
        raise ProjectFileError(f"{where}: not valid TOML; {fix}") from None
    unknown = sorted(set(data) - {"project"})
    if unknown:
        raise ProjectFileError(f"{path}: unknown key {unknown[0]!r}; {fix}")
    project = data.get("project")
    if project is None:
        raise ProjectFileError(f"{path}: no project key; {fix}")
    if not isinstance(project, str) or not valid_project_name(project):
        raise ProjectFileError(f"{path}: project must be a name of 1-100 characters without slashes or "
                               f"surrounding spaces, not {project!r}; {fix}")
    return project


def find_project_file(directory: str) -> ProjectFile | None:
    """The nearest `.halton-meter.toml` at or above `directory` (an invalid one is returned with its error,
    never skipped silently in favour of one further up)."""
    for path in _ancestors(directory):
        candidate = Path(path, PROJECT_FILE)
        try:
            if not candidate.is_file():
                continue
        except OSError:
            continue
        try:
            return ProjectFile(candidate, parse_project_file(candidate))
        except ProjectFileError as exc:
            return ProjectFile(candidate, None, str(exc))
    return None


# --------------------------------------------------------------------------------------------------
# git
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GitInfo:
    root: str
    """The work tree's top directory."""
    repo: str
    """The repository's name: the main work tree's directory name (the same for every linked worktree)."""
    branch: str | None
    """The checked-out branch, `detached@<sha7>` for a detached HEAD, None when HEAD is unreadable."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(4096).strip()
    except OSError:
        return None


def _gitdir(root: str) -> str | None:
    dot_git = os.path.join(root, ".git")
    if os.path.isdir(dot_git):
        return dot_git
    content = _read(dot_git)  # a linked worktree or a submodule: "gitdir: <path>"
    if content and content.startswith("gitdir:"):
        target = content[len("gitdir:"):].strip()
        return os.path.normpath(os.path.join(root, target))
    return None


def git_info(directory: str) -> GitInfo | None:
    """The git work tree containing `directory`, if any."""
    for path in _ancestors(directory):
        if not os.path.lexists(os.path.join(path, ".git")):
            continue
        gitdir = _gitdir(path)
        if gitdir is None:
            return None
        repo = os.path.basename(path)
        common = _read(os.path.join(gitdir, "commondir"))
        if common:  # a linked worktree: name it after the main repository
            common_dir = os.path.normpath(os.path.join(gitdir, common))
            if os.path.basename(common_dir) == ".git":
                repo = os.path.basename(os.path.dirname(common_dir))
        head = _read(os.path.join(gitdir, "HEAD"))
        branch = None
        if head:
            if head.startswith("ref:"):
                ref = head[4:].strip()
                branch = ref.removeprefix("refs/heads/")
            elif re.fullmatch(r"[0-9a-f]{40,64}", head):
                branch = f"detached@{head[:7]}"
        return GitInfo(path, repo, branch)
    return None
