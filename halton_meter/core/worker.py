"""A core worker: `python -m halton_meter.core --worker N` (docs/concepts/proxy.md, "Several cores").

It runs the same mitmproxy core as the first core (`runner.serve_core`), but owns no database: its records
go to the first core over the link (`link.py`), and its budget questions to the first core's ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import structlog

from halton_meter.config import load_config
from halton_meter.core.link import LinkClient
from halton_meter.core.runner import serve_core
from halton_meter.errors import ExitCode, HaltonError
from halton_meter.host import PluginHost
from halton_meter.logs import configure_logging
from halton_meter.pricing import Pricer
from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.core")

FIRST_CORE_WAIT_SECONDS = 30.0
"""How long a starting worker waits for the first core to publish its link."""


class WorkerSink:
    """What a worker's addon and budget gate see of a writer: records go over the link to the first core;
    reservations are priced here (the same compiled prices the first core uses)."""

    def __init__(self, link: LinkClient, pricer: Pricer) -> None:
        self.link = link
        self._pricer = pricer

    def submit(self, record: CallRecord) -> bool:
        return self.link.submit(record)

    def estimate(self, record: CallRecord) -> int | None:
        return self._pricer.price(record).cost_nanos

    def set_pricer(self, pricer: Pricer) -> None:
        self._pricer = pricer


def worker_main(index: int) -> int:
    """`python -m halton_meter.core --worker N`: a core that meters traffic and hands its records to the
    first core (which the supervisor started first). Exit codes as the first core's."""
    configure_logging(f"core-{index}")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    try:
        config = load_config()
        host = PluginHost(config).load().validate_config()
    except HaltonError as exc:
        print(f"halton-meter core worker {index}: {exc.message}", file=sys.stderr, flush=True)
        return int(exc.exit_code)
    _ = host.registries
    first = wait_for_first_core(config.paths.core_state, FIRST_CORE_WAIT_SECONDS)
    if first is None:
        print(f"halton-meter core worker {index}: the first core did not start within "
              f"{FIRST_CORE_WAIT_SECONDS:.0f} s; see `halton-meter status`", file=sys.stderr, flush=True)
        return int(ExitCode.INTERNAL)

    async def run() -> int:
        link = LinkClient(config.paths.spool, index, on_lost=lambda reason: None)
        try:
            await link.connect(*first)
        except (OSError, TimeoutError) as exc:
            print(f"halton-meter core worker {index}: cannot reach the first core ({exc}); it is restarted",
                  file=sys.stderr, flush=True)
            return int(ExitCode.INTERNAL)
        try:
            return await serve_core(config, host, WorkerSink(link, Pricer(config)), worker=link)
        finally:
            link.close()

    try:
        return asyncio.run(run())
    except HaltonError as exc:
        print(f"halton-meter core worker {index}: {exc.message}", file=sys.stderr, flush=True)
        return int(exc.exit_code)
    except Exception:
        log.exception("core worker crashed", worker=index)
        return int(ExitCode.INTERNAL)


def wait_for_first_core(path: Path, timeout: float) -> tuple[int, bytes] | None:
    """(link port, secret) from `run/core.json`, waiting (bounded) for the first core to publish it."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads(path.read_text())
            if state.get("link_port"):
                return int(state["link_port"]), str(state["secret"]).encode("ascii")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
