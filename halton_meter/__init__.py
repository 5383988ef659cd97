"""Halton Meter: a local HTTPS proxy that meters what AI coding tools cost.

Plugins import the hook marker from here and never import pluggy themselves::

    from halton_meter import hookimpl

    @hookimpl
    def halton_register_providers(register):
        register(MyProvider())
"""

from halton_meter.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
