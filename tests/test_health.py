"""One health model: `status` is the compact view of the doctor's own checks, and liveness means answering.

A frozen (SIGSTOP) core still has a listening socket the kernel accepts on; the edge passes calls through
unmetered then, so `status` and `doctor` must say the core is down — by asking it the edge's own canary
question — and agree with each other, row for row.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from faultkit import core_pid, status_json, wait_until

from halton_meter.types import Check

pytestmark = pytest.mark.e2e


def doctor_rows(meter: Any, *ids: str) -> dict[str, dict[str, Any]]:
    args = [a for i in ids for a in ("--only", i)]
    data = json.loads(meter.cli("doctor", "--json", *args, check=False).stdout)
    return {c["id"]: c for c in data["checks"]}


def test_a_frozen_core_is_down_for_status_and_doctor_alike(start_meter) -> None:
    meter = start_meter()
    healthy = status_json(meter)
    assert healthy["verdict"] in ("HEALTHY", "DEGRADED"), healthy  # DEGRADED only for "no service installed"
    assert {r["id"]: r["status"] for r in healthy["rows"]}["core"] == "ok"
    pid = core_pid(meter)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status = status_json(meter)
        took = time.monotonic() - started
        doctor = doctor_rows(meter, "check.core")["check.core"]
    finally:
        os.kill(pid, signal.SIGCONT)
    core = next(r for r in status["rows"] if r["id"] == "core")
    assert status["verdict"] == "DEGRADED" and core["status"] == "fail", status
    assert "does not answer the edge's canary" in core["summary"] and "unmetered" in core["summary"]
    assert (doctor["status"], doctor["summary"]) == (core["status"], core["summary"])  # one model
    assert took < 10, took
    assert wait_until(lambda: next(r for r in status_json(meter)["rows"] if r["id"] == "core")["status"] == "ok",
                      15, interval=0.5, what="the core answering again")


def test_a_frozen_edge_is_broken_though_its_port_accepts(start_meter) -> None:
    import psutil

    meter = start_meter()
    edge = next(p for p in psutil.Process(meter.proc.pid).children() if "halton_meter.edge" in " ".join(p.cmdline()))
    edge.suspend()
    try:
        status = status_json(meter)
    finally:
        edge.resume()
    assert status["verdict"] == "BROKEN", status
    row = next(r for r in status["rows"] if r["id"] == "edge")
    assert row["status"] == "fail" and "accepts connections but the proxy does not answer" in row["summary"]


def test_every_status_row_is_a_doctor_check(start_meter) -> None:
    """Same rows, same verdicts: each status row names its check, and the doctor's row for that check says
    exactly the same thing."""
    meter = start_meter()
    status = status_json(meter)
    checks = [r["check"] for r in status["rows"]]
    assert checks[0] == "check.config" and "check.edge" in checks and "check.db.writes" in checks
    doctor = doctor_rows(meter, *checks)
    for row in status["rows"]:
        if row["check"] in ("check.gaps", "check.db.writes", "check.disk"):
            continue  # counters (and free bytes) move between the two runs
        assert (doctor[row["check"]]["status"], doctor[row["check"]]["summary"]) == (row["status"], row["summary"])


def test_status_rows_come_from_checks_that_declare_them() -> None:
    from halton_meter.host import PluginHost

    registry = PluginHost(None).load().registries.checks
    declared = {c.id: c.status_row for c in registry.ordered() if c.status_row}
    assert declared == {"check.config": "config", "check.edge": "edge", "check.core": "core", "check.api": "api",
                        "check.supervisor": "supervisor", "check.db.writes": "writes", "check.gaps": "gaps",
                        "check.ca.expiry": "ca", "check.disk": "disk", "check.plan": "plan", "check.sync": "sync",
                        "check.budgets": "budgets"}
    assert Check("x.y", "t", lambda ctx: None).status_row is None  # third-party checks opt in
