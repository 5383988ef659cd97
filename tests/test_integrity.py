"""Integrity under keep-alive clients and combined faults, and no way around the target policy.

Every SDK and coding tool keeps connections alive, and real failures come in pairs. Each test here counts
what the fake provider itself received and asserts

    requests the provider received = rows landed + rows pending (→ 0) + calls covered by gaps

where a pass-through tunnel's calls are its estimate from the TLS record pattern — exact for the HTTP/1.1
clients used here, and asserted as such. The tests that break the meter get their own `serve`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faultkit
import httpx
import pytest
from faultkit import (
    HEADERS,
    LOCKER,
    MESSAGES,
    assert_received,
    core_pid,
    fill,
    fresh_edge_stats,
    gap_rows,
    in_progress_rows,
    read_http_message,
    request_json,
    small_tmpfs_at,
    status_json,
    status_row,
    timed_call,
    wait_core_pid,
    wait_until,
    wedged_core,
)

from halton_meter.store.journal import backlog
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _fresh_routes(fake_provider: FakeProvider) -> None:
    fake_provider.clear()
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=11, output_tokens=3)))


def keep_alive_client(meter: MeterProcess, fake: FakeProvider, timeout: float = 15.0) -> httpx.Client:
    """One kept-alive connection, as every SDK uses: calls reuse it while it lives."""
    return meter.client(extra_ca=fake.ca_pem, timeout=timeout,
                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


def wait_metering(meter: MeterProcess, timeout: float = 20.0) -> None:
    """Until the edge publishes that the core answers again."""
    wait_until(lambda: fresh_edge_stats(meter).get("core_down_since") is None, timeout, interval=0.2,
               what="the edge seeing the core answer again")


def edge_pid(meter: MeterProcess) -> int:
    import psutil

    return next(p.pid for p in psutil.Process(meter.proc.pid).children()
                if "halton_meter.edge" in " ".join(p.cmdline()))


def tunnel_gaps(meter: MeterProcess) -> list[dict[str, Any]]:
    return [g for g in gap_rows(meter) if g["kind"] == "tunnel"]


# ==================================================================================================
# K1: a keep-alive client opened during a core outage
# ==================================================================================================


def test_k1_a_tunnel_opened_while_the_core_was_wedged_closes_when_idle_and_later_calls_are_metered(
        start_meter, fake_provider) -> None:
    """Identity: 2 calls while the core is stopped (one pass-through tunnel, estimated 2) + 20 calls after it
    is back on the same client = 20 rows + 2 calls covered by the gap. The tunnel is closed by the edge at its
    first idle moment after recovery, so the 20 go through the core on a new connection."""
    meter = start_meter()
    base = len(fake_provider.requests)
    with wedged_core(meter) as pid, keep_alive_client(meter, fake_provider) as client:
        during = [timed_call(client) for _ in range(2)]
        assert [r.status for r in during] == [200, 200], during
        time.sleep(1.0)
        os.kill(pid, signal.SIGCONT)
        wait_metering(meter)
        wait_until(lambda: fresh_edge_stats(meter).get("passthrough_closed_idle") == 1, 10,
                   what="the edge closing the idle pass-through tunnel")
        after = [timed_call(client) for _ in range(20)]
    assert [r.status for r in after] == [200] * 20, [r.error for r in after]
    ledger = assert_received(meter, fake_provider, base)
    assert (ledger.landed, ledger.gaps, ledger.gap_rows) == (20, 2, 1)
    [gap] = tunnel_gaps(meter)
    assert gap["calls_estimated"] == 2 and gap["connections"] == 1
    assert gap["bytes_up"] > 0 and gap["bytes_down"] > 0 and gap["duration_ms"] > 1000 and gap["ended_at"]
    # Who it was, from the process (a tunnel shows no User-Agent): the test runner, in this repository.
    assert gap["reason"] == "core did not answer the probe" and gap["client"] == "python" and gap["project"]


def test_k1_a_busy_keep_alive_tunnel_is_counted_call_by_call_and_bounded_in_age(start_meter, fake_provider) -> None:
    """Identity: calls every 0.8 s on one client across a 6 s wedge = rows + calls covered by gaps, each
    pass-through tunnel counted by its estimate (never "1 call" for many). With `passthrough_max_seconds = 2`
    a tunnel is ended at an idle moment once it is 2 s old even while the core is still down, so the wedge
    makes several tunnels, each bounded."""
    meter = start_meter(extra_config="[edge]\npassthrough_max_seconds = 2\npassthrough_quiet_seconds = 0.5")
    base = len(fake_provider.requests)
    results = []
    with keep_alive_client(meter, fake_provider) as client:
        with wedged_core(meter):
            stop_at = time.monotonic() + 6.0
            while time.monotonic() < stop_at:
                results.append(timed_call(client))
                time.sleep(0.8)
        wait_metering(meter)
        for _ in range(6):
            results.append(timed_call(client))
            time.sleep(0.7)
    assert all(r.status == 200 for r in results), [r.error for r in results if r.error]
    ledger = assert_received(meter, fake_provider, base)
    gaps = tunnel_gaps(meter)
    assert len(gaps) >= 2, gaps  # bounded in age: more than one tunnel over a 6 s wedge
    assert all(g["duration_ms"] < 6000 for g in gaps)
    assert ledger.gaps == sum(g["calls_estimated"] for g in gaps) >= len(results) - 6
    assert ledger.landed >= 4


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_k1_calls_during_a_core_restart_wait_for_it_and_are_metered(start_meter, fake_provider, outage) -> None:
    """Identity: 1 call opened while the core restarts + 20 after = 21 rows + 0 gaps: the CONNECT waits the
    restart grace instead of passing through."""
    meter = start_meter()
    base = len(fake_provider.requests)
    pid = core_pid(meter)
    assert pid is not None
    os.kill(pid, signal.SIGTERM if outage == "restart" else signal.SIGKILL)
    with keep_alive_client(meter, fake_provider) as client:
        first = timed_call(client)
        rest = [timed_call(client) for _ in range(20)]
    assert first.status == 200 and first.elapsed < 5.0, first
    assert [r.status for r in rest] == [200] * 20
    ledger = assert_received(meter, fake_provider, base)
    assert (ledger.landed, ledger.gaps) == (21, 0)
    assert fresh_edge_stats(meter)["restart_waits"] >= 1


# ==================================================================================================
# K2: many keep-alive clients, the core killed mid-run
# ==================================================================================================


@pytest.mark.parametrize("cores,victim_file", [(1, "core.json"), (2, "core.json"), (2, "core-worker-1.json")],
                         ids=["one-core", "two-cores-kill-the-first", "two-cores-kill-the-worker"])
def test_k2_twenty_keep_alive_clients_and_a_kill_9_leave_nothing_unaccounted(start_meter, fake_provider, cores,
                                                                              victim_file) -> None:
    """Identity, call by call: every request the provider received has a row or is covered by a gap, and
    the only rows the provider never saw are calls the crash cut before they were forwarded (`core_crash`,
    and their clients saw an error). Each call names a model of its own so rows and requests can be matched.
    With two cores, either may be the one killed (docs/concepts/proxy.md, "Several cores")."""
    fake_provider.clear()
    fake_provider.add("POST", "/v1/messages", lambda received: Reply(
        body=bodies.anthropic_message(input_tokens=13, output_tokens=2, model=received.json()["model"])))
    meter = start_meter(env={"HALTON_METER_WORKERS": str(cores)})
    base = len(fake_provider.requests)
    state = meter.home / "run" / victim_file
    victim = wait_until(lambda: state.exists() and json.loads(state.read_text())["pid"], 30, what=victim_file)
    assert victim is not None
    results: dict[str, Any] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with keep_alive_client(meter, fake_provider, timeout=20) as client:
            for i in range(60):  # bounded: 60 calls at most, 5 a second
                if stop.is_set():
                    return
                model = f"claude-k2-{n}-{i}"
                body = {**request_json(), "model": model}
                try:
                    response = client.post(MESSAGES, json=body, headers=HEADERS)
                    outcome: Any = response.status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    results[model] = outcome
                time.sleep(0.2)

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(client_loop, n) for n in range(20)]
        time.sleep(3.0)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: state.exists() and json.loads(state.read_text())["pid"] != victim, 40,
                   what=f"a new process publishing {victim_file}")
        time.sleep(3.0)
        stop.set()
        for future in futures:
            future.result(timeout=60)
    received = {r.json()["model"] for r in fake_provider.requests[base:] if r.path == "/v1/messages"}
    # The identity, with the one kind of row the provider never saw: a call the crash cut after its record
    # was journaled but before it was forwarded (`core_crash`; checked below). Waits (bounded) for recovery.
    deadline = time.monotonic() + 30
    while True:
        ledger = faultkit.ledger(meter)
        phantoms = {r["model_requested"] for r in meter.rows()} - received
        if ledger.pending == 0 and ledger.total() == len(received) + len(phantoms):
            break
        assert time.monotonic() < deadline, (ledger, len(received), len(phantoms))
        time.sleep(0.1)
    rows = {r["model_requested"]: r for r in meter.rows()}
    gap_calls = ledger.gaps
    unrowed = received - set(rows)
    assert len(unrowed) == gap_calls, (len(unrowed), gap_calls)
    phantoms = set(rows) - received
    assert len(phantoms) <= 20, phantoms  # at most one in flight per client at the kill
    assert all(rows[m]["incomplete_reason"] == "core_crash" and rows[m]["status"] is None for m in phantoms), phantoms
    assert all(results[m] != 200 for m in phantoms), [(m, results[m], rows[m]) for m in phantoms]
    # (A call the provider answered can still be `core_crash`: the kill came after its last byte reached the
    # client but before its final record was journaled. Its row exists; it is just incomplete.)
    assert len(received) >= 200 and len(rows) - len(phantoms) + gap_calls == len(received)


# ==================================================================================================
# C1–C3: combined faults
# ==================================================================================================


def _locker(db: Path, seconds: float) -> subprocess.Popen[str]:
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def test_c1_database_locked_then_core_killed_loses_nothing(start_meter, fake_provider) -> None:
    """Identity: 3 + 10 calls (queued behind a 15 s lock, then the core killed) + 5 (while the new core's
    recovery waits for the lock) = 18 rows once the lock is gone, 0 gaps."""
    meter = start_meter()
    base = len(fake_provider.requests)
    with keep_alive_client(meter, fake_provider) as client:
        assert [timed_call(client).status for _ in range(3)] == [200] * 3
        meter.wait_for_calls(3)
        locker = _locker(meter.home / "db.sqlite", 15)
        try:
            assert [timed_call(client).status for _ in range(10)] == [200] * 10
            victim = core_pid(meter)
            assert victim is not None
            wait_until(lambda: backlog(meter.home / "spool")[0] >= 10, 5, what="10 calls journaled")
            os.kill(victim, signal.SIGKILL)
            wait_core_pid(meter, other_than=victim, timeout=30)
            more = [timed_call(client) for _ in range(5)]
            assert [r.status for r in more] == [200] * 5
            assert len(meter.rows()) == 3  # nothing could be written yet
        finally:
            assert locker.wait(30) == 0
    ledger = assert_received(meter, fake_provider, base, timeout=30)
    assert (ledger.landed, ledger.gaps) == (18, 0)
    assert all(r["complete"] and r["input_tokens"] == 11 for r in meter.rows())


def test_c2_database_locked_then_an_ordinary_stop_loses_nothing(start_meter, fake_provider, tmp_path) -> None:
    """Identity: 10 calls queued behind a lock when `serve` is stopped = 10 journaled (status says so while
    nothing runs) = 10 rows after the next start, once the lock is gone."""
    home = tmp_path / "home-c2"
    meter = start_meter(home)
    base = len(fake_provider.requests)
    locker = _locker(meter.home / "db.sqlite", 30)
    try:
        with keep_alive_client(meter, fake_provider) as client:
            assert [timed_call(client).status for _ in range(10)] == [200] * 10
        assert meter.stop(timeout=60) == 0
        assert backlog(home / "spool") == (10, 0)
        writes = status_row(status_json(meter), "writes")
        assert writes["status"] == "warn" and "10 row(s) pending, all journaled / 0 lost" in writes["summary"], writes
    finally:
        locker.kill()
        locker.wait(10)
    again = start_meter(home)
    ledger = assert_received(again, fake_provider, base, timeout=30)
    assert (ledger.landed, ledger.gaps) == (10, 0)


def kept_ids(meter: MeterProcess) -> set[str]:
    """Calls that are either in a row or in the journal (a full disk lets some commits through)."""
    from halton_meter.store.journal import read_segment

    journaled = {d["id"] for p in (meter.home / "spool").glob("journal-*.seg") for d in read_segment(p)
                 if d.get("incomplete_reason") != "in_progress"}
    return journaled | {r["id"] for r in meter.rows()}


def test_c3_disk_full_then_core_killed_loses_nothing(fake_provider, tmp_path_factory) -> None:
    """Identity: 3 + 20 calls with the data directory's disk full, then the core killed = 23 rows once space is
    freed (the journal's segments were allocated ahead, so the full disk could not stop it), 0 gaps."""
    base_dir = tmp_path_factory.mktemp("c3")
    with small_tmpfs_at(base_dir / "tiny") as home:
        meter = MeterProcess.start(home, fake_provider)
        try:
            base = len(fake_provider.requests)
            with keep_alive_client(meter, fake_provider) as client:
                assert [timed_call(client).status for _ in range(3)] == [200] * 3
                meter.wait_for_calls(3)
                filler = fill(home)
                results = [timed_call(client) for _ in range(20)]
            assert [r.status for r in results] == [200] * 20
            wait_until(lambda: len(kept_ids(meter)) >= 23, 10, what="every call in a row or the journal")
            victim = core_pid(meter)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            time.sleep(2.0)  # the new core's recovery meets the full disk too, and keeps trying
            filler.unlink()
            ledger = assert_received(meter, fake_provider, base, timeout=40)
            assert (ledger.landed, ledger.gaps) == (23, 0)
        finally:
            meter.stop()
            import shutil

            shutil.copytree(meter.home, base_dir / "home-copy", ignore=shutil.ignore_patterns("filler.bin"))
            meter.home = base_dir / "home-copy"


# ==================================================================================================
# C4, C5: the proxy answers whatever the config or the database
# ==================================================================================================


def test_c4_a_bad_config_and_an_edge_crash_never_hang_a_call(start_meter, fake_provider) -> None:
    """Identity: 2 calls (one before, one after the edge is killed and restarts on a broken config) = 2 rows:
    the restarted edge runs on the defaults, the running core still meters; `status` says BROKEN, naming
    the config line."""
    meter = start_meter()
    base = len(fake_provider.requests)
    with keep_alive_client(meter, fake_provider) as client:
        assert timed_call(client).status == 200
    config = meter.home / "config.toml"
    config.write_text(config.read_text() + "\n[edge]\nport = \n")
    os.kill(edge_pid(meter), signal.SIGKILL)
    with keep_alive_client(meter, fake_provider, timeout=10) as client:
        started = time.monotonic()
        after = timed_call(client)
    assert after.status == 200 and time.monotonic() - started < 5.0, after
    status = status_json(meter)
    assert status["verdict"] == "BROKEN" and status["rows"][0]["id"] == "config", status["rows"][0]
    assert "config.toml" in status["rows"][0]["summary"] and "passes traffic on the defaults" in \
        status["rows"][0]["summary"]
    edge = fresh_edge_stats(meter)
    assert edge["config_error"] and "config.toml" in edge["config_error"]
    ledger = assert_received(meter, fake_provider, base)
    assert (ledger.landed, ledger.gaps) == (2, 0)


def test_c5_a_corrupt_database_at_start_still_passes_calls_and_counts_them(fake_provider, tmp_path) -> None:
    """Identity: 3 calls while the core refuses the database = 3 calls covered by gaps (logged by the edge,
    which needs no database), ingested once the file is moved aside and a core starts; + 2 metered after."""
    home = tmp_path / "home-c5"
    write_config(home, ca_bundle=fake_provider.ca_pem, resolve=fake_provider.resolve_rules())
    (home / "db.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(16384))
    meter = MeterProcess.start(home)
    try:
        base = len(fake_provider.requests)
        wait_until(lambda: (home / "run" / "core-error.json").exists(), 20, what="the core refusing the database")
        with httpx.Client(proxy=meter.proxy_url, verify=meter.ssl_context(fake_provider.ca_pem), trust_env=False,
                          timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            during = [timed_call(client) for _ in range(3)]
        assert [r.status for r in during] == [200] * 3 and max(r.elapsed for r in during) < 3.0
        assert len([line for line in (home / "spool" / "gaps.jsonl").read_text().splitlines()]) >= 3
        core = status_row(status_json(meter), "core")
        assert "not a valid SQLite file" in core["summary"]
        os.replace(home / "db.sqlite", home / "db.sqlite.corrupt")
        wait_until(lambda: core_pid(meter) is not None, 40, what="a core starting on a fresh database")
        wait_metering(meter)
        with keep_alive_client(meter, fake_provider) as client:
            assert [timed_call(client).status for _ in range(2)] == [200] * 2
        ledger = assert_received(meter, fake_provider, base, timeout=20)
        assert (ledger.landed, ledger.gaps) == (2, 3)
    finally:
        meter.stop()


# ==================================================================================================
# X1, X2: no sequence of requests reaches a refused address
# ==================================================================================================


class LoopbackCanary:
    """A plain TCP server on loopback that records every connection it gets: it must get none."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _exchange(sock: socket.socket, data: bytes, timeout: float = 5.0) -> bytes:
    sock.sendall(data)
    sock.settimeout(timeout)
    head, body = read_http_message(sock.recv)
    return head + b"\r\n\r\n" + body


SELFTEST_PLAIN = (b"POST http://selftest.halton-meter.invalid:443/v1/selftest HTTP/1.1\r\n"
                  b"host: selftest.halton-meter.invalid:443\r\ncontent-type: application/json\r\n"
                  b"content-length: 2\r\n\r\n{}")
"""Plain HTTP to a metered host that needs no network: the self-test canary, which the core answers."""


def test_x1_plain_http_to_a_metered_host_then_a_loopback_target_on_the_same_connection_is_refused(
        start_meter) -> None:
    """The self-test host is metered and answers offline: after a plain-HTTP request to it, the same
    connection asks for a loopback service and for cloud metadata. Both refused; the canary sees nothing."""
    meter = start_meter()
    canary = LoopbackCanary()
    try:
        with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as sock:
            first = _exchange(sock, SELFTEST_PLAIN)
            assert first.startswith(b"HTTP/1.1 200"), first[:200]
            second = _exchange(sock, f"GET http://127.0.0.1:{canary.port}/ HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
            assert second.startswith(b"HTTP/1.1 403"), second[:200]
        for attempt in (f"CONNECT 127.0.0.1:{canary.port} HTTP/1.1\r\n\r\n",
                        "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nhost: 169.254.169.254\r\n\r\n",
                        f"GET http://[::ffff:127.0.0.1]:{canary.port}/ HTTP/1.1\r\nhost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as sock:
                warm = _exchange(sock, SELFTEST_PLAIN)
                assert warm.startswith(b"HTTP/1.1 200"), warm[:100]
                reply = _exchange(sock, attempt.encode())
                # A CONNECT after a plain-HTTP request is not a proxy request h11 accepts (400); the others
                # are refused by the target policy (403). Neither is relayed anywhere.
                assert reply.startswith(b"HTTP/1.1 400" if attempt.startswith("CONNECT") else b"HTTP/1.1 403"), reply
    finally:
        canary.close()
    assert canary.hits == 0


def test_x2_nothing_but_the_edge_may_use_the_core(start_meter) -> None:
    """Straight to the core's port: without the secret everything is refused; with it, a target the policy
    refuses still is. The loopback canary sees nothing; a real tunnel through the edge still works."""
    meter = start_meter()
    state = json.loads((meter.home / "run" / "core.json").read_text())
    port, secret = state["port"], state["secret"]
    assert len(secret) >= 24 and os.stat(meter.home / "run" / "core.json").st_mode & 0o077 == 0
    canary = LoopbackCanary()
    attempts = [
        f"CONNECT 127.0.0.1:{canary.port} HTTP/1.1\r\nhost: 127.0.0.1:{canary.port}\r\n\r\n",
        f"GET http://127.0.0.1:{canary.port}/ HTTP/1.1\r\nhost: 127.0.0.1:{canary.port}\r\n\r\n",
        "CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n",
        "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nhost: 169.254.169.254\r\n\r\n",
        f"CONNECT 127.0.0.1:{canary.port} HTTP/1.1\r\nhost: x\r\nx-halton-meter-auth: wrong\r\n\r\n",
        f"CONNECT 127.0.0.1:{canary.port} HTTP/1.1\r\nhost: x\r\nx-halton-meter-auth: {secret}\r\n\r\n",
        f"GET http://127.0.0.1:{canary.port}/ HTTP/1.1\r\nhost: x\r\nx-halton-meter-auth: {secret}\r\n\r\n",
        f"CONNECT example.com:443 HTTP/1.1\r\nhost: x\r\nx-halton-meter-auth: {secret}\r\n\r\n",
    ]
    try:
        for attempt in attempts:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                reply = _exchange(sock, attempt.encode())
            assert reply.startswith(b"HTTP/1.1 403"), (attempt, reply[:200])
    finally:
        canary.close()
    assert canary.hits == 0
    context = ssl.create_default_context(cafile=str(meter.client_bundle))
    with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as raw:
        assert _exchange(raw, b"CONNECT selftest.halton-meter.invalid:443 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        with context.wrap_socket(raw, server_hostname="selftest.halton-meter.invalid") as tls:
            answer = _exchange(tls, b"POST /v1/selftest HTTP/1.1\r\nhost: selftest.halton-meter.invalid\r\n"
                                    b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


# ==================================================================================================
# Local denial of service
# ==================================================================================================


def test_idle_connections_cannot_lock_the_api(start_meter) -> None:
    meter = start_meter()
    idle = [socket.create_connection(("127.0.0.1", meter.api_port), timeout=5) for _ in range(64)]
    try:
        started = time.monotonic()
        response = meter.api_get("/health")
        assert response.status_code == 200 and time.monotonic() - started < 2.0
        assert meter.api_get("/v1/stats").status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_the_connection_cap_follows_the_descriptor_limit_and_a_flood_is_one_quiet_line(tmp_path) -> None:
    """Under `ulimit -n 256` the edge caps itself at (256 - 64) / 2 = 96 connections; 150 idle ones get a
    503 at once beyond that (never a hang, never a traceback), and once they go the edge serves again."""
    import resource

    home = tmp_path / "home-fd"
    home.mkdir(mode=0o700)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = {**os.environ, "HALTON_METER_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter.edge", "--port", "0"], env=env, preexec_fn=limit,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        stats = wait_until(lambda: _read_json(home / "run" / "edge-stats.json"), 10, what="edge counters")
        assert stats["max_connections"] == 96
        import psutil

        port = next(c.laddr.port for c in psutil.Process(proc.pid).net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN)
        refused = 0
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
        for sock in socks[100:]:
            sock.settimeout(5)
            if sock.recv(64).startswith(b"HTTP/1.1 503"):
                refused += 1
        assert refused == 50
        # Past the descriptor limit itself: accepts fail (EMFILE) while these are held; the edge says so in
        # one quiet line, not a traceback per attempt.
        for _ in range(150):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(2.0)
        for sock in socks:
            sock.close()
        socks.clear()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert _exchange(sock, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 403")
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert b"Traceback" not in err
    accept_lines = [line for line in err.splitlines() if b"accept" in line.lower()]
    assert len(accept_lines) <= 2, accept_lines


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_status_counts_gaps_from_the_durable_log_across_an_edge_restart(start_meter, fake_provider) -> None:
    """Item 3: status and report read the gap log, not a process's memory — a restarted edge (whose
    counters start at zero) changes nothing; plain-HTTP pass-through is logged durably too."""
    meter = start_meter()
    with wedged_core(meter), httpx.Client(
            proxy=meter.proxy_url, verify=meter.ssl_context(fake_provider.ca_pem), trust_env=False, timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0)) as client:
        assert [timed_call(client).status for _ in range(2)] == [200, 200]
    os.kill(edge_pid(meter), signal.SIGKILL)
    wait_until(lambda: fresh_edge_stats(meter).get("passthrough") == 0, 20, what="a restarted edge")
    gaps = wait_until(lambda: (row := status_row(status_json(meter), "gaps")) and row, 10, what="a gaps row")
    assert gaps["status"] == "warn" and gaps["summary"].startswith("2 pass-through connections (≥ 2 calls)"), gaps
    report = json.loads(meter.cli("report", "--json").stdout)
    assert report["gaps"]["connections"] == 2 and report["gaps"]["calls_estimated"] == 2
    assert in_progress_rows(meter) == 0


# ==================================================================================================
# A database truncated under a running meter
# ==================================================================================================


def test_a_database_truncated_under_the_meter_is_detected_and_nothing_is_lost(start_meter, fake_provider) -> None:
    """Identity: 7 calls received = 3 rows in the file before it is cut (kept, moved aside by the user) + 4
    calls made after the cut, which wait in the journal (or pass through as counted gaps while no core runs)
    and land in the new database once the cut file is moved aside, as the one-line error says.

    On the way: the writer refuses to write into the cut file (never "writes ok" while rows vanish), the core
    exits 3 and is retried with backoff while the edge keeps traffic flowing, and `status` and every reading
    command name the problem in one line with exit 3."""
    meter = start_meter()
    base = len(fake_provider.requests)
    with keep_alive_client(meter, fake_provider) as client:
        assert [timed_call(client).status for _ in range(3)] == [200] * 3
    meter.wait_for_calls(3)
    meter.cli("report")  # nothing wrong yet
    db = meter.home / "db.sqlite"
    _checkpoint(db)
    size = db.stat().st_size
    assert size > 8192
    with db.open("r+b") as fh:
        fh.truncate(size // 2)
    with httpx.Client(proxy=meter.proxy_url, verify=meter.ssl_context(fake_provider.ca_pem), trust_env=False,
                      timeout=15, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        later = []
        for _ in range(4):
            later.append(timed_call(client))
            time.sleep(0.5)
    assert all(r.status == 200 for r in later), [r.error for r in later]
    wait_until(lambda: (meter.home / "run" / "core-error.json").exists(), 30, what="the core refusing the cut file")
    assert "is truncated" in meter.log() and "Traceback" not in meter.log()
    core = status_row(status_json(meter), "core")
    assert core["status"] == "fail" and "is truncated" in core["summary"], core
    for command in (["calls"], ["projects"], ["report"], ["reprice", "--dry-run"], ["retag", "--from", "a", "--to", "b"]):
        result = meter.cli(*command, check=False)
        assert result.returncode == 3, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is truncated" in lines[0] and "Traceback" not in result.stderr, (command, lines)
    doctor = json.loads(meter.cli("doctor", "--only", "check.db", "--json", check=False).stdout)["checks"][0]
    assert doctor["status"] == "fail" and "is truncated" in doctor["summary"], doctor
    os.replace(db, meter.home / "db.sqlite.truncated")
    for suffix in ("-wal", "-shm"):
        (meter.home / f"db.sqlite{suffix}").unlink(missing_ok=True)
    wait_until(lambda: core_pid(meter) is not None, 60, what="a core on a new database")
    ledger = assert_received(meter, fake_provider, base + 3, timeout=30)
    assert ledger.landed + ledger.gaps == 4 and ledger.landed >= 1, ledger


def _checkpoint(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db, timeout=10)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def test_plain_http_to_a_metered_host_never_hangs_on_a_wedged_core(start_meter) -> None:
    """Item 6: plain HTTP to a metered host probes the core like a CONNECT does, so a stopped core costs at
    most a probe timeout: here the request goes direct (the self-test host does not resolve, so the answer is
    a prompt 502, and no gap: nothing reached a provider) instead of hanging on the wedged core."""
    meter = start_meter()
    with wedged_core(meter), socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as sock:
        started = time.monotonic()
        reply = _exchange(sock, SELFTEST_PLAIN)
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 502") and b"cannot resolve" in reply and took < 3.0, (took, reply[:200])
    time.sleep(2.5)
    assert gap_rows(meter) == []


def test_plain_http_to_a_metered_host_that_passes_through_is_one_counted_call(tmp_path) -> None:
    """Item 3: a plain-HTTP request to a metered host (a `[[compatible]]` endpoint on a LAN, plain HTTP) that
    passes through while the core is stopped is written to the gap log durably, as exactly one call.
    Identity: 3 requests the plain provider received = 1 row (before) + 2 calls covered by `request` gaps."""
    with FakeProvider(tls=False) as plain:
        plain.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(prompt_tokens=9, completion_tokens=2)))
        home = tmp_path / "home-plain"
        write_config(home, resolve=[f"lan.test:80:127.0.0.1:{plain.port}"],
                     extra='[[compatible]]\nname = "lan"\nhosts = ["lan.test:80"]\nformat = "openai"\n')
        meter = MeterProcess.start(home)
        try:
            def call() -> int:
                with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as sock:
                    body = json.dumps({"model": "lan-model", "messages": []}).encode()
                    reply = _exchange(sock, b"POST http://lan.test/v1/chat/completions HTTP/1.1\r\nhost: lan.test\r\n"
                                            b"authorization: Bearer CANARY-lan-key\r\ncontent-type: application/json\r\n"
                                            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                return int(reply.split(b" ", 2)[1])

            assert call() == 200
            meter.wait_for_calls(1)
            with wedged_core(meter):
                assert [call(), call()] == [200, 200]
            gaps = wait_until(lambda: len(g := [x for x in gap_rows(meter) if x["kind"] == "request" and x["ended_at"]])
                              == 2 and g, 15, what="two request gaps, closed")
            assert all(g["calls"] == 1 and g["host"] == "lan.test" and g["bytes_down"] > 0 for g in gaps), gaps
            assert len(plain.requests) == 3 == len(meter.rows()) + sum(g["calls"] for g in gaps)
            report = json.loads(meter.cli("report", "--json").stdout)["gaps"]
            assert (report["calls"], report["connections"]) == (2, 0)
        finally:
            meter.stop()


# ==================================================================================================
# Config edits apply to a running meter
# ==================================================================================================


def test_a_price_edit_applies_to_the_next_call_and_a_broken_edit_changes_nothing(start_meter, fake_provider) -> None:
    """Item 4: edit a price, `reload`, and the next call is priced with it; a broken edit is refused, the meter
    keeps pricing with what it has and `status` says so; a port change is named as needing a restart."""
    meter = start_meter()
    config = meter.home / "config.toml"
    original = config.read_text()

    def call_cost() -> int:
        before = len(meter.rows())
        with keep_alive_client(meter, fake_provider) as client:
            assert timed_call(client).status == 200
        return meter.wait_for_calls(before + 1)[-1]["cost_nanos"]

    assert call_cost() == 11 * 3_000 + 3 * 15_000  # list price: $3 / $15 per MTok
    config.write_text(original + '\n[prices.anthropic."claude-sonnet-4-5"]\ninput = 1.0\noutput = 2.0\n')
    reload = meter.cli("reload")
    assert "config.toml applied: [prices]" in reload.stdout, reload.stdout
    assert call_cost() == 11 * 1_000 + 3 * 2_000
    assert meter.cli("prices", "claude-sonnet-4-5", check=False).returncode == 0

    config.write_text(original + '\n[prices.anthropic."claude-sonnet-4-5"]\ninput = "cheap"\n')
    refused = meter.cli("reload", check=False)
    assert refused.returncode == 2 and "prices" in refused.stderr, refused.stderr
    time.sleep(2.5)  # the meter sees the broken file too, and keeps what it runs
    assert call_cost() == 11 * 1_000 + 3 * 2_000
    row = status_row(status_json(meter), "config")
    assert row["status"] == "fail" and "the running meter keeps the configuration it loaded" in row["summary"], row

    config.write_text(original.replace("[upstream]", "[edge]\nport = 1\n[upstream]"))
    moved = meter.cli("reload")
    assert "[edge] port changed: takes effect after `halton-meter restart`" in moved.stderr, moved.stderr
    row = status_row(status_json(meter), "config")
    assert row["status"] == "warn" and "[edge] port changed" in row["summary"], row
    assert call_cost() == 11 * 3_000 + 3 * 15_000  # the price override is gone again
