"""`halton-meter doctor`: the checks on a healthy running meter and on deliberately broken homes, the runner
(concurrency, crash and timeout rows, requires-skips, fixed order), `--only`, `--json`, `--curl`, exit codes."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from halton_meter.ca import ensure_ca
from halton_meter.config import Config
from halton_meter.doctor import curl as doctor_curl
from halton_meter.doctor import runner as doctor
from halton_meter.lifecycle.commands import CommandResult, RecordingRunner
from halton_meter.lifecycle.state import SystemState
from halton_meter.paths import Paths
from halton_meter.serve.runtime import port_answers
from halton_meter.serve.stats import CORE_STATS, EDGE_STATS
from halton_meter.store.schema import migrate
from halton_meter.testing.meter import MeterProcess
from halton_meter.types import Check, CheckContext, CheckResult, ServiceState
from halton_meter_checks import basics, clients, environment, store
from halton_meter_checks import meter as meter_checks

ROW_KEYS = ["id", "title", "status", "summary", "fix", "details", "duration_ms"]


def doctor_json(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("doctor", "--json", *args)
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in data["checks"]}


def make_dist(root: Path, dist: str, plugins: dict[str, str]) -> None:
    """A fake installed distribution whose modules are `halton_meter` entry points (as in test_host.py)."""
    info = root / f"{dist}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0.0\n")
    lines = ["[halton_meter]"]
    for name, source in plugins.items():
        module = f"{dist.replace('-', '_')}_{name}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def context(paths: Paths, **overrides: Any) -> CheckContext:
    values: dict[str, Any] = {"paths": paths, "config": Config(paths=paths), "environ": {}}
    values.update(overrides)
    return CheckContext(**values)


# --------------------------------------------------------------------------------------------------
# A healthy running meter (one for the module; the core-kill test runs last)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    with MeterProcess.start(tmp_path_factory.mktemp("doctor") / "home") as meter:
        run = meter.home / "run"
        deadline = time.monotonic() + 10
        while not ((run / CORE_STATS).exists() and (run / EDGE_STATS).exists()) and time.monotonic() < deadline:
            time.sleep(0.05)  # counters are first published 2 s after start
        yield meter


@pytest.fixture
def at_meter(running: MeterProcess, monkeypatch: pytest.MonkeyPatch) -> MeterProcess:
    monkeypatch.setenv("HALTON_METER_HOME", str(running.home))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return running


def test_healthy_meter_is_green(at_meter: MeterProcess, cli: Any) -> None:
    code, data = doctor_json(cli)
    assert code == 0 and data["verdict"] == "ok"
    statuses = {row["id"]: row["status"] for row in data["checks"]}
    # Legitimately not green here: no `init` ran in this test, so no service is installed (the meter runs under
    # `serve`); whether AI clients run, and how full the disk is, depend on the machine.
    assert statuses.pop("check.supervisor") == "warn"
    assert statuses.pop("check.clients") in ("skip", "ok", "warn")
    assert statuses.pop("check.disk") in ("ok", "warn")
    # The contrib example plugin (installed in the test environment) resolves its gateway's name for real; with no
    # DNS here it warns, as it should.
    assert statuses.pop("check.example-gateway", "ok") in ("ok", "warn")
    assert {i: s for i, s in statuses.items() if s != "ok"} == {}
    expected = {"check.config", "check.home", "check.disk", "check.ca", "check.ca.key", "check.ca.expiry",
                "check.ca.bundle", "check.edge", "check.core", "check.api", "check.supervisor", "check.db",
                "check.db.writable", "check.db.writes", "check.gaps", "check.plugins", "check.env.proxy",
                "check.env.no-proxy", "check.clients", "check.clouds"}
    assert expected <= set(rows(data))
    assert rows(data)["check.edge"]["details"]["edge_port"] == at_meter.edge_port
    assert "no service installed" in rows(data)["check.supervisor"]["summary"]

    human = cli("doctor")
    assert human.exit_code == 0
    assert f"listening on 127.0.0.1:{at_meter.edge_port}" in human.stdout
    assert "fix: halton-meter init" in human.stdout  # the one warning carries its fix
    assert "0 failed" in human.stdout and "0 errors" in human.stdout


def test_json_schema_is_exact(at_meter: MeterProcess, cli: Any) -> None:
    _, data = doctor_json(cli)
    assert list(data) == ["version", "verdict", "summary", "checks"]
    assert data["version"] == 1
    assert list(data["summary"]) == ["ok", "warn", "fail", "skip", "error"]
    assert sum(data["summary"].values()) == len(data["checks"])
    for row in data["checks"]:
        assert list(row) == ROW_KEYS
        assert row["status"] in ("ok", "warn", "fail", "skip", "error")
        assert isinstance(row["summary"], str) and row["summary"]
        assert row["fix"] is None or isinstance(row["fix"], str)
        assert isinstance(row["details"], dict) and isinstance(row["duration_ms"], int)
        if row["status"] in ("warn", "fail", "error"):
            assert row["fix"], f"{row['id']} reports a problem without a fix"
    # Fixed order: every row after the rows it requires (the registry's order), whatever finished first.
    order = [row["id"] for row in data["checks"]]
    assert order.index("check.edge") < order.index("check.core")
    assert order.index("check.ca") < order.index("check.ca.key")
    assert order == [row["id"] for row in doctor_json(cli)[1]["checks"]]


def test_curl_probe_reads_each_hop_through_the_runner_seam(at_meter: MeterProcess,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    port = at_meter.edge_port
    refused = CommandResult(("curl",), 7, "", f"curl: (7) Failed to connect to 127.0.0.1 port {port}")
    runner = RecordingRunner(script={"/usr/bin/curl": refused}, present={"curl"})
    [finding] = doctor.run_doctor([doctor.PROBE_ID], runner=runner).findings
    [argv] = [c for c in runner.calls if c[0] == "/usr/bin/curl"]
    assert argv[argv.index("--proxy") + 1] == f"http://127.0.0.1:{port}"
    assert argv[argv.index("--cacert") + 1] == str(at_meter.client_bundle)
    assert argv[-1] == "https://selftest.halton-meter.invalid/v1/selftest"
    assert finding.status == "fail" and finding.summary.startswith("edge hop failed")
    assert [h["status"] for h in finding.details["hops"]] == ["fail", "skip", "skip", "skip"]

    untrusted = CommandResult(("curl",), 60, "HTTP/1.1 200 OK\r\n\r\n__halton_meter_probe__ connect=200 code=0 verify=20",
                              "*  issuer: CN=Someone Else\ncurl: (60) SSL certificate problem: unable to get local "
                              "issuer certificate")
    [finding] = doctor.run_doctor([doctor.PROBE_ID], runner=RecordingRunner(
        script={"/usr/bin/curl": untrusted}, present={"curl"})).findings
    assert [h["status"] for h in finding.details["hops"]] == ["ok", "fail", "skip", "skip"]
    assert "CN=Someone Else" in finding.summary and finding.fix.startswith("halton-meter init")

    answered = CommandResult(("curl",), 0, "HTTP/1.1 200 OK\r\n\r\nHTTP/2 200\r\nx-halton-meter: selftest\r\n\r\n"
                             "__halton_meter_probe__ connect=200 code=200 verify=0",
                             "*  issuer: CN=Halton Meter local CA; O=Halton Meter")
    monkeypatch.setattr(doctor_curl, "PROBE_RECORD_TIMEOUT", 0.2)  # no request really went through: nothing lands
    [finding] = doctor.run_doctor([doctor.PROBE_ID], runner=RecordingRunner(
        script={"/usr/bin/curl": answered}, present={"curl"})).findings
    assert [h["status"] for h in finding.details["hops"]] == ["ok", "ok", "ok", "fail"]
    assert "did not land" in finding.summary


def test_curl_probe_through_the_running_meter(at_meter: MeterProcess, cli: Any) -> None:
    before = len(at_meter.rows())
    code, data = doctor_json(cli, "--curl", "--only", doctor.PROBE_ID)
    [row] = data["checks"]
    assert (code, row["status"], row["details"]["tool"]) == (0, "ok", "curl"), row
    assert [(h["hop"], h["status"]) for h in row["details"]["hops"]] == [
        ("edge", "ok"), ("tls", "ok"), ("core", "ok"), ("record", "ok")]
    hops = {h["hop"]: h["detail"] for h in row["details"]["hops"]}
    assert f"accepted by 127.0.0.1:{at_meter.edge_port}" in hops["edge"]
    assert "Halton Meter local CA" in hops["tls"]
    assert f"--proxy http://127.0.0.1:{at_meter.edge_port}" in row["details"]["command"]
    landed = at_meter.wait_for_calls(before + 1)
    assert landed[-1]["endpoint_kind"] == "self_test"

    human = cli("doctor", "--curl", "--only", doctor.PROBE_ID)
    assert human.exit_code == 0
    assert "✓ tls" in human.stdout and "✓ record" in human.stdout


def test_curl_probe_falls_back_to_python(at_meter: MeterProcess) -> None:
    report = doctor.run_doctor([doctor.PROBE_ID], runner=RecordingRunner(present=set()))
    [finding] = report.findings
    assert (finding.status, finding.details["tool"]) == ("ok", "python"), finding
    assert [h["status"] for h in finding.details["hops"]] == ["ok"] * 4


def test_a_killed_core_is_a_failed_row(at_meter: MeterProcess, cli: Any) -> None:
    core_json = at_meter.home / "run" / "core.json"
    core = json.loads(core_json.read_text())
    os.kill(core["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while port_answers(core["port"], timeout=0.1) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The supervisor restarts the core after a 0.5 s backoff plus its start-up (about 2 s): look now.
    code, data = doctor_json(cli, "--only", "check.core")
    [row] = data["checks"]
    assert (code, row["status"]) == (6, "fail"), row
    assert f"pid {core['pid']}" in row["summary"] and "unmetered" in row["summary"]
    assert row["fix"].startswith("halton-meter restart")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            fresh = json.loads(core_json.read_text())
            if fresh["pid"] != core["pid"] and port_answers(fresh["port"]):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    assert doctor_json(cli, "--only", "check.core")[1]["checks"][0]["status"] == "ok"


# --------------------------------------------------------------------------------------------------
# Broken homes (no meter running)
# --------------------------------------------------------------------------------------------------


def test_empty_home_fails_with_fixes_and_skips_what_depends_on_the_meter(paths: Paths, cli: Any) -> None:
    code, data = doctor_json(cli)
    found = rows(data)
    assert code == 6 and data["verdict"] == "issues"
    assert found["check.edge"]["status"] == "fail" and "halton-meter init" in found["check.edge"]["fix"]
    for dependent in ("check.core", "check.api"):
        assert found[dependent]["status"] == "skip"
        assert found[dependent]["summary"] == "skipped because proxy (edge) failed"
    # Writes and gaps read what is on disk (the journal, the gap log): they need no running proxy.
    assert (found["check.db.writes"]["status"], found["check.db.writes"]["summary"]) == ("skip", "no core running")
    assert found["check.gaps"]["status"] == "ok" and "nothing went unmetered" in found["check.gaps"]["summary"]
    assert found["check.ca"]["status"] == "fail" and found["check.ca.key"]["status"] == "skip"
    assert found["check.home"]["status"] == "warn"
    assert not paths.home.exists(), "the doctor must not create anything"


def test_bad_config_is_a_failed_row_with_its_line(paths: Paths, cli: Any) -> None:
    paths.home.mkdir(mode=0o700)
    paths.config.write_text('[edge]\nport = "eighty"\n')
    code, data = doctor_json(cli)
    found = rows(data)
    assert code == 6
    assert found["check.config"]["status"] == "fail"
    assert "edge.port must be an integer port" in found["check.config"]["summary"]
    assert str(paths.config) in found["check.config"]["fix"]
    for dependent in ("check.env.proxy", "check.env.no-proxy", "check.clients"):
        assert found[dependent]["status"] == "skip", dependent

    paths.config.write_text("[edge]\nport = 1\n[api\n")
    human = cli("doctor", "--only", "check.config")
    assert human.exit_code == 6
    assert f"✗ configuration  {paths.config}:3:5: expected ']'" in human.stdout
    assert f"fix: edit {paths.config}" in human.stdout
    assert "1 problem found" in human.stdout


def test_ca_key_readable_by_others(paths: Paths, cli: Any) -> None:
    ensure_ca(paths)
    paths.ca_key_and_cert.chmod(0o644)
    code, data = doctor_json(cli, "--only", "check.ca", "--only", "check.ca.key", "--only", "check.ca.expiry",
                             "--only", "check.ca.bundle")
    found = rows(data)
    assert code == 6
    assert {i: r["status"] for i, r in found.items()} == {
        "check.ca": "ok", "check.ca.key": "fail", "check.ca.expiry": "ok", "check.ca.bundle": "ok"}
    assert found["check.ca.key"]["fix"] == f"chmod 600 {paths.ca_key_and_cert}"
    assert "mode 0644" in found["check.ca.key"]["summary"]


def test_ca_expiring_soon_and_stale_bundle(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    from halton_meter_checks import ca

    ensure_ca(paths)
    ctx = context(paths)
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    real = ca._load_cert(ctx)

    class Cert:
        not_valid_after_utc = soon

    monkeypatch.setattr(ca, "_load_cert", lambda c: Cert)
    result = ca.check_ca_expiry(ctx)
    assert result.status == "warn" and result.fix and "halton-meter init" in result.fix
    Cert.not_valid_after_utc = real.not_valid_before_utc  # in the past
    assert ca.check_ca_expiry(ctx).status == "fail"

    paths.client_bundle.write_bytes(paths.client_bundle.read_bytes() + b"\n")
    assert ca.check_trust_bundle(ctx).status == "warn"
    paths.client_bundle.write_bytes(b"")
    assert ca.check_trust_bundle(ctx).status == "fail"


def test_corrupt_database(paths: Paths, cli: Any) -> None:
    paths.home.mkdir(mode=0o700)
    paths.db.write_bytes(b"this is not sqlite" * 100)
    code, data = doctor_json(cli, "--only", "check.db.writable")
    assert code == 6  # the requirement that blocked the row asked for is shown with it: it holds the fix
    assert [(r["id"], r["status"]) for r in data["checks"]] == [("check.db", "fail"), ("check.db.writable", "skip")]
    code, data = doctor_json(cli, "--only", "check.db")
    [row] = data["checks"]
    assert (code, row["status"]) == (6, "fail")
    assert "not a valid SQLite file" in row["summary"]
    assert row["fix"].startswith(f"mv {paths.db} {paths.db}.corrupt")

    paths.db.write_bytes(b"SQLite format 3\x00" + b"\x10\x00" + b"\x01" * 5000)  # right header, garbage after it
    [row] = doctor_json(cli, "--only", "check.db")[1]["checks"]
    assert row["status"] == "fail" and "not readable" in row["summary"]


def test_database_probes_change_nothing(paths: Paths) -> None:
    migrate(paths.db)
    ctx = context(paths)
    before = {p.name: p.read_bytes() for p in paths.home.iterdir() if p.name.startswith("db.sqlite")}
    assert store.check_db(ctx).status == "ok"
    assert store.check_db_writable(ctx).status == "ok"
    after = {p.name: p.read_bytes() for p in paths.home.iterdir() if p.name.startswith("db.sqlite")}
    assert after["db.sqlite"] == before["db.sqlite"]
    assert set(after) - set(before) <= {"db.sqlite-wal", "db.sqlite-shm"}

    holder = sqlite3.connect(paths.db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        locked = store.check_db_writable(ctx)
        assert locked.status == "warn" and "locked" in locked.summary
        assert time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_plugin_that_fails_to_import(site: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "halton-meter-doctor-broken", {"broken": "raise RuntimeError('boom at import')\n"})
    code, data = doctor_json(cli, "--only", "check.plugins")
    [row] = data["checks"]
    assert (code, row["status"]) == (6, "fail")
    assert "broken: import failed: RuntimeError: boom at import" in row["summary"]
    assert row["fix"].startswith("export HALTON_METER_DISABLE_PLUGINS=broken ")

    monkeypatch.setenv("HALTON_METER_DISABLE_PLUGINS", "broken")
    code, data = doctor_json(cli, "--only", "check.plugins")
    [row] = data["checks"]
    assert (code, row["status"]) == (0, "ok") and "disabled: broken" in row["summary"]


def test_cloud_providers_row_names_the_metered_host_patterns(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    code, data = doctor_json(cli, "--only", "check.clouds")
    row = rows(data)["check.clouds"]
    assert (code, row["status"]) == (0, "ok"), row
    for pattern in ("bedrock-runtime.*.amazonaws.com", "*-aiplatform.googleapis.com", "*.openai.azure.com"):
        assert pattern in row["summary"]
    monkeypatch.setenv("HALTON_METER_DISABLE_PLUGINS", "vertex")
    code, data = doctor_json(cli, "--only", "check.clouds")
    row = rows(data)["check.clouds"]
    assert row["status"] == "warn" and "not metered: Vertex AI" in row["summary"] and "vertex" in row["fix"]
    assert row["details"]["not_metered"] == ["vertex"]


def test_no_proxy_covering_a_provider(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.anthropic.com")
    code, data = doctor_json(cli, "--only", "check.env.no-proxy")
    [row] = data["checks"]
    assert (code, row["status"]) == (0, "warn")  # a warning, not a failure
    assert "'.anthropic.com'" in row["summary"] and "api.anthropic.com" in row["summary"]
    assert row["fix"] == "export NO_PROXY=localhost,127.0.0.1 no_proxy=localhost,127.0.0.1"

    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("no_proxy", "*")
    [row] = doctor_json(cli, "--only", "check.env.no-proxy")[1]["checks"]
    assert row["status"] == "warn" and row["summary"].startswith("no_proxy entry '*'")

    monkeypatch.setenv("no_proxy", "localhost,example.org")
    [row] = doctor_json(cli, "--only", "check.env.no-proxy")[1]["checks"]
    assert row["status"] == "ok"


@pytest.mark.parametrize(("entry", "host", "bypassed"), [
    ("*", "api.anthropic.com", True),
    (".anthropic.com", "api.anthropic.com", True),
    ("anthropic.com", "api.anthropic.com", True),
    ("*.anthropic.com", "api.anthropic.com", True),
    ("api.anthropic.com:443", "api.anthropic.com", True),
    ("notanthropic.com", "api.anthropic.com", False),
    ("localhost", "api.anthropic.com", False),
    ("eu.example.com", "*.example.com", True),
    ("example.com", "*.example.com", True),
    ("other.org", "*.example.com", False),
    (".amazonaws.com", "bedrock-runtime.*.amazonaws.com", True),  # the usual corporate entry hides Bedrock
    ("bedrock-runtime.us-east-1.amazonaws.com", "bedrock-runtime.*.amazonaws.com", True),
    ("s3.amazonaws.com", "bedrock-runtime.*.amazonaws.com", False),
    ("us-east5-aiplatform.googleapis.com", "*-aiplatform.googleapis.com", True),
    ("storage.googleapis.com", "*-aiplatform.googleapis.com", False),
])
def test_no_proxy_matching(entry: str, host: str, bypassed: bool) -> None:
    assert environment.bypasses(entry, host) is bypassed


def test_proxy_variables_in_this_shell(paths: Paths) -> None:
    with socket.socket() as spare:  # a configured port nothing listens on
        spare.bind(("127.0.0.1", 0))
        configured = spare.getsockname()[1]
    config = Config(paths=paths, edge_port=configured)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        paths.home.mkdir(mode=0o700)
        paths.runtime.write_text(json.dumps({"edge_port": port, "api_port": 1, "pid": os.getpid()}))
        bundle = str(paths.client_bundle)

        def run(environ: dict[str, str], mode: str | None = None) -> CheckResult:
            return environment.check_env_proxy(context(paths, config=config, environ=environ,
                                                       state=SystemState(mode=mode)))

        assert run({}).status == "ok" and "halton-meter run" in run({}).summary
        unset_apps = run({}, mode="apps")
        assert unset_apps.status == "warn" and "apps mode" in unset_apps.summary
        ours = run({"HTTPS_PROXY": f"http://127.0.0.1:{port}", "SSL_CERT_FILE": bundle}, mode="apps")
        assert ours.status == "ok" and "points at this meter" in ours.summary
        assert run({"https_proxy": f"127.0.0.1:{port}"}).status == "warn"  # no CA variable: TLS would fail
        elsewhere = run({"HTTPS_PROXY": "http://alice:s3cret@proxy.corp:3128"})
        assert elsewhere.status == "warn" and "s3cret" not in elsewhere.summary
        assert "***@proxy.corp" in elsewhere.summary
        stale = run({"HTTPS_PROXY": f"http://127.0.0.1:{configured}", "SSL_CERT_FILE": bundle})
        assert stale.status == "fail" and f"listens on 127.0.0.1:{port}" in stale.summary
        other_local = run({"HTTPS_PROXY": f"http://127.0.0.1:{port + 1}"})
        assert other_local.status == "warn" and "not this meter" in other_local.summary
    finally:
        listener.close()
    paths.runtime.unlink()
    down = environment.check_env_proxy(context(paths, config=config,
                                               environ={"HTTPS_PROXY": f"http://127.0.0.1:{configured}"}))
    assert down.status == "fail" and down.fix == "halton-meter start"


def test_running_clients_without_the_proxy(tmp_path: Path, paths: Paths) -> None:
    fake_claude = tmp_path / "claude"
    fake_claude.symlink_to("/bin/sleep")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    metered = subprocess.Popen([str(fake_claude), "30"], env={**env, "HTTPS_PROXY": "http://127.0.0.1:8081"})
    bare = subprocess.Popen([str(fake_claude), "30"], env={**env, "HTTPS_PROXY": "", "SECRET_TOKEN": "sk-do-not-print"})
    try:
        deadline = time.monotonic() + 5
        result = clients.check_clients(context(paths))
        while time.monotonic() < deadline:
            seen = {p["pid"]: p["proxy"] for p in result.details.get("processes", [])}
            if metered.pid in seen and bare.pid in seen:
                break
            time.sleep(0.05)
            result = clients.check_clients(context(paths))
        assert seen[metered.pid] == "meter" and seen[bare.pid] == "unset"
        assert result.status == "warn" and "claude (pid" in result.summary
        assert result.fix == "quit it and start it again through the meter: halton-meter run -- claude"
        assert "sk-do-not-print" not in json.dumps(result.details) + result.summary
    finally:
        for proc in (metered, bare):
            proc.kill()
            proc.wait()


def test_identifying_clients() -> None:
    assert clients.identify("claude", ["claude"]) == "claude"
    assert clients.identify("node", ["node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"]) == "claude"
    assert clients.identify("node", ["node", "/home/u/.npm/bin/codex"]) == "codex"
    assert clients.identify("node", ["node", "server.js"]) is None
    assert clients.identify("Cursor Helper (Renderer)", []) is None
    assert clients.identify("gemini.exe", []) == "gemini"


def test_disk_space_thresholds(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    for free, status in ((50 * basics.MiB, "fail"), (500 * basics.MiB, "warn"), (5 * basics.GiB, "ok")):
        monkeypatch.setattr(basics.shutil, "disk_usage", lambda path, f=free: usage(10 * basics.GiB, 0, f))
        result = basics.check_disk(context(paths))
        assert result.status == status, (free, result)
        assert (result.fix is None) == (status == "ok")


def test_write_counters_and_gaps(paths: Paths) -> None:
    (paths.run_dir).mkdir(parents=True)
    ctx = context(paths)

    def publish(name: str, **data: Any) -> None:
        (paths.run_dir / name).write_text(json.dumps({"updated_at": time.time(), **data}))

    assert store.check_db_writes(ctx).status == "skip"  # no core: nothing published, nothing journaled
    # A live core (this process stands in for it) publishing its writer's counters.
    (paths.run_dir / "core.json").write_text(json.dumps({"port": 1, "pid": os.getpid()}))
    writer = {"pending": 12, "committed": 40, "dropped": 0, "write_errors": 3,
              "last_error": "database or disk is full", "last_error_at": time.time() - 30}
    publish(CORE_STATS, writer=writer)
    failing = store.check_db_writes(ctx)
    assert failing.status == "fail", failing
    assert failing.summary == ("last write failed 30 s ago: database or disk is full; 12 row(s) pending, all "
                               "journaled / 0 lost") and failing.fix
    publish(CORE_STATS, writer={**writer, "last_error_at": time.time() - 7200, "pending": 0, "dropped": 2})
    assert store.check_db_writes(ctx).status == "warn"
    publish(CORE_STATS, writer={**writer, "last_error_at": time.time() - 300, "pending": 0})
    recovered = store.check_db_writes(ctx)
    assert recovered.status == "ok" and "recovered" in recovered.summary
    publish(CORE_STATS, writer={**writer, "last_error_at": time.time() - 30, "last_success_at": time.time() - 1,
                                "pending": 0})
    assert store.check_db_writes(ctx).status == "ok"  # an error since which a write succeeded
    (paths.run_dir / CORE_STATS).write_text(json.dumps({"updated_at": time.time() - 120, "writer": {}}))
    assert "2 min old" in store.check_db_writes(ctx).summary

    # Gaps come from the durable gap log alone: what a process holds in memory is not evidence.
    publish(EDGE_STATS, passthrough=3, last_gap_reason="core_down")
    assert store.check_gaps(ctx).status == "ok"
    from halton_meter.store.gaps import append_line
    from halton_meter.timewindow import iso

    now = datetime.datetime.now(datetime.UTC)
    append_line(paths.spool, {"id": "old", "at": iso(now - datetime.timedelta(hours=2)), "host": "api.openai.com",
                              "reason": "core_down", "kind": "request", "calls": 1})
    old = store.check_gaps(ctx)
    assert old.status == "ok" and old.summary.startswith("1 call went unmetered in the last 24 h"), old.summary
    append_line(paths.spool, {"id": "t1", "at": iso(now), "host": "api.anthropic.com", "reason": "core restarting",
                              "kind": "tunnel", "connections": 1})
    append_line(paths.spool, {"id": "t1", "at": iso(now), "host": "api.anthropic.com", "reason": "core restarting",
                              "kind": "tunnel", "connections": 1, "calls_estimated": 3, "bytes_up": 10})
    gaps = store.check_gaps(ctx)
    assert gaps.status == "warn" and gaps.fix, gaps
    assert gaps.summary.startswith("1 pass-through connection (≥ 1 call, about 3 by estimate) and 1 call went "
                                   "unmetered in the last 24 h (last 0 s ago: core restarting)"), gaps.summary
    assert gaps.details["calls_at_least"] == 2 and gaps.details["bytes_up"] == 10


def test_service_state_comes_from_the_installer(paths: Paths) -> None:
    class Installer:
        id = "installer.fake"

        def __init__(self, running: bool) -> None:
            self.running = running

        def service_state(self, ctx: Any) -> ServiceState:
            assert ctx.paths == paths and ctx.options.dry_run
            if self.running:
                return ServiceState(True, True, "fake unit active")
            return ServiceState(True, False, "fake unit failed", fix="fakectl start halton-meter")

    state = SystemState(mode="apps", installer="installer.fake")
    up = meter_checks.check_supervisor(context(paths, state=state, installer=Installer(True)))
    assert up.status == "ok" and up.summary == "fake unit active (apps mode)"
    down = meter_checks.check_supervisor(context(paths, state=state, installer=Installer(False)))
    assert (down.status, down.fix) == ("fail", "fakectl start halton-meter")
    assert meter_checks.check_supervisor(context(paths, state=state)).status == "fail"  # no installer answers


# --------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------


RAISING = """
    from halton_meter import hookimpl
    from halton_meter.types import Check, CheckResult

    def explode(ctx):
        raise RuntimeError("boom in a check")

    @hookimpl
    def halton_register_checks(register):
        register(Check("check.explodes", "explodes", explode))
        register(Check("check.after-explodes", "after explodes", lambda ctx: CheckResult("ok", "fine"),
                       requires=("check.explodes",)))
        register(Check("check.fine", "fine", lambda ctx: CheckResult("ok", "all good")))
"""

HANGING = """
    import threading
    from halton_meter import hookimpl
    from halton_meter.types import Check, CheckResult

    RELEASE = threading.Event()

    def hang(ctx):
        RELEASE.wait(60)
        return CheckResult("ok", "finally")

    @hookimpl
    def halton_register_checks(register):
        register(Check("check.hangs", "hangs", hang))
"""


def test_a_check_that_raises_is_an_error_row_and_the_rest_still_run(site: Path, cli: Any) -> None:
    make_dist(site, "halton-meter-doctor-raising", {"raising": RAISING})
    code, data = doctor_json(cli)
    found = rows(data)
    assert code == 6 and data["summary"]["error"] == 1
    assert found["check.explodes"]["status"] == "error"
    assert found["check.explodes"]["summary"] == "the check crashed: RuntimeError: boom in a check"
    assert "HALTON_METER_DISABLE_PLUGINS=raising" in found["check.explodes"]["fix"]
    assert found["check.after-explodes"]["status"] == "skip"
    assert found["check.after-explodes"]["summary"] == "skipped because explodes could not run"
    assert found["check.fine"]["status"] == "ok" and found["check.config"]["status"] == "ok"


def test_a_check_that_hangs_times_out(site: Path, cli: Any) -> None:
    make_dist(site, "halton-meter-doctor-hanging", {"hanging": HANGING})
    try:
        started = time.monotonic()
        code, data = doctor_json(cli, "--timeout", "0.5")
        elapsed = time.monotonic() - started
        found = rows(data)
        assert code == 6
        assert found["check.hangs"]["status"] == "error"
        assert found["check.hangs"]["summary"] == "the check did not finish within 0.5 s (timed out)"
        assert found["check.hangs"]["duration_ms"] == 500
        assert found["check.config"]["status"] == "ok" and found["check.plugins"]["status"] == "ok"
        assert elapsed < 4, elapsed
    finally:
        sys.modules["halton_meter_doctor_hanging_hanging"].RELEASE.set()


def test_runner_orders_skips_and_guards(paths: Paths) -> None:
    from halton_meter.host import Registry

    registry: Registry[Check] = Registry("check")
    seen: list[str] = []
    lock = threading.Lock()

    def record(name: str, result: CheckResult) -> Any:
        def run(ctx: CheckContext) -> CheckResult:
            with lock:
                seen.append(name)
            return result
        return run

    registry.add(Check("z.root", "root", record("z.root", CheckResult("fail", "broken", fix="mend it"))), "p")
    registry.add(Check("a.child", "child", record("a.child", CheckResult("ok", "x")), requires=("z.root",)), "p")
    registry.add(Check("b.grandchild", "grandchild", record("b", CheckResult("ok", "x")), requires=("a.child",)), "p")
    registry.add(Check("m.bad", "bad", lambda ctx: "not a result"), "p")  # type: ignore[arg-type, return-value]
    registry.add(Check("n.warns", "warns", record("n", CheckResult("warn", "hm", fix="look"))), "p")
    registry.add(Check("o.after-warn", "after", record("o", CheckResult("ok", "y")), requires=("n.warns",)), "p")
    findings = doctor.run_checks(doctor.ordered_checks(registry), context(paths))
    assert [(f.id, f.status) for f in findings] == [
        ("m.bad", "error"), ("n.warns", "warn"), ("z.root", "fail"), ("a.child", "skip"), ("o.after-warn", "ok"),
        ("b.grandchild", "skip")]
    assert "a.child" not in seen and "b" not in seen  # skipped checks never run
    assert findings[3].summary == "skipped because root failed"
    assert findings[5].summary == "skipped because child was skipped"
    assert "not a CheckResult" in findings[0].summary
    report = doctor.Report(tuple(findings))
    assert report.counts() == {"ok": 1, "warn": 1, "fail": 1, "skip": 2, "error": 1}
    assert report.exit_code == 6 and report.to_json()["verdict"] == "issues"
    assert doctor.Report(tuple(f for f in findings if f.status in ("ok", "warn", "skip"))).exit_code == 0

    # A requirement whose plugin is disabled cannot stop the doctor: the order falls back, the check runs.
    orphan: Registry[Check] = Registry("check")
    orphan.add(Check("x.orphan", "orphan", record("x", CheckResult("ok", "ran")), requires=("gone.check",)), "p")
    assert [(f.id, f.status) for f in doctor.run_checks(doctor.ordered_checks(orphan), context(paths))] == [
        ("x.orphan", "ok")]


def test_checks_run_concurrently(paths: Paths) -> None:
    barrier = threading.Barrier(3, timeout=2)

    def meet(ctx: CheckContext) -> CheckResult:
        barrier.wait()  # only passes if all three run at the same time
        return CheckResult("ok", "met")

    checks = [Check(f"c.{i}", f"c{i}", meet) for i in range(3)]
    assert [f.status for f in doctor.run_checks(checks, context(paths), timeout=4)] == ["ok"] * 3


def test_only_and_usage_errors(cli: Any) -> None:
    code, data = doctor_json(cli, "--only", "check.config")
    assert (code, [(r["id"], r["status"]) for r in data["checks"]]) == (0, [("check.config", "ok")])
    code, data = doctor_json(cli, "--only", "check.core", "--only", "check.config")
    assert code == 6  # core is skipped because no meter runs: the edge row that says so comes along
    assert [(r["id"], r["status"]) for r in data["checks"]] == [
        ("check.config", "ok"), ("check.edge", "fail"), ("check.core", "skip")]

    unknown = cli("doctor", "--only", "check.nope")
    assert unknown.exit_code == 2
    assert "unknown check id check.nope" in unknown.stderr and "check.core" in unknown.stderr
    assert doctor.PROBE_ID in unknown.stderr

    help_text = cli("doctor", "--help").stdout
    for needle in ("Exit codes:", "6  at least one check failed", '"version": 1', '"verdict": "ok" | "issues"',
                   '"duration_ms": N'):
        assert needle in help_text
    assert "doctor" in cli("--help").stdout
