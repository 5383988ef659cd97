"""Built-in project attributors, in the order their `requires` give them; the first answer wins.

1. `attributor.run`: the project in the proxy URL's credentials (`halton-meter run --project NAME` sets
   `HTTPS_PROXY=http://project:NAME@127.0.0.1:PORT`; the edge strips it and passes the name on). It reaches
   every child process that inherits the proxy variables, and needs no process lookup at all.
2. `attributor.env`: `HALTON_METER_PROJECT` in the client process's environment (`run --project` sets it
   too; a user can export it by hand).
3. `attributor.file`: the nearest `.halton-meter.toml` (`project = "name"`) at or above the client's working
   directory. An invalid file is skipped here (and named by `halton-meter doctor`).
4. `attributor.config`: `[projects]` rules in config.toml, directory globs to names, first match wins.
5. `attributor.git`: the name of the git repository the working directory is in (the main repository's
   name for a linked worktree).
6. `attributor.cwd`: the working directory's name (not for `/` or the home directory).

When none answers the call is `unattributed`. Repository and branch are recorded on every call whichever
attributor answered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from halton_meter.plugin import (
    Attribution,
    Attributor,
    ClientInfo,
    PluginConfig,
    ProjectRule,
    find_project_file,
    hookimpl,
    valid_project_name,
)

PROJECT_ENV = "HALTON_METER_PROJECT"


def from_run(client: ClientInfo) -> Attribution | None:
    project = (client.proxy_project or "").strip()
    return Attribution(project, "run") if project and valid_project_name(project) else None


def from_env(client: ClientInfo) -> Attribution | None:
    project = (client.environ.get(PROJECT_ENV) or "").strip()
    return Attribution(project, "env") if project and valid_project_name(project) else None


def from_file(client: ClientInfo) -> Attribution | None:
    if not client.cwd:
        return None
    found = find_project_file(client.cwd)
    if found is None or found.project is None:
        return None
    return Attribution(found.project, "file")


def rules_attributor(rules: Sequence[ProjectRule]) -> Callable[[ClientInfo], Attribution | None]:
    def from_config(client: ClientInfo) -> Attribution | None:
        if not client.cwd:
            return None
        for rule in rules:
            if rule.matches(client.cwd):
                return Attribution(rule.project, "config")
        return None

    return from_config


def from_git(client: ClientInfo) -> Attribution | None:
    git = client.git
    if git is None or not git.repo or not valid_project_name(git.repo):
        return None
    return Attribution(git.repo, "git")


def from_cwd(client: ClientInfo) -> Attribution | None:
    if not client.cwd:
        return None
    cwd = os.path.normpath(client.cwd)
    name = os.path.basename(cwd)
    if not name or cwd in ("/", os.path.normpath(os.path.expanduser("~"))) or not valid_project_name(name):
        return None
    return Attribution(name, "cwd")


@hookimpl
def halton_register_attributors(register: Callable[[Attributor], None], config: PluginConfig | None) -> None:
    rules = tuple(getattr(config, "project_rules", ()) or ())
    register(Attributor("attributor.run", from_run,
                        description="the project in the proxy URL (halton-meter run --project NAME)"))
    register(Attributor("attributor.env", from_env, requires=("attributor.run",),
                        description=f"${PROJECT_ENV} in the client's environment"))
    register(Attributor("attributor.file", from_file, requires=("attributor.env",),
                        description=".halton-meter.toml at or above the client's working directory"))
    register(Attributor("attributor.config", rules_attributor(rules), requires=("attributor.file",),
                        description="[projects] directory rules in config.toml"))
    register(Attributor("attributor.git", from_git, requires=("attributor.config",),
                        description="the git repository's name"))
    register(Attributor("attributor.cwd", from_cwd, requires=("attributor.git",),
                        description="the client's working directory name"))
