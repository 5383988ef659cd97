"""End to end through a real `halton-meter serve`: real TLS, real mitmproxy, real SQLite, real clients.

The official SDKs run as child processes of `halton-meter run`, exactly as a user would run a tool; httpx
runs in-process where a test needs timings or raw bytes. Upstream is the fake provider, reached through
`upstream.resolve` with the real provider host names, so nothing is patched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Gate, Pause, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.types import PUBLIC_FIELDS

pytestmark = pytest.mark.e2e

ANTHROPIC = "https://api.anthropic.com"
OPENAI = "https://api.openai.com"


@pytest.fixture(scope="module")
def fake_provider_hosts() -> tuple[str, ...]:
    return ("tunnel.test",)


@pytest.fixture(autouse=True)
def _fresh_routes(fake_provider: FakeProvider) -> None:
    fake_provider.clear()


def new_rows(meter: MeterProcess, before: int, count: int, timeout: float = 15.0) -> list[dict]:
    rows = meter.wait_for_calls(before + count, timeout)
    return rows[before:]


def usd(nanos: int) -> str:
    return f"{Decimal(nanos).scaleb(-9):.9f}"


def run_python(meter: MeterProcess, code: str, cwd: Path, **env: str):
    """`halton-meter run -- python -c CODE` in `cwd`: the client gets only what `run` gives it."""
    return meter.cli("run", "--", sys.executable, "-c", textwrap.dedent(code), cwd=cwd, check=False, **env)


# --------------------------------------------------------------------------------------------------
# Official SDKs through `halton-meter run`
# --------------------------------------------------------------------------------------------------


def test_anthropic_sdk_call_lands_with_exact_tokens_cost_and_project(meter, fake_provider, tmp_path) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(
        input_tokens=1200, output_tokens=340, cache_read=5000, cache_write=2000, cache_write_1h=500)))
    project = tmp_path / "acme-billing"
    project.mkdir()
    before = len(meter.rows())
    result = run_python(meter, """
        import anthropic
        client = anthropic.Anthropic(api_key="sk-ant-api03-CANARYKEY-not-a-real-key", max_retries=0)
        message = client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": "PROMPT-CANARY-1"}])
        print(message.usage.input_tokens, message.usage.output_tokens)
    """, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1200", "340"]
    [row] = new_rows(meter, before, 1)
    assert (row["provider"], row["endpoint_kind"], row["status"]) == ("anthropic", "messages", 200)
    assert (row["model"], row["model_requested"]) == ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5")
    assert (row["input_tokens"], row["output_tokens"]) == (1200, 340)
    assert (row["cache_read_tokens"], row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (5000, 2000, 500)
    assert row["complete"] and row["billable"] and row["usage_reported"] and not row["streamed"]
    # Sonnet 4.5 list prices per MTok: in $3, out $15, cache read $0.30, 5m write $3.75, 1h write $6.
    expected = (1200 * 3 + 340 * 15) * 1000 + 5000 * 300 + 1500 * 3750 + 500 * 6000
    assert row["cost_nanos"] == expected and row["priced"]
    assert (row["project"], row["project_source"]) == ("acme-billing", "cwd")
    assert row["client"] == "anthropic-sdk-python"
    assert row["user_agent"].startswith("Anthropic/Python ")
    assert row["client_process"].startswith("python")
    # The SDK's key went upstream, untouched, but was never stored.
    [received] = fake_provider.requests
    credential = received.header("x-api-key") or received.header("authorization")
    assert credential.endswith("sk-ant-api03-CANARYKEY-not-a-real-key")
    assert received.tls_sni == "api.anthropic.com"


def test_openai_sdk_stream_with_usage_is_exact(meter, fake_provider, tmp_path) -> None:
    events = bodies.openai_chat_stream_events(prompt_tokens=900, completion_tokens=120, cached_tokens=600,
                                              reasoning_tokens=40, chunks=("Hel", "lo", "!"))
    fake_provider.add("POST", "/v1/chat/completions", Reply(pieces=events, sse=True))
    before = len(meter.rows())
    result = run_python(meter, """
        import openai
        client = openai.OpenAI(api_key="sk-proj-CANARYKEY", max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o", stream=True,
            stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}])
        text, usage = "", None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        print(text, usage.prompt_tokens, usage.completion_tokens)
    """, cwd=tmp_path, HALTON_METER_PROJECT="research")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Hello!", "900", "120"]
    [row] = new_rows(meter, before, 1)
    assert (row["provider"], row["endpoint_kind"], row["model"]) == ("openai", "chat.completions", "gpt-4o-2024-08-06")
    assert row["streamed"] and row["complete"] and row["usage_reported"]
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
        300, 600, 120, 40)
    # gpt-4o per MTok: in $2.50, cached in $1.25, out $10.
    assert row["cost_nanos"] == 300 * 2500 + 600 * 1250 + 120 * 10000
    assert (row["project"], row["project_source"]) == ("research", "env")
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_run_exit_codes(meter, tmp_path) -> None:
    assert meter.cli("run", "--", sys.executable, "-c", "raise SystemExit(7)", check=False).returncode == 7
    missing = meter.cli("run", "definitely-not-a-command-xyz", check=False)
    assert missing.returncode == 127
    assert missing.stderr.strip() == "halton-meter: error: command not found: definitely-not-a-command-xyz"
    env_dump = meter.cli("run", "--", sys.executable, "-c",
                         "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
                         "['HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS']}))")
    env = json.loads(env_dump.stdout)
    assert env["HTTPS_PROXY"] == env["https_proxy"] == meter.proxy_url
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1"
    assert env["SSL_CERT_FILE"] == env["NODE_EXTRA_CA_CERTS"] == str(meter.client_bundle)


# --------------------------------------------------------------------------------------------------
# Streaming, bytes and compression (httpx in-process, for timings and raw bytes)
# --------------------------------------------------------------------------------------------------


def test_sse_is_not_buffered_and_bytes_are_identical(meter, fake_provider) -> None:
    events = bodies.anthropic_stream_events(input_tokens=50, output_tokens=30, chunks=("a", "b", "c", "d"))
    pieces: list = []
    for event in events:
        pieces += [event, Pause(0.15)]
    fake_provider.add("POST", "/v1/messages", Reply(pieces=pieces[:-1], sse=True))
    before = len(meter.rows())

    def stream(client: httpx.Client) -> tuple[list[tuple[float, bytes]], bytes]:
        arrivals: list[tuple[float, bytes]] = []
        with client.stream("POST", f"{ANTHROPIC}/v1/messages", json={"model": "claude-sonnet-4-5", "stream": True,
                                                                     "max_tokens": 5, "messages": []}) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                arrivals.append((time.monotonic(), chunk))
        return arrivals, b"".join(c for _, c in arrivals)

    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        proxied, proxied_bytes = stream(client)
    with fake_provider.http_client(timeout=30) as client:
        direct, direct_bytes = stream(client)
    proxied_sent, direct_sent = fake_provider.sent_log[0], fake_provider.sent_log[1]

    assert proxied_bytes == proxied_sent.wire_body == b"".join(events)
    assert direct_bytes == direct_sent.wire_body

    def delays(arrivals: list[tuple[float, bytes]], sent: list[tuple[float, bytes]]) -> list[float]:
        """For each piece the provider wrote, how long until the client had all of its bytes."""
        out, received, got_at = [], 0, iter(arrivals)
        total = 0
        for sent_at, piece in sent:
            total += len(piece)
            while received < total:
                at, chunk = next(got_at)
                received += len(chunk)
            out.append(at - sent_at)
        return out

    proxy_delays = delays(proxied, proxied_sent.pieces)
    direct_delays = delays(direct, direct_sent.pieces)
    # Buffering would hold the first event until the stream ends (~1.5 s later).
    assert proxy_delays[0] < 0.1, proxy_delays
    assert sorted(proxy_delays)[len(proxy_delays) // 2] < sorted(direct_delays)[len(direct_delays) // 2] + 0.03
    assert max(proxy_delays) < 0.25, proxy_delays
    [row] = new_rows(meter, before, 1)
    assert row["streamed"] and row["complete"] and (row["input_tokens"], row["output_tokens"]) == (50, 30)
    assert row["ttft_ms"] is not None and row["ttft_ms"] < 150 < row["latency_ms"]


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_json_reaches_the_client_untouched_and_is_metered(meter, fake_provider, encoding) -> None:
    body = bodies.openai_chat(prompt_tokens=77, completion_tokens=11)
    fake_provider.add("POST", "/v1/chat/completions", Reply(body=body, encoding=encoding, chunk_size=64))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        with client.stream("POST", f"{OPENAI}/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                           headers={"accept-encoding": encoding}) as response:
            raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == encoding
    assert raw == fake_provider.sent_log[0].wire_body
    [row] = new_rows(meter, before, 1)
    assert (row["input_tokens"], row["output_tokens"], row["complete"]) == (77, 11, 1)


def test_compressed_request_body_is_read_for_the_model(meter, fake_provider) -> None:
    import zstandard

    fake_provider.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(model="gpt-4o-mini-2024-07-18")))
    payload = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    compressed = zstandard.ZstdCompressor().compress(payload)
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        client.post(f"{OPENAI}/v1/chat/completions", content=compressed,
                    headers={"content-encoding": "zstd", "content-type": "application/json"})
    [row] = new_rows(meter, before, 1)
    assert row["model_requested"] == "gpt-4o-mini"
    assert fake_provider.requests[0].body == compressed  # forwarded as sent


def test_error_responses_are_recorded_unbilled(meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(status=529, body=bodies.anthropic_error()))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        response = client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-opus-4-1", "messages": []})
    assert response.status_code == 529
    [row] = new_rows(meter, before, 1)
    assert (row["status"], row["error_type"], row["billable"], row["cost_nanos"]) == (529, "overloaded_error", 0, 0)
    assert row["model"] == "claude-opus-4-1" and row["usage_reported"] == 0


def test_truncated_stream_keeps_what_was_reported(meter, fake_provider) -> None:
    events = bodies.anthropic_stream_events(input_tokens=1000, output_tokens=200)
    fake_provider.add("POST", "/v1/messages", Reply(pieces=events, sse=True, cut_after=3))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        with pytest.raises(httpx.HTTPError):
            with client.stream("POST", f"{ANTHROPIC}/v1/messages", json={"model": "m", "stream": True}) as response:
                for _ in response.iter_raw():
                    pass
    [row] = new_rows(meter, before, 1)
    assert row["complete"] == 0 and row["input_tokens"] == 1000 and row["usage_reported"]
    assert row["incomplete_reason"] == "upstream_truncated"


def test_keep_alive_connection_meters_every_request(meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=5, output_tokens=1)))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        for _ in range(5):
            assert client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-sonnet-4-5"}).status_code == 200
    rows = new_rows(meter, before, 5)
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    assert len({r.connection_id for r in fake_provider.requests}) == 1  # one upstream connection, reused


# --------------------------------------------------------------------------------------------------
# Other traffic is not ours
# --------------------------------------------------------------------------------------------------


def test_non_provider_host_is_tunnelled_with_its_own_certificate(meter, fake_provider) -> None:
    fake_provider.add("GET", "/hello", Reply(body=b'{"ok": true}'))
    before = len(meter.rows())
    # Trusting only the fake's CA works, so the certificate is the origin's, not ours.
    with httpx.Client(proxy=meter.proxy_url, verify=fake_provider.client_ssl_context(), trust_env=False) as client:
        assert client.get("https://tunnel.test/hello").json() == {"ok": True}
    # Trusting only our CA fails: we never terminated that TLS.
    ours_only = ssl.create_default_context(cafile=meter.runtime["ca_cert"])
    with httpx.Client(proxy=meter.proxy_url, verify=ours_only, trust_env=False) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("https://tunnel.test/hello")
    # A provider host, by contrast, is served with a certificate from our CA.
    with socket.create_connection(("127.0.0.1", meter.edge_port), timeout=10) as raw:
        raw.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with ours_only.wrap_socket(raw, server_hostname="api.anthropic.com") as tls:
            issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
    assert issuer["commonName"] == "Halton Meter local CA"
    time.sleep(0.3)
    assert len(meter.rows()) == before  # nothing recorded for other hosts


# --------------------------------------------------------------------------------------------------
# The CLI over what landed
# --------------------------------------------------------------------------------------------------


def test_calls_and_report_show_what_landed(meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=4)))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        client.post(f"{ANTHROPIC}/v1/messages?beta=true&key=SECRETKEY", json={"model": "claude-sonnet-4-5"})
    rows = meter.wait_for_calls(before + 1)
    calls = meter.calls_json()  # asserts the exact public field order
    assert [c["id"] for c in calls] == [r["id"] for r in rows]
    last = calls[-1]
    assert last["path"] == "/v1/messages?beta=true&key=REDACTED"
    assert last["cost_usd"] == usd(rows[-1]["cost_nanos"])
    assert set(last) == set(PUBLIC_FIELDS)
    report = json.loads(meter.cli("report", "--json").stdout)
    assert report["totals"]["calls"] == len(rows)
    assert report["totals"]["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert Decimal(report["totals"]["cost_usd"]) == Decimal(sum(r["cost_nanos"] or 0 for r in rows)).scaleb(-9)
    text = meter.cli("report", "--by", "model").stdout
    assert "claude-sonnet-4-5-20250929" in text and "calls" in text
    table = meter.cli("calls").stdout
    assert "anthropic" in table and "claude-sonnet-4-5-20250929" in table


def test_nothing_secret_or_prompt_is_stored(meter) -> None:
    """Run last in this module: by now every test above has sent canary keys and prompts."""
    home = meter.home
    blobs = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file() and "ca" not in p.parts)
    blobs += meter.log_path.read_bytes()
    for canary in (b"CANARYKEY", b"PROMPT-CANARY", b"SECRETKEY"):
        assert canary not in blobs


def test_a_second_serve_for_the_same_home_is_refused(meter) -> None:
    result = meter.cli("serve", "--edge-port", "0", "--api-port", "0", check=False, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"halton-meter: error: halton-meter is already running for {meter.home} (pid {meter.proc.pid}); "
        f"stop it first (Ctrl-C or kill {meter.proc.pid})"
    )


def test_health_endpoint(meter) -> None:
    response = httpx.get(f"http://127.0.0.1:{meter.api_port}/health", trust_env=False)
    assert response.json()["status"] == "ok"
    assert httpx.get(f"http://127.0.0.1:{meter.api_port}/health", headers={"host": "evil.example"},
                     trust_env=False).status_code == 421


# --------------------------------------------------------------------------------------------------
# Lifecycle (own meters: these stop them)
# --------------------------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_stream_finish_and_commit(fake_provider, tmp_path) -> None:
    gate = Gate()
    events = bodies.anthropic_stream_events(input_tokens=11, output_tokens=7)
    fake_provider.add("POST", "/v1/messages", Reply(pieces=[events[0], gate, *events[1:]], sse=True))
    meter = MeterProcess.start(tmp_path / "home", fake_provider)
    result: dict = {}

    def client_call() -> None:
        with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
            with client.stream("POST", f"{ANTHROPIC}/v1/messages", json={"model": "m", "stream": True}) as r:
                result["body"] = b"".join(r.iter_raw())

    worker = threading.Thread(target=client_call)
    worker.start()
    try:
        gate.wait_reached(10)
        meter.proc.send_signal(15)
        time.sleep(0.5)
        assert meter.proc.poll() is None  # still draining
        gate.open()
        worker.join(20)
        assert meter.proc.wait(30) == 0
    finally:
        gate.open()
        meter.stop()
    assert result["body"] == b"".join(events)
    [row] = meter.rows()
    assert row["complete"] and (row["input_tokens"], row["output_tokens"]) == (11, 7)
    assert not (tmp_path / "home" / "runtime.json").exists()


def test_taken_port_is_one_line_and_exit_4(tmp_path) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        meter = MeterProcess.__new__(MeterProcess)
        meter.home = tmp_path / "home"
        result = MeterProcess.cli(meter, "serve", "--edge-port", str(port), "--api-port", "0", check=False, timeout=30)
    finally:
        holder.close()
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"halton-meter: error: port {port} (edge) is in use by PID {os.getpid()} "
        f"({_process_name()}); stop that process or choose another port with --edge-port N"
    ), result.stderr
    assert "Traceback" not in result.stderr


def _process_name() -> str:
    import psutil

    return psutil.Process().name()


def test_run_without_a_running_meter_runs_the_tool_unmetered_with_one_warning(tmp_path) -> None:
    """Fail open: a stopped meter never keeps a user's tool from running."""
    meter = MeterProcess.__new__(MeterProcess)
    meter.home = tmp_path / "home"
    code = "import os, sys; print(os.environ.get('HTTPS_PROXY')); sys.exit(3)"
    result = MeterProcess.cli(meter, "run", "--", sys.executable, "-c", code, check=False)
    assert result.returncode == 3 and result.stdout.strip() == "None"  # its own exit code, no proxy set
    assert result.stderr.strip().splitlines() == [
        f"halton-meter: warning: no meter is running for {meter.home}: running this command UNMETERED; start the "
        "meter with `halton-meter start`"]


def test_the_self_test_canary_is_answered_by_the_core_and_left_out_of_reports(meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=2)))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:  # a real call from the same process first
        assert client.post(f"{ANTHROPIC}/v1/messages", json={"model": "claude-sonnet-4-5"}).status_code == 200
    [real] = new_rows(meter, before, 1)
    before += 1
    with meter.client() as client:  # our CA only: no upstream, no fake provider involved
        response = client.post("https://selftest.halton-meter.invalid/v1/selftest", json={"model": "x"})
    assert response.status_code == 200 and response.headers["x-halton-meter"] == "selftest"
    [row] = new_rows(meter, before, 1)
    assert (row["provider"], row["endpoint_kind"], row["billable"]) == ("selftest", "self_test", 0)
    assert (row["input_tokens"], row["output_tokens"], row["complete"]) == (1, 1, 1)
    assert (row["project"], row["project_source"]) == ("", "self-test")  # no project's count moves
    report = json.loads(meter.cli("report", "--by", "model", "--since", "1d", "--json").stdout)
    assert all(m["model"] != "halton-meter-selftest" for m in report["groups"])
    # Every command that counts calls counts the same ones: the self-test is in none of them.
    projects = json.loads(meter.cli("projects", "--since", "1d", "--json").stdout)["projects"]
    assert real["project"] in {p["project"] for p in projects} and "" not in {p["project"] for p in projects}
    reprice = json.loads(meter.cli("reprice", "--since", "1d", "--dry-run", "--json").stdout)
    assert sum(p["calls"] for p in projects) == report["totals"]["calls"] == reprice["examined"]
    for p in projects:
        moved = json.loads(meter.cli("retag", "--from", p["project"], "--to", "elsewhere", "--since", "1d",
                                     "--dry-run", "--json").stdout)
        assert moved["calls"] == p["calls"], (p, moved)
    listed = meter.cli("calls", "--limit", "1").stdout
    assert "(self-test)" in listed


def test_api_needs_its_token_and_a_loopback_host(meter) -> None:
    assert meter.api_get("/v1/stats", token=None).status_code == 401
    assert meter.api_get("/v1/stats", token="x" * 43).status_code == 401
    stats = meter.api_get("/v1/stats")
    assert stats.status_code == 200 and stats.json()["core"]["writer"]["committed"] >= 0
    calls = meter.api_get("/v1/calls?limit=2").json()["calls"]
    assert len(calls) <= 2 and all("input_tokens" in c for c in calls)
    assert "totals" in meter.api_get("/v1/report?since=1d").json()
    # DNS rebinding: a page on evil.example that resolves to 127.0.0.1 has the right token? Still refused.
    assert meter.api_get("/v1/stats", host=f"evil.example:{meter.api_port}").status_code == 421
    token_file = meter.home / "api-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("calls", [1, 4])
def test_ctrl_c_on_a_foreground_serve_after_calls_prints_no_traceback(tmp_path, fake_provider, calls) -> None:
    """Ctrl-C reaches the whole foreground process group (serve, edge, core): the drain still runs, every
    row commits, and nothing but the usual lines is printed."""
    from halton_meter.testing.meter import meter_env, write_config

    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=3, output_tokens=1)))
    home = tmp_path / "home"
    write_config(home, ca_bundle=fake_provider.ca_pem, resolve=fake_provider.resolve_rules())
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "serve", "--edge-port", "0", "--api-port", "0"],
                            env=meter_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (home / "runtime.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        meter = MeterProcess(home, proc, tmp_path / "unused.log")
        meter.runtime = json.loads((home / "runtime.json").read_text())
        with meter.client(extra_ca=fake_provider.ca_pem, timeout=10) as client:
            for _ in range(calls):
                assert client.post(f"{ANTHROPIC}/v1/messages", json={"model": "m", "messages": []},
                                   headers={"x-api-key": "sk-ant-api03-CANARY-ctrlc"}).status_code == 200
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "Exception in callback" not in text and "KeyboardInterrupt" not in text, text
    assert len(meter.rows()) == calls
