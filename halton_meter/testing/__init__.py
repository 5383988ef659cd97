"""Test kits for Halton Meter and for plugin authors.

`fake_provider` is a scripted HTTPS server that answers for the real provider host names, `bodies` builds
the JSON and SSE bodies those providers send, and `meter` runs a real `halton-meter serve` against them.
Nothing here is imported by the meter itself; these modules need the `test` extra (trustme, httpx).
"""
