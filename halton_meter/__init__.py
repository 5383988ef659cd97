"""Halton Meter: a local HTTPS proxy that meters what AI coding tools cost.

Plugins import everything they use, the hook marker included, from `halton_meter.plugin` (the whole plugin
API; `from halton_meter import hookimpl` keeps working) and never import pluggy themselves::

    from halton_meter.plugin import hookimpl

    @hookimpl
    def halton_register_providers(register, config):
        register(MyProvider())
"""

from halton_meter.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
