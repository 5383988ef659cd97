"""`[[sync]]` blocks in config.toml: where each meter pushes its rows (docs/sync.md).

```toml
[[sync]]
target = "postgres"              # a registered sync target (`halton-meter plugins` lists them)
name = "team-db"                 # optional; defaults to the target; unique
privacy = "standard"             # standard (default) | minimal
fields = { branch = "hash" }     # per-field overrides: keep | hash | drop
user = "alice"                   # the user label on every row; default: your login name
url = "postgresql://halton@db.internal:5432/team"   # target-specific keys: the target validates them
password_env = "HALTON_PG_PASSWORD"                # or password_file = "~/.config/halton/pg-password" (0600)
```

Privacy presets: `standard` sends the call record's public fields (never prompts, bodies or credentials:
the meter stores none); `minimal` also replaces project, branch, repo, client process, user agent and
session id by a keyed hash (stable per machine home, so a team can still group by them without reading
them) — key fingerprints are sent either way, never keys.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.errors import ConfigError

PRESETS = ("standard", "minimal")
ACTIONS = ("keep", "hash", "drop")
MINIMAL_HASHED = ("project", "branch", "repo", "client_process", "user_agent", "session_id", "path")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_COMMON = {"target", "name", "privacy", "fields", "user"}
MACHINE_ID_FILE = "machine-id"


@dataclass(frozen=True)
class SyncSettings:
    name: str
    target: str
    privacy: str = "standard"
    fields: tuple[tuple[str, str], ...] = ()
    user: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The target's own keys (url, password_env, …), validated by the target when it opens."""
    hash_key: bytes = b""

    def action(self, name: str) -> str:
        for field_name, action in self.fields:
            if field_name == name:
                return action
        return "hash" if self.privacy == "minimal" and name in MINIMAL_HASHED else "keep"


def parse_sync(body: Any) -> tuple[SyncSettings, ...]:
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ConfigError("config.toml: sync targets are [[sync]] tables with target = \"postgres\" (see docs/sync.md)")
    out: list[SyncSettings] = []
    for index, item in enumerate(body, 1):
        target = item.get("target")
        if not isinstance(target, str) or not _NAME.match(target):
            raise ConfigError(f"config.toml: [[sync]] #{index}: target must name a sync target, like target = \"postgres\"")
        name = item.get("name", target)
        where = f"config.toml: sync target {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-'")
        if any(s.name == name for s in out):
            raise ConfigError(f"config.toml: two [[sync]] targets are named {name!r}; give one a name = \"…\"")
        privacy = item.get("privacy", "standard")
        if privacy not in PRESETS:
            raise ConfigError(f"{where}: privacy must be \"standard\" or \"minimal\", not {privacy!r}")
        fields = item.get("fields", {})
        if not isinstance(fields, dict) or not all(isinstance(v, str) and v in ACTIONS for v in fields.values()):
            raise ConfigError(f"{where}: fields maps a field to \"keep\", \"hash\" or \"drop\", like "
                              "fields = { branch = \"hash\" }")
        from halton_meter.types import PUBLIC_FIELDS

        unknown = sorted(set(fields) - set(PUBLIC_FIELDS) - {"cost_nanos", "cache_savings_nanos"})
        if unknown:
            raise ConfigError(f"{where}: fields.{unknown[0]} is not a call record field")
        user = item.get("user", "")
        if not isinstance(user, str) or len(user) > 64:
            raise ConfigError(f"{where}: user must be a short label, like user = \"alice\"")
        options = {k: v for k, v in item.items() if k not in _COMMON}
        out.append(SyncSettings(name=name, target=target, privacy=privacy, fields=tuple(sorted(fields.items())),
                                user=user or _login(), options=options))
    return tuple(out)


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry): say so plainly
        return "unknown"


def machine_id(home: Path) -> str:
    """A random id for this meter's home, made once and kept (`machine-id`, 0600)."""
    path = home / MACHINE_ID_FILE
    try:
        text = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return text
    except OSError:
        pass
    value = secrets.token_hex(16)
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def shape_row(row: dict[str, Any], settings: SyncSettings, machine: str, version: int) -> dict[str, Any]:
    """A call row as the target receives it: the preset and overrides applied, plus machine, user, version."""
    columns = [name for name in row if name != "rowid"]
    [shaped] = shape_rows(columns, [tuple(row[c] for c in columns)], settings, machine, [version])
    return shaped


def shape_rows(columns: list[str], rows: list[tuple[Any, ...]], settings: SyncSettings, machine: str,
               versions: list[int]) -> list[dict[str, Any]]:
    """`shape_row` for a batch, with each column's action worked out once (the hot loop of a backfill)."""
    key = settings.hash_key or machine.encode()
    actions = [settings.action(name) for name in columns]
    kept = [name for name, action in zip(columns, actions, strict=True) if action != "drop"]
    hashed = [i for i, name in enumerate(kept) if settings.action(name) == "hash"]
    picks = [i for i, action in enumerate(actions) if action != "drop"]
    out = []
    for row, version in zip(rows, versions, strict=True):
        values = [row[i] for i in picks]
        for i in hashed:
            if values[i] is not None:
                values[i] = "h:" + hmac.new(key, str(values[i]).encode(), hashlib.sha256).hexdigest()[:16]
        shaped = dict(zip(kept, values, strict=True))
        shaped["machine_id"], shaped["user_label"], shaped["version"] = machine, settings.user, version
        out.append(shaped)
    return out
