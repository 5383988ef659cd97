"""Run a real `halton-meter serve` for tests: temp home, ephemeral ports, upstream routed to a fake provider.

    with FakeProvider() as fake, MeterProcess.start(tmp_path, fake) as meter:
        with meter.client(extra_ca=fake.ca_pem) as client:
            client.post("https://api.anthropic.com/v1/messages", json={...})
        [record] = meter.wait_for_calls(1)

Everything is bounded in time; the process is stopped (SIGTERM, then SIGKILL) however the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from halton_meter.types import PUBLIC_FIELDS

START_TIMEOUT = 60.0
STARTED: list[MeterProcess] = []
"""Every meter started in this process, so a final check can search all their files (secrets at rest)."""


def secrets_at_rest(meters: Iterable[MeterProcess], canaries: Iterable[bytes]) -> tuple[int, list[str]]:
    """Stop each meter (so its database, WAL and logs are final) and search every file it wrote for the
    `canaries`: (files searched, one `path: canary` line per hit). Certificates and trust bundles (`ca/`)
    are public material and skipped."""
    searched, hits = 0, []
    for meter in meters:
        meter.stop()
        for path in meter.files_at_rest():
            if path.parent.name == "ca":
                continue
            data = path.read_bytes()
            searched += 1
            hits += [f"{path}: {canary.decode()}" for canary in canaries if canary in data]
    return searched, hits


def write_config(home: Path, *, ca_bundle: Path | None = None, resolve: Iterable[str] = (), extra: str = "") -> Path:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = []
    if ca_bundle is not None or resolve:
        lines.append("[upstream]")
        if ca_bundle is not None:
            lines.append(f"ca_bundle = {json.dumps(str(ca_bundle))}")
        rules = list(resolve)
        if rules:
            lines.append(f"resolve = {json.dumps(rules)}")
    if extra:
        lines.append(extra)
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def meter_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HALTON_METER_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "160"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env.update(extra)
    return env


class MeterProcess:
    def __init__(self, home: Path, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.home = home
        self.proc = proc
        self.log_path = log_path
        self.runtime: dict[str, Any] = {}

    # ---- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        home: Path,
        fake: Any | None = None,
        *,
        extra_config: str = "",
        env: dict[str, str] | None = None,
        args: Iterable[str] = (),
    ) -> MeterProcess:
        if fake is not None:
            write_config(home, ca_bundle=fake.ca_pem, resolve=fake.resolve_rules(), extra=extra_config)
        elif extra_config:
            write_config(home, extra=extra_config)
        log_path = home.parent / f"{home.name}-serve.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "halton_meter", "serve", "--edge-port", "0", "--api-port", "0", *args],
            env={**meter_env(home), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        meter = cls(home, proc, log_path)
        STARTED.append(meter)
        try:
            meter._wait_ready()
        except BaseException:  # Ctrl-C while waiting included: never leave a serve running behind
            meter.stop()
            raise
        return meter

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        runtime_path = self.home / "runtime.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                data = json.loads(runtime_path.read_text())
                if data.get("pid") == self.proc.pid:
                    self.runtime = data
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"serve did not become ready within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> MeterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def files_at_rest(self) -> list[Path]:
        """Everything this meter may have written: its home (database, WAL, spool, logs) and its output."""
        found = [p for p in self.home.rglob("*") if p.is_file()]
        if self.log_path.exists():
            found.append(self.log_path)
        return found

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ---- connecting --------------------------------------------------------------------------------

    @property
    def edge_port(self) -> int:
        return int(self.runtime["edge_port"])

    @property
    def api_port(self) -> int:
        return int(self.runtime["api_port"])

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def client_bundle(self) -> Path:
        return Path(self.runtime["client_bundle"])

    def ssl_context(self, extra_ca: Path | None = None) -> ssl.SSLContext:
        """Trusts what `halton-meter run` clients trust (certifi + our CA), plus an extra CA if given."""
        ctx = ssl.create_default_context(cafile=str(self.client_bundle))
        if extra_ca is not None:
            ctx.load_verify_locations(cafile=str(extra_ca))
        return ctx

    def client(self, extra_ca: Path | None = None, **kwargs: Any) -> Any:
        import httpx

        return httpx.Client(proxy=self.proxy_url, verify=self.ssl_context(extra_ca), trust_env=False, **kwargs)

    def async_client(self, extra_ca: Path | None = None, **kwargs: Any) -> Any:
        import httpx

        return httpx.AsyncClient(proxy=self.proxy_url, verify=self.ssl_context(extra_ca), trust_env=False, **kwargs)

    def api_get(self, path: str, token: str | None | bool = True, host: str | None = None) -> Any:
        """GET the loopback API (with the real token unless `token` says otherwise); returns the httpx
        response."""
        import httpx

        from halton_meter.paths import Paths
        from halton_meter.serve.api import read_token

        headers = {}
        value = read_token(Paths(self.home)) if token is True else token
        if value:
            headers["authorization"] = f"Bearer {value}"
        if host:
            headers["host"] = host
        return httpx.get(f"http://127.0.0.1:{self.api_port}{path}", headers=headers, trust_env=False, timeout=10)

    def env(self) -> dict[str, str]:
        """The environment `halton-meter run` would give a client."""
        from halton_meter.serve.runtime import metering_env

        return {**meter_env(self.home), **metering_env(self.runtime)}

    # ---- reading what landed -----------------------------------------------------------------------

    def rows(self, include_in_progress: bool = False) -> list[dict[str, Any]]:
        """Every finished call row straight from SQLite (read-only), oldest first, with public field names.
        Provisional rows of calls still in flight (`incomplete_reason = 'in_progress'`) only on request."""
        db = self.home / "db.sqlite"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            where = "" if include_in_progress else "WHERE incomplete_reason IS NOT 'in_progress' "
            rows = conn.execute(f"SELECT * FROM calls {where}ORDER BY started_at, id").fetchall()
        finally:
            conn.close()
        out = []
        for row in rows:
            data = dict(row)
            data["extra"] = json.loads(data["extra"] or "{}")
            out.append(data)
        return out

    def wait_for_calls(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.rows()
            if len(rows) >= count:
                return rows
            time.sleep(0.05)
        raise AssertionError(f"expected {count} call rows within {timeout}s, found {len(rows)}:\n{self.log()[-4000:]}")

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60.0, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `halton-meter ARGS` against this meter's home (extra environment as keyword arguments)."""
        result = subprocess.run(
            [sys.executable, "-m", "halton_meter", *args],
            env=meter_env(self.home, **env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"halton-meter {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def calls_json(self) -> list[dict[str, Any]]:
        data = json.loads(self.cli("calls", "--json", "--limit", "0").stdout)
        for item in data:
            assert list(item) == list(PUBLIC_FIELDS)
        return data
