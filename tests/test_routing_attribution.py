"""Routing table, path redaction, client naming and attributor order."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

from halton_meter.attribution.client_family import client_family, tool_from_process
from halton_meter.attribution.service import AttributionService, ProcessFinder
from halton_meter.core.records import CREDENTIAL_QUERY_PARAMS, redact_path
from halton_meter.core.routing import RoutingTable, parse_host_pattern
from halton_meter.edge.http1 import proxy_project
from halton_meter.errors import PluginError
from halton_meter.host import PluginHost
from halton_meter.serve.runtime import metering_env
from halton_meter.types import Attribution, Attributor, ClientInfo, Provider


def provider(pid: str, *hosts: str) -> Provider:
    p = Provider()
    p.id, p.name, p.hosts = pid, pid, hosts
    return p


def test_exact_port_and_wildcard_lookup() -> None:
    a, b, c = provider("a", "api.a.com"), provider("b", "*.b.com", "gw.local:8443"), provider("c", "*.eu.b.com")
    table = RoutingTable([a, b, c])
    assert table.lookup("API.A.COM", 443) is a
    assert table.lookup("api.a.com.", 443) is a
    assert table.lookup("api.a.com", 8443) is None
    assert table.lookup("x.b.com", 443) is b and table.lookup("b.com", 443) is None
    assert table.lookup("x.eu.b.com", 443) is c  # the longer suffix wins
    assert table.lookup("gw.local", 8443) is b
    # A look-alike host is not a provider.
    assert table.lookup("api.a.com.evil.example", 443) is None
    assert table.lookup("evilapi.a.com", 443) is None
    assert table.patterns() == ["*.b.com:443", "*.eu.b.com:443", "api.a.com:443", "gw.local:8443"]


def test_label_patterns_match_one_label_and_leave_the_parent_domain_alone() -> None:
    bedrock = provider("bedrock", "bedrock-runtime.*.amazonaws.com", "bedrock-runtime-fips.*.amazonaws.com")
    vertex = provider("vertex", "*-aiplatform.googleapis.com", "aiplatform.googleapis.com")
    broad = provider("broad", "*.googleapis.com")
    table = RoutingTable([bedrock, vertex, broad])
    assert table.lookup("bedrock-runtime.us-east-1.amazonaws.com", 443) is bedrock
    assert table.lookup("Bedrock-Runtime.EU-central-1.amazonaws.com.", 443) is bedrock
    assert table.lookup("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", 443) is bedrock
    for other in ("s3.us-east-1.amazonaws.com", "bedrock.us-east-1.amazonaws.com", "bedrock-runtime.amazonaws.com",
                  "bedrock-runtime.a.b.amazonaws.com", "bedrock-runtime.us-east-1.amazonaws.com.evil.example",
                  "xbedrock-runtime.us-east-1.amazonaws.com"):
        assert table.lookup(other, 443) is None, other
    assert table.lookup("bedrock-runtime.us-east-1.amazonaws.com", 8443) is None
    assert table.lookup("us-east5-aiplatform.googleapis.com", 443) is vertex  # the label pattern beats *.suffix
    assert table.lookup("aiplatform.googleapis.com", 443) is vertex
    assert table.lookup("storage.googleapis.com", 443) is broad
    assert "bedrock-runtime.*.amazonaws.com:443" in table.patterns()
    for _ in range(3):  # remembered answers are the same answers
        assert table.lookup("bedrock-runtime.us-east-1.amazonaws.com", 443) is bedrock
        assert table.lookup("s3.us-east-1.amazonaws.com", 443) is None
    with pytest.raises(PluginError, match="both claim"):
        RoutingTable([bedrock, provider("other", "bedrock-runtime.*.amazonaws.com")])


def test_overlapping_claims_are_refused() -> None:
    with pytest.raises(PluginError, match="both claim api.a.com:443"):
        RoutingTable([provider("a", "api.a.com"), provider("b", "api.a.com:443")])


def test_parse_host_pattern() -> None:
    assert parse_host_pattern("Host.Example:8443") == ("host.example", 8443)
    assert parse_host_pattern("host.example") == ("host.example", 443)


def test_builtin_routing_covers_anthropic_and_openai() -> None:
    table = RoutingTable(PluginHost().load(entry_points=False).registries.providers)
    assert table.lookup("api.anthropic.com", 443).name == "anthropic"
    assert table.lookup("api.openai.com", 443).name == "openai"
    assert table.lookup("example.com", 443) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1beta/models/x:generateContent?key=AIzaSECRET&alt=sse", "/v1beta/models/x:generateContent?key=REDACTED&alt=sse"),
        ("/x?alt=sse&KEY=abc", "/x?alt=sse&KEY=REDACTED"),
        ("/x?monkey=1&access_token=t", "/x?monkey=1&access_token=REDACTED"),
        ("/v1/messages?beta=true", "/v1/messages?beta=true"),
        ("/v1/messages", "/v1/messages"),
    ],
)
def test_credentials_are_redacted_from_paths(path: str, expected: str) -> None:
    assert redact_path(path, CREDENTIAL_QUERY_PARAMS) == expected


def test_builtin_attributors_env_before_cwd() -> None:
    attributors = PluginHost().load(entry_points=False).registries.attributors.ordered()
    service = AttributionService(attributors)
    try:
        both = ClientInfo(cwd="/work/repos/alpha", environ={"HALTON_METER_PROJECT": "billing"})
        assert service.attribute(both) == Attribution("billing", "env")
        assert service.attribute(ClientInfo(cwd="/work/repos/alpha")) == Attribution("alpha", "cwd")
        assert service.attribute(ClientInfo(cwd="/")) == Attribution("unattributed", "none")
        assert service.attribute(ClientInfo(cwd=os.path.expanduser("~"))).project == "unattributed"
    finally:
        service.close()


def test_a_failing_attributor_is_skipped() -> None:
    def broken(client: ClientInfo) -> Attribution | None:
        raise RuntimeError("nope")

    service = AttributionService([Attributor("x.broken", broken), Attributor("x.ok", lambda c: Attribution("p", "ok"))])
    try:
        assert service.attribute(ClientInfo()) == Attribution("p", "ok")
    finally:
        service.close()


def test_lookup_finds_this_process_from_its_socket() -> None:
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    service = AttributionService([Attributor("x.cwd", lambda c: Attribution(os.path.basename(c.cwd or ""), "cwd"))])
    try:
        resolution = service.lookup(client.getsockname()).result(timeout=10)
        info, attribution = resolution.client, resolution.attribution
        assert info.pid == os.getpid()
        assert info.cwd == os.getcwd()
        assert attribution.project == os.path.basename(os.getcwd())
    finally:
        service.close()
        client.close()
        server.close()


# --------------------------------------------------------------------------------------------------
# Tool families, proxy-URL projects, socket lookups
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ua", "tool", "process", "family"),
    [
        ("Anthropic/Python 2.12.0", None, "python3", "anthropic-sdk-python"),
        ("Anthropic/JS 0.60.0", None, "node", "anthropic-sdk-node"),
        ("OpenAI/Python 1.99.0", None, "python3.12", "openai-sdk-python"),
        ("OpenAI/JS 5.1.0", None, "node", "openai-sdk-node"),
        ("google-genai-sdk/1.20.0 gl-python/3.12.1", None, "python3", "google-genai-python"),
        ("google-genai-sdk/1.9.0 gl-node/v22.1.0", None, "node", "google-genai-node"),
        ("claude-cli/2.0.14 (external, cli)", None, "claude", "claude-code"),
        ("codex_cli_rs/0.40.0 (Ubuntu 24.4.0; x86_64) xterm", None, "codex", "codex"),
        ("GeminiCLI/0.8.1 (linux; x64)", None, "node", "gemini-cli"),
        ("curl/8.5.0", None, "curl", "curl"),
        ("python-httpx/0.28.1", None, "python3", "httpx"),
        ("python-requests/2.32.3", None, "python3", "python-requests"),
        ("Go-http-client/1.1", None, "mytool", "go"),
        # A coding tool found by its process beats the SDK it calls through.
        ("OpenAI/JS 5.1.0", "cursor", "Cursor Helper (Plugin)", "cursor"),
        ("Anthropic/JS 0.60.0", "claude-code", "node", "claude-code"),
        # Unknown: the product token, else the process name.
        ("AcmeAgent/3.1 (linux)", None, "acme", "acmeagent"),
        (None, None, "Weird-Proc", "weird-proc"),
        (None, None, None, None),
    ],
)
def test_client_family(ua, tool, process, family) -> None:
    assert client_family(ua, tool, process) == family


@pytest.mark.parametrize(
    ("name", "cmdline", "tool"),
    [
        ("claude", ["claude"], "claude-code"),
        ("node", ["node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js", "--resume"], "claude-code"),
        ("node", ["/usr/bin/node", "/home/u/.npm/bin/gemini"], "gemini-cli"),
        ("node", ["node", "/opt/lib/node_modules/@openai/codex/bin/codex.js"], "codex"),
        ("codex.exe", [], "codex"),
        ("python3", ["python3", "/home/u/.local/bin/aider"], "aider"),
        # The user's own arguments are never looked at.
        ("python3", ["python3", "script.py", "claude"], None),
        ("node", ["node", "server.js"], None),
        (None, [], None),
    ],
)
def test_tool_from_process(name, cmdline, tool) -> None:
    assert tool_from_process(name, cmdline) == tool


def _basic(user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Host: x\r\nProxy-Authorization: Basic {token}".encode()


def test_edge_reads_the_project_from_proxy_credentials() -> None:
    assert proxy_project(_basic("project", "Acme%20API")) == "Acme API"
    assert proxy_project(_basic("project", "caf%C3%A9")) == "café"
    assert proxy_project(_basic("someone", "secret")) is None  # other credentials are not ours to read
    assert proxy_project(_basic("project", "a%2Fb")) is None
    assert proxy_project(_basic("project", "")) is None
    assert proxy_project(b"Host: x\r\nProxy-Authorization: Bearer abc") is None
    assert proxy_project(b"Host: x\r\nProxy-Authorization: Basic !!!notbase64") is None
    assert proxy_project(b"Host: x") is None


def test_run_environment_carries_the_project_both_ways() -> None:
    env = metering_env({"edge_port": 18081, "client_bundle": "/b.pem"}, "Acme API/é".replace("/", "-"))
    assert env["HTTPS_PROXY"] == "http://project:Acme%20API-%C3%A9@127.0.0.1:18081"
    assert env["HALTON_METER_PROJECT"] == "Acme API-é"
    assert metering_env({"edge_port": 1, "client_bundle": "/b"})["HTTPS_PROXY"] == "http://127.0.0.1:1"
    assert "HALTON_METER_PROJECT" not in metering_env({"edge_port": 1, "client_bundle": "/b"})


def test_a_shared_local_port_is_told_apart_by_the_address_it_connects_to() -> None:
    """Linux reuses an ephemeral port for connections to different destinations: the lookup must use both
    ends, or it can name the wrong process."""
    import socket
    import subprocess

    ours = socket.create_server(("127.0.0.1", 0))
    theirs = socket.create_server(("127.0.0.1", 0))
    mine = socket.socket()
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mine.bind(("127.0.0.1", 0))
    mine.connect(ours.getsockname())
    port = mine.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
         "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         f"s.bind(('127.0.0.1', {port})); s.connect(('127.0.0.1', {theirs.getsockname()[1]}))\n"
         "print('up', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        finder = ProcessFinder()
        assert finder.pid_for(("127.0.0.1", port), server=theirs.getsockname()) == child.pid
        assert finder.pid_for(("127.0.0.1", port), server=ours.getsockname()) == os.getpid()
        finder._scan()  # the psutil path (macOS, Windows) keys by both ends too
        assert finder._table[(("127.0.0.1", port), theirs.getsockname())] == child.pid
    finally:
        child.kill()
        child.wait(timeout=10)
        for s in (mine, ours, theirs):
            s.close()


def test_proc_net_spelling() -> None:
    from halton_meter.attribution.service import _plain, _proc_net_address

    assert _proc_net_address(("127.0.0.1", 8081)) == ("tcp", "0100007F:1F91")
    assert _proc_net_address(("::1", 80)) == ("tcp6", "00000000000000000000000001000000:0050")
    assert _plain(("::ffff:127.0.0.1", 5)) == ("127.0.0.1", 5)


def test_where_the_socket_table_is_root_only_each_own_process_is_asked(monkeypatch) -> None:
    """macOS: psutil.net_connections() is AccessDenied for a user; Process.net_connections() is not."""
    import socket

    import psutil

    def denied(kind: str = "inet") -> list:
        raise psutil.AccessDenied(pid=None)

    monkeypatch.setattr(psutil, "net_connections", denied)
    monkeypatch.setattr("halton_meter.attribution.service._PROC_NET", Path("/nonexistent"))
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        finder = ProcessFinder()
        assert finder.pid_for(client.getsockname(), server=server.getsockname()) == os.getpid()
    finally:
        client.close()
        server.close()
