"""Routing table, path redaction, client naming and attributor order."""

from __future__ import annotations

import os

import pytest

from halton_meter.attribution import AttributionService
from halton_meter.core.records import CREDENTIAL_QUERY_PARAMS, redact_path
from halton_meter.core.routing import RoutingTable, parse_host_pattern
from halton_meter.errors import PluginError
from halton_meter.host import PluginHost
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
