"""Halton Meter: a local HTTPS proxy that meters what AI coding tools cost.

Plugins import everything they use, the hook marker included, from `halton_meter.plugin` (the whole plugin
API; `from halton_meter import hookimpl` keeps working) and never import pluggy themselves::

    from halton_meter.plugin import hookimpl

    @hookimpl
    def halton_register_providers(register, config):
        register(MyProvider())

Importing the package itself loads nothing else: `hookimpl` (and with it pluggy) is looked up on first use
(PEP 562), so a fast path such as `halton-meter statusline` starts without pluggy.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing alone costs a cold start milliseconds
if TYPE_CHECKING:
    from typing import Any

    from halton_meter.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from halton_meter.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'halton_meter' has no attribute {name!r}")
