"""The Grafana dashboards under contrib/grafana cannot drift: every Prometheus query names a series a real
`/metrics` scrape exposes, and every SQL query runs against a real team database built by the sync target."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from reportkit import call, write

from halton_meter.paths import Paths
from halton_meter.serve import metrics

ROOT = Path(__file__).resolve().parent.parent / "contrib" / "grafana"


def queries(name: str, key: str) -> list[str]:
    board = json.loads((ROOT / name).read_text())
    return [t[key] for panel in board["panels"] for t in panel["targets"]]


def test_prometheus_queries_name_series_the_meter_exposes(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "home")
    paths.home.mkdir(mode=0o700)
    write(paths.db, [call(started_at="2026-11-22T10:00:00.000000Z", ttft_ms=300.0, streamed=True)])
    text = metrics.scrape(paths).decode()
    exposed = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    used = {name for expr in queries("halton-meter-prometheus.json", "expr")
            for name in re.findall(r"\bhalton_meter_[a-z_]+", expr)}
    assert used and used <= exposed, used - exposed


def test_postgres_queries_run_against_the_team_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    psycopg = pytest.importorskip("psycopg")
    from pgkit import PASSWORD, running_postgres

    from halton_meter.sync.engine import SyncEngine
    from halton_meter.sync_config import parse_sync
    from halton_meter_plugins.sync.postgres import open_sink

    db = tmp_path / "db.sqlite"
    rng = random.Random(3)
    write(db, [call(started_at=f"2026-11-2{d}T10:00:00.000000Z", project=p, cost_nanos=rng.randrange(1, 10**7))
               for d in range(1, 6) for p in ("acme", "docs")])
    monkeypatch.setenv("GRAFANA_PG", PASSWORD)
    with running_postgres() as pg:
        [settings] = parse_sync([{"target": "postgres", "url": pg.url, "password_env": "GRAFANA_PG", "user": "al"}])
        sync = SyncEngine(db, [settings], lambda s: open_sink(s.options), machine_id="a" * 32)
        sync.switch_on()
        while sync.run_once().sent:
            pass
        sync.stop()
        with psycopg.connect(pg.url, password=PASSWORD) as conn:
            for sql in queries("halton-meter-team-postgres.json", "rawSql"):
                # Grafana's macros, as it expands them for the last 30 days.
                ready = sql.replace("$__timeFilter(day)", "day >= now() - interval '3650 days'")
                rows = conn.execute(ready).fetchall()
                assert rows, sql
