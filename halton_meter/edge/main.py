"""`python -m halton_meter.edge`: the edge process's entry point — its config, routing table, socket and
live config reload."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable
from typing import Any

import structlog

from halton_meter.edge.corelink import CoreLocator
from halton_meter.edge.gaps import GapRecorder
from halton_meter.edge.limits import connection_cap
from halton_meter.edge.server import Edge, run_edge
from halton_meter.errors import ExitCode
from halton_meter.serve.process import bind_own_port

log = structlog.get_logger("halton_meter.edge")

MAX_CORES = 64
"""A sanity bound on `--cores`: choosing a core looks at every one, which is cheap for the handful a machine
runs, not for thousands."""


def _routing_and_config() -> tuple[Any, Any, Callable[[str, int], bool], str | None]:
    """The config and the routing table the edge runs on. The edge always starts: with a config.toml it
    cannot use, it runs on the defaults (built-in providers; traffic flows, metered hosts go to a core that
    still runs or pass through as counted gaps) and says why; with a plugin that breaks the host, on the
    built-in plugins alone."""
    from halton_meter.config import Config, load_config
    from halton_meter.core.routing import RoutingTable
    from halton_meter.errors import HaltonError
    from halton_meter.host import PluginHost
    from halton_meter.paths import Paths

    problem = None
    try:
        config = load_config()
    except HaltonError as exc:
        problem = exc.message
        print(f"halton-meter edge: {problem}; passing traffic through with the defaults until it is fixed",
              file=sys.stderr, flush=True)
        config = Config(paths=Paths.from_env())
    try:
        host = PluginHost(config).load().validate_config()
        routing = RoutingTable(host.registries.providers)
    except HaltonError as exc:  # a [prices] provider that does not exist: the same as any config error
        problem = exc.message
        print(f"halton-meter edge: {problem}; passing traffic through with the defaults until it is fixed",
              file=sys.stderr, flush=True)
        config = Config(paths=Paths.from_env())
        host = PluginHost(config).load()
        routing = RoutingTable(host.registries.providers)
    except Exception as exc:  # a third-party plugin that breaks the host must not stop traffic
        log.error("plugin host failed; routing with the built-in providers only",
                  error=f"{type(exc).__name__}: {exc}")
        host = PluginHost(config).load(entry_points=False)
        routing = RoutingTable(host.registries.providers)
    return config, host, routing.claims, problem


def _core_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_CORES:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_CORES}")
    return count


def main(argv: list[str] | None = None) -> int:
    from halton_meter.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m halton_meter.edge")
    parser.add_argument("--listen-fd", type=int, help="an already-bound listening socket (from the supervisor)")
    parser.add_argument("--port", type=int, help="bind 127.0.0.1:PORT instead of --listen-fd")
    parser.add_argument("--api-port", type=int, default=None)
    parser.add_argument("--cores", type=_core_count, default=1, metavar="N",
                        help="core processes to balance metered calls over (their run/core*.json files)")
    args = parser.parse_args(argv)
    configure_logging("edge")
    config, host, claims, problem = _routing_and_config()
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:  # the portable path (serve/process.py): the edge binds the port the supervisor chose
        port = args.port if args.port is not None else config.edge_port
        try:
            sock = bind_own_port(port)
        except OSError as exc:
            print(f"halton-meter edge: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); stop what holds "
                  "it or choose another port with --edge-port N", file=sys.stderr, flush=True)
            return int(ExitCode.PORT_IN_USE)
    own = {sock.getsockname()[1]}
    if args.api_port:
        own.add(args.api_port)
    from halton_meter.attribution.service import AttributionService

    attribution = AttributionService(host.registries.attributors.ordered(), workers=1)
    cores = [CoreLocator(path) for path in config.paths.core_states(args.cores)]
    edge = Edge(claims=claims, core=cores[0], cores=cores, resolve=config.resolve_map(), own_ports=own,
                idle_timeout=config.edge_idle_timeout_seconds,
                max_connections=connection_cap(config.edge_max_connections),
                gaps=GapRecorder(config.paths.spool, attribution),
                passthrough_quiet=config.edge_passthrough_quiet_seconds,
                passthrough_max_seconds=config.edge_passthrough_max_seconds)
    edge.stats.config_error = problem
    from halton_meter.core.routing import RoutingTable
    from halton_meter.host import PluginHost
    from halton_meter.paths import ensure_private_dir
    from halton_meter.serve.configwatch import ConfigWatcher

    def apply_config(new: Any) -> None:
        claims = RoutingTable(PluginHost(new).load().validate_config().registries.providers).claims
        edge.claims, edge.resolve = claims, new.resolve_map()
        edge.idle_timeout = new.edge_idle_timeout_seconds
        edge.max_connections = connection_cap(new.edge_max_connections)
        edge.passthrough_quiet = new.edge_passthrough_quiet_seconds
        edge.passthrough_max_seconds = new.edge_passthrough_max_seconds
        edge.stats.config_error = None

    watcher = ConfigWatcher(config, apply_config)
    from halton_meter.serve.stats import EDGE_STATS

    with contextlib.suppress(OSError):  # counters are informational; traffic does not wait for them
        ensure_private_dir(config.paths.run_dir)
    asyncio.run(run_edge(edge, sock, config.shutdown_grace_seconds, config.paths.run_dir / EDGE_STATS, watcher))
    return 0
