from __future__ import annotations

import time

import click

WAIT_SECONDS = 5.0


@click.command("reload")
def command() -> int:
    """Check config.toml and wait until the running meter has taken it.

    A running meter follows config.toml by itself (within a second of a save); this validates the file
    first (an invalid one: one line, exit 2, and the meter keeps what it runs), then waits for the core and
    the edge to apply it, and says what applied and what needs `halton-meter restart` (ports, the upstream
    CA bundle).
    """
    from halton_meter import terminal
    from halton_meter.config import load_config
    from halton_meter.errors import HaltonError
    from halton_meter.host import PluginHost
    from halton_meter.serve.configwatch import file_stamp
    from halton_meter.serve.runtime import require_running
    from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats

    config = load_config()  # an invalid file stops here, with its line (exit 2)
    PluginHost(config).load().validate_config()
    require_running(config.paths)
    stamp = file_stamp(config)
    want = list(stamp) if stamp else None
    deadline = time.monotonic() + WAIT_SECONDS
    states: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        states = {name: ((read_stats(config.paths.run_dir / path) or {}).get("config") or {})
                  for name, path in (("core", CORE_STATS), ("edge", EDGE_STATS))}
        if all(s.get("stamp") == want for s in states.values()):
            break
        time.sleep(0.2)
    else:
        late = [name for name, s in states.items() if s.get("stamp") != want]
        raise HaltonError(f"the running {' and '.join(late)} did not take config.toml within {WAIT_SECONDS:g} s; "
                          "see `halton-meter logs`, or `halton-meter restart`")
    errors = {name: s["error"] for name, s in states.items() if s.get("error")}
    if errors:
        raise HaltonError(f"the running meter could not apply config.toml ({'; '.join(map(str, errors.values()))}); it keeps "
                          "the configuration it had")
    applied = sorted({a for s in states.values() for a in s.get("applied") or []})  # type: ignore[attr-defined]
    restart = sorted({r for s in states.values() for r in s.get("restart_needed") or []})  # type: ignore[attr-defined]
    terminal.line("config.toml applied" + (f": {', '.join(applied)}" if applied else " (no change in effect)"))
    if restart:
        terminal.warn(f"{', '.join(restart)} changed: takes effect after `halton-meter restart`")
    return 0
