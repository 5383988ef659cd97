"""Test kits for Halton Meter and for plugin authors.

`fake_provider` is a scripted HTTPS server that answers for the real provider host names, `bodies` builds
the JSON and SSE bodies those providers send, and `meter` runs a real `halton-meter serve` against them.
The meter's own processes import nothing from here; `halton-meter demo` runs the fake provider and a meter
with these modules, so they work with the runtime dependencies alone (trustme, which makes the fake's CA,
is one). Their httpx clients (`fake.http_client()`, `meter.client()`) need httpx from the `test` extra.
"""
