"""`system_state.json`: every change `init` made outside the meter's home, so `uninstall` can undo it.

Three kinds of change, each undone exactly:

* `file` — a file we own (a unit file, a plist, environment.d): its previous content (or absence) is
  kept and restored; a directory made to hold it (`~/.config/environment.d`) goes again once empty.
* `block` — a marked block we added to a file the user owns (a shell rc): on undo exactly that block
  (and the newline we added before it, if any) is removed, so the user's own later edits survive and an
  untouched file comes back byte for byte.
* `command` — an OS command (systemctl, launchctl, certutil …) with the commands that reverse it.

Re-running `init` keeps the *first* previous state of anything it touches again, so `uninstall` always
returns to how the machine was before Halton Meter.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.paths import write_atomic

STATE_VERSION = 1


@dataclass
class Change:
    step: str
    kind: str
    """`file`, `block` or `command`."""
    path: str | None = None
    existed: bool = False
    previous_b64: str | None = None
    previous_mode: int | None = None
    block: str | None = None
    separator: str = ""
    created_file: bool = False
    undo: list[list[str]] = field(default_factory=list)
    description: str = ""
    created_dirs: list[str] = field(default_factory=list)
    """Directories made to hold the file (innermost first): removed on undo if they are empty by then."""

    @property
    def previous(self) -> bytes | None:
        return None if self.previous_b64 is None else base64.b64decode(self.previous_b64)

    def key(self) -> tuple[str, str]:
        if self.kind == "command":
            return ("command", json.dumps(self.undo))
        return (self.kind, self.path or "")


@dataclass
class SystemState:
    mode: str | None = None
    installer: str | None = None
    init_at: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> SystemState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            from halton_meter.errors import HaltonError

            raise HaltonError(f"{path} is unreadable ({exc}); move it aside to start over") from None
        changes = [Change(**c) for c in data.get("changes", [])]
        return cls(data.get("mode"), data.get("installer"), data.get("init_at"), data.get("options", {}), changes)

    def save(self, path: Path) -> None:
        data = {
            "version": STATE_VERSION,
            "mode": self.mode,
            "installer": self.installer,
            "init_at": self.init_at,
            "options": self.options,
            "changes": [asdict(c) for c in self.changes],
        }
        write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)

    def add(self, change: Change) -> None:
        """Record a change, keeping the earliest previous state of anything already recorded."""
        for existing in self.changes:
            if existing.key() == change.key():
                return
        self.changes.append(change)

    def for_step(self, step: str) -> list[Change]:
        return [c for c in self.changes if c.step == step]

    def forget(self, change: Change) -> None:
        self.changes = [c for c in self.changes if c is not change]

    def stamp(self, mode: str, installer: str, options: dict[str, Any]) -> None:
        self.mode, self.installer, self.options = mode, installer, options
        self.init_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
