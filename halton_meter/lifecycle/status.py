"""`halton-meter status`: one verdict and a row per component — the compact view of the doctor's own checks.

There is one health model. The checks that register a `status_row` (the configuration, the proxy, the core,
the API, database writes, gaps, free disk, the CA's expiry, the service) are the fast subset `status` runs, with the
same code and thresholds `doctor` uses, so the two commands never disagree on the same machine. A check
another one requires runs too, and is shown when it is what blocked a row.

* HEALTHY: every row is ok (or does not apply).
* DEGRADED: traffic flows but metering is impaired, or something needs attention (core down, writes
  failing, recent gaps, CA expiring, no service…).
* BROKEN: the proxy does not answer (clients pointed at it fail, or nothing runs at all), or config.toml is
  invalid, so the meter cannot start or restart.

Liveness means answering, not listening: the proxy must answer its own health request and the core the
canary question the edge asks before every metered call, so a frozen process is never called healthy.
"""

from __future__ import annotations

from typing import Any

from halton_meter.doctor.runner import Finding, check_context, ordered_checks, run_checks

STATUS_TIMEOUT = 3.0
"""Each status check answers in well under a second; this bounds a stuck one."""
BROKEN_WHEN_FAILING = ("check.edge", "check.config")


def row_id(finding: Finding, rows: dict[str, str]) -> str:
    return rows.get(finding.id) or finding.id.removeprefix("check.")


def collect(runner: Any | None = None) -> dict[str, Any]:
    ctx, host = check_context(runner)
    registry = host.registries.checks
    checks = ordered_checks(registry)
    rows = {c.id: c.status_row for c in checks if c.status_row}
    owners = {c.id: registry.owner(c.id) for c in checks}
    findings = run_checks(checks, ctx, timeout=STATUS_TIMEOUT, only=tuple(rows), owners=owners)
    out = [{"id": row_id(f, rows), "title": row_id(f, rows), "status": f.status, "summary": f.summary,
            "fix": f.fix, "check": f.id} for f in findings]
    edge = next((f for f in findings if f.id == "check.edge"), None)
    broken = edge is None or edge.status not in ("ok", "warn") or \
        any(f.id in BROKEN_WHEN_FAILING and f.status in ("fail", "error") for f in findings)
    if broken:
        verdict = "BROKEN"
    elif any(f.status in ("fail", "warn", "error") for f in findings):
        verdict = "DEGRADED"
    else:
        verdict = "HEALTHY"
    worst = [r for r in out if r["status"] in ("fail", "error")] + [r for r in out if r["status"] == "warn"]
    summary = "all components answer" if not worst else "; ".join(f"{r['title']}: {r['summary']}" for r in worst[:2])
    return {"verdict": verdict, "summary": summary, "rows": out}
