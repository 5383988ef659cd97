"""The core process: mitmproxy plus the meter addon plus the writer thread.

Started by the supervisor (`halton-meter serve`) as `python -m halton_meter.core`. It listens on an
ephemeral loopback port, writes that port to `run/core.json` for the edge, prints `READY <port>` on stdout,
and on SIGTERM stops accepting, lets in-flight calls finish (up to `core.shutdown_grace_seconds`), commits
their records and exits 0. Exit codes: 2 config, 3 database, 1 anything else that stops it starting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from typing import Protocol

import structlog

from halton_meter.attribution.keys import load_secret
from halton_meter.attribution.service import AttributionService
from halton_meter.budgets.alerts import Alerter
from halton_meter.budgets.ledger import Ledger
from halton_meter.ca import ensure_ca, write_upstream_trust
from halton_meter.config import Config, load_config
from halton_meter.core.addon import MeterAddon
from halton_meter.core.budgetgate import BudgetGate
from halton_meter.core.link import LinkClient, LinkServer, RemoteLedger
from halton_meter.core.routing import RoutingTable
from halton_meter.errors import DatabaseError, ExitCode, HaltonError
from halton_meter.host import PluginHost
from halton_meter.logs import configure_logging
from halton_meter.paths import Paths, ensure_private_dir, write_atomic
from halton_meter.pricing import Pricer
from halton_meter.serve.configwatch import ConfigWatcher, watch
from halton_meter.serve.process import QuietLoopErrors, install_stop_handlers, watch_parent, watch_stdin
from halton_meter.serve.stats import CORE_STATS, Publisher
from halton_meter.store.schema import migrate
from halton_meter.store.writer import Writer
from halton_meter.sync.engine import SyncEngine
from halton_meter.sync_config import SyncSettings, machine_id
from halton_meter.types import CallRecord, SyncSink


class RecordSink(Protocol):
    """What the addon and the budget gate need of a writer: the first core's `Writer`, or a worker's
    `worker.WorkerSink`, which sends records to the first core."""

    def submit(self, record: CallRecord) -> bool: ...

    def estimate(self, record: CallRecord) -> int | None: ...

    def set_pricer(self, pricer: Pricer) -> None: ...

log = structlog.get_logger("halton_meter.core")


def _mitmproxy_addons() -> list[object]:
    """The few mitmproxy addons a metering proxy needs (not mitmdump's full set: less work per event)."""
    from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig

    return [
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(),
    ]


async def serve_core(config: Config, host: PluginHost, writer: Writer | RecordSink, ledger: Ledger | None = None,
                     *, worker: LinkClient | None = None) -> int:
    """Run one core until stopped. The first core (`worker` None) owns `writer` and the `ledger`, and takes
    the other cores' records over the link (`core/link.py`); a worker sends its records to the first core
    through `worker`, its link, and asks the first core's ledger about budgets."""
    from mitmproxy import options
    from mitmproxy.master import Master

    paths = config.paths
    upstream_trust = write_upstream_trust(paths, config.upstream_ca_bundle)
    opts = options.Options(
        listen_host="127.0.0.1",
        listen_port=0,
        confdir=str(paths.ca_dir),
        ssl_verify_upstream_trusted_ca=str(upstream_trust),
    )
    master = Master(opts)
    attribution = AttributionService(host.registries.attributors.ordered())
    secret = secrets.token_urlsafe(24)  # only the edge (which reads core.json, 0600) may use this core
    index = 0 if worker is None else worker.index
    state_path = paths.core_state if worker is None else paths.worker_state(index)
    link_server: LinkServer | None = None
    if worker is None:  # the first core: other cores send their records and budget questions here
        assert isinstance(writer, Writer)
        link_server = LinkServer(secret.encode("ascii"), writer.submit, ledger)
        link_port: int | None = await link_server.start()
    else:
        link_port = None

    def on_ready(port: int) -> None:
        ensure_private_dir(paths.run_dir)
        (paths.run_dir / CORE_ERROR).unlink(missing_ok=True)
        state: dict[str, object] = {"port": port, "pid": os.getpid(), "secret": secret}
        if link_port is not None:
            state["link_port"] = link_port
        write_atomic(state_path, json.dumps(state).encode(), mode=0o600)
        print(f"READY {port}", flush=True)
        log.info("core listening", port=port, worker=index)

    addon = MeterAddon(
        routing=RoutingTable(host.registries.providers),
        submit=writer.submit,
        attribution=attribution,
        resolve=config.resolve_map(),
        on_ready=on_ready,
        capture_projects=frozenset(config.capture_projects),
        capture_max_bytes=config.capture_max_bytes,
        key_secret=load_secret(paths.home),
        secret=secret,
        gate=(BudgetGate(ledger, writer.estimate) if ledger is not None else
              BudgetGate(RemoteLedger(worker, config.budgets), writer.estimate) if worker is not None else None),
    )
    master.addons.add(*_mitmproxy_addons())
    master.addons.add(addon)

    def apply_config(new: Config) -> None:
        """A changed config.toml, validated: build everything from it first, then swap it in (each swap is
        one attribute assignment, so the event loop sees either the old or the new, never half)."""
        new_host = PluginHost(new).load().validate_config()
        routing, attributors, pricer = (RoutingTable(new_host.registries.providers),
                                        new_host.registries.attributors.ordered(), Pricer(new))
        addon.routing, addon.resolve = routing, new.resolve_map()
        addon.capture_projects, addon.capture_max_bytes = frozenset(new.capture_projects), new.capture_max_bytes
        attribution.set_attributors(attributors)
        writer.set_pricer(pricer)
        if ledger is not None and new.budgets != ledger.budgets:
            loop.run_in_executor(None, ledger.set_budgets, new.budgets)  # reads spend: off the event loop
        if addon.gate is not None and isinstance(addon.gate.ledger, RemoteLedger):
            addon.gate.ledger.set_budgets(new.budgets)

    watcher = ConfigWatcher(config, apply_config)

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietLoopErrors(log))
    stopping = asyncio.Event()

    async def graceful_stop() -> None:
        log.info("stopping: no new connections; draining in-flight calls", in_flight=addon.in_flight)
        # Tell the edge first (it sends new calls elsewhere once our state file is gone), then stop listening.
        state_path.unlink(missing_ok=True)
        master.options.update(server=False)
        drained = await addon.drain(config.shutdown_grace_seconds)
        if not drained:
            log.warning("grace period over; cutting remaining calls", in_flight=addon.in_flight)
            addon.shutting_down = True  # their records say `shutdown`
        if worker is not None and not await worker.flush(LINK_FLUSH_SECONDS):
            log.warning("the first core did not acknowledge every record; they stay in this worker's journal",
                        unacked=worker.unacked)
        master.shutdown()

    def on_signal() -> None:
        if not stopping.is_set():
            stopping.set()
            loop.create_task(graceful_stop())

    install_stop_handlers(loop, on_signal)
    watch_stdin(loop, on_signal)  # the portable stop: the supervisor closes our stdin
    orphan_watch = loop.create_task(watch_parent(on_signal))
    exit_code = 0

    async def watch_writer() -> None:
        """A database truncated, replaced or deleted under the writer: say so, stop gracefully and exit 3,
        so the supervisor restarts a core that checks the file (and refuses it while it stays broken)."""
        nonlocal exit_code
        if not isinstance(writer, Writer):
            return
        while writer.fatal is None:
            await asyncio.sleep(1.0)
        print(f"halton-meter core: {writer.fatal}", file=sys.stderr, flush=True)
        _remember_failure(DatabaseError(writer.fatal))
        exit_code = int(ExitCode.DATABASE)
        on_signal()

    async def keep_budgets() -> None:
        """Read the budgets' spend once (calls pass until then: fail open), then pick up overrides and
        re-read rolling budgets every few seconds."""
        if ledger is None:
            return
        await asyncio.to_thread(ledger.load)
        while True:
            await asyncio.sleep(BUDGET_REFRESH_SECONDS)
            if ledger.budgets:  # none configured: nothing to refresh, no thread hop every 2 s
                await asyncio.to_thread(ledger.refresh)

    budget_watch = loop.create_task(keep_budgets())
    writer_watch = loop.create_task(watch_writer())
    config_watch = loop.create_task(watch(watcher))

    if worker is not None:
        def lost(reason: str) -> None:
            nonlocal exit_code
            exit_code = int(ExitCode.INTERNAL)
            on_signal()
        worker.on_lost = lost
        if worker.lost is not None:
            lost(worker.lost)

    def snapshot() -> dict[str, object]:
        assert isinstance(writer, Writer)
        stats = writer.stats
        return {
            "writer": {"submitted": stats.submitted, "committed": stats.committed, "dropped": stats.dropped,
                       "pending": writer.pending, "held": writer.held, "unsaved": stats.unsaved, "write_errors": stats.write_errors,
                       "last_error": stats.last_error, "last_error_at": stats.last_error_at,
                       "last_success_at": stats.last_success_at, "recovered": stats.recovered,
                       "journal_problem": writer.journal_problem, "hook_errors": stats.hook_errors},
            "calls": {"in_flight": addon.in_flight + (link_server.in_flight() if link_server else 0),
                      "metered": addon.metered + (link_server.metered() if link_server else 0)},
            "workers": {"configured": config.workers(), "linked": link_server.snapshot() if link_server else [],
                        "crashed_calls": link_server.crashed if link_server else 0},
            "budgets": ledger.status() if ledger is not None else [],
            "config": watcher.state.to_json(),
        }

    ensure_private_dir(paths.run_dir)
    publisher = Publisher(paths.run_dir / CORE_STATS, snapshot).start() if worker is None else None

    async def report_to_first_core() -> None:
        """The worker's counters for the first core's stats: when they change, checked once a second."""
        last: dict[str, int] = {}
        assert worker is not None
        while True:
            counters = {"in_flight": addon.in_flight, "metered": addon.metered}
            if counters != last:
                worker.report(counters)
                last = counters
            await asyncio.sleep(1.0)

    reporter = loop.create_task(report_to_first_core()) if worker is not None else None

    try:
        await master.run()
    finally:
        if reporter is not None:
            reporter.cancel()
        if link_server is not None:
            link_server.close()
        orphan_watch.cancel()
        budget_watch.cancel()
        writer_watch.cancel()
        config_watch.cancel()
        if publisher is not None:
            publisher.stop()
        attribution.close()
        try:
            state_path.unlink(missing_ok=True)
        except OSError:
            pass
    return exit_code


CORE_ERROR = "core-error.json"
LINK_FLUSH_SECONDS = 5.0
"""How long a stopping worker waits for the first core to acknowledge its last records (then they go to its
own journal, replayed at the first core's next start)."""
BUDGET_REFRESH_SECONDS = 2.0
"""How soon the core sees a `budgets override` (and re-checks rolling budgets' spend)."""


def _remember_failure(exc: HaltonError) -> None:
    """Leave the reason the core could not start where `status` and `doctor` look, so they can name it
    (the supervisor keeps retrying with backoff; the edge keeps traffic flowing meanwhile)."""
    try:
        paths = Paths.from_env()
        ensure_private_dir(paths.run_dir)
        state = {"exit_code": int(exc.exit_code), "message": exc.message, "at": time.time()}
        write_atomic(paths.run_dir / CORE_ERROR, json.dumps(state).encode(), mode=0o600)
    except OSError:
        pass


def start_sync(config: Config, host: PluginHost) -> SyncEngine | None:
    """The sync loop on its own thread when `[[sync]]` targets are configured (docs/sync.md); the change log
    is switched off when none is. A target that is not registered is logged, not fatal: metering goes on."""
    targets = host.registries.sync_targets
    usable = []
    for settings in config.sync:
        if f"sync.{settings.target}" not in targets.ids():
            log.error("sync target is not installed; its rows wait in the local database",
                      target=settings.target, known=", ".join(targets.ids()) or "none")
            continue
        usable.append(settings)

    def open_sink(settings: SyncSettings) -> SyncSink:
        return targets.get(f"sync.{settings.target}").open(settings.options)

    try:
        engine = SyncEngine(config.paths.db, usable, open_sink, machine_id=machine_id(config.paths.home))
        if not usable:
            engine.switch_on()  # off: the log stays empty and costs nothing
            return None
        return engine.start()
    except Exception as exc:  # sync must never stop the meter
        log.error("sync could not start", error=f"{type(exc).__name__}: {exc}")
        return None


def main() -> int:
    configure_logging("core")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    try:
        config = load_config()
        ensure_ca(config.paths)
        # Tell the supervisor a long migration is under way, so it waits for READY instead of restarting us
        # (which would roll the migration back, every time).
        migrate(config.paths.db, on_start=lambda old, new: print(f"MIGRATING {old} {new}", flush=True))
    except HaltonError as exc:
        print(f"halton-meter core: {exc.message}", file=sys.stderr, flush=True)
        _remember_failure(exc)
        return int(exc.exit_code)
    try:
        host = PluginHost(config).load().validate_config()
    except HaltonError as exc:
        print(f"halton-meter core: {exc.message}", file=sys.stderr, flush=True)
        _remember_failure(exc)
        return int(exc.exit_code)
    for plugin in host.errors():
        log.error("plugin failed to load", plugin=plugin.name, error=plugin.error)
    _ = host.registries  # collect now, so a broken plugin is reported before traffic arrives
    alerter = Alerter(config.paths.db)  # thresholds crossed: history, log line, notification, on_alert
    ledger = Ledger(config.budgets, config.paths.db, alert=alerter)

    def committed(record: CallRecord) -> None:
        ledger.committed(record)  # never raises: the budgets' counters move with every row
        host.hook.halton_usage_recorded(record=record)

    writer = Writer(config.paths.db, on_committed=committed, pricer=Pricer(config), spool_dir=config.paths.spool)
    # The writer thread replays what an earlier core left (retrying while the database is locked) before it
    # writes anything new; meanwhile new records are journaled and queued, so serving starts at once.
    writer.start(recover=True)
    sync = start_sync(config, host)
    try:
        code = asyncio.run(serve_core(config, host, writer, ledger))
    except HaltonError as exc:
        print(f"halton-meter core: {exc.message}", file=sys.stderr, flush=True)
        code = int(exc.exit_code)
    except Exception:
        log.exception("core crashed")
        code = int(ExitCode.INTERNAL)
    finally:
        if not writer.close(timeout=config.shutdown_grace_seconds + 5):
            log.error("some records were not written before exit", stats=vars(writer.stats))
        alerter.close(timeout=5.0)
        if sync is not None:
            sync.stop(timeout=5.0)
    return code
