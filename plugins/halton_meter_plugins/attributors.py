"""Built-in project attributors, in the order their `requires` give them.

1. `attributor.env`: `HALTON_METER_PROJECT` in the client process's environment (what `halton-meter run
   --project` will set, and what a user can export by hand).
2. `attributor.cwd`: the name of the client process's working directory.

More precise sources (project files, config rules, git) slot in between through their own `requires`.
"""

from __future__ import annotations

import os
from typing import Any

from halton_meter import hookimpl
from halton_meter.types import Attribution, Attributor, ClientInfo

PROJECT_ENV = "HALTON_METER_PROJECT"


def from_env(client: ClientInfo) -> Attribution | None:
    project = (client.environ.get(PROJECT_ENV) or "").strip()
    return Attribution(project, "env") if project else None


def from_cwd(client: ClientInfo) -> Attribution | None:
    if not client.cwd:
        return None
    name = os.path.basename(os.path.normpath(client.cwd))
    if not name or client.cwd in ("/", os.path.expanduser("~")):
        return None
    return Attribution(name, "cwd")


@hookimpl
def halton_register_attributors(register: Any) -> None:
    register(Attributor("attributor.env", from_env, description=f"${PROJECT_ENV} in the client's environment"))
    register(
        Attributor(
            "attributor.cwd",
            from_cwd,
            requires=("attributor.env",),
            description="the client's working directory name",
        )
    )
