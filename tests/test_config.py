from __future__ import annotations

import json
from pathlib import Path

import pytest

from halton_meter.config import DEFAULT_API_PORT, DEFAULT_EDGE_PORT, ResolveRule, load_config
from halton_meter.errors import ConfigError, ExitCode
from halton_meter.paths import Paths


def write(paths: Paths, text: str | bytes) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        paths.config.write_bytes(text)
    else:
        paths.config.write_text(text)


def test_missing_file_gives_defaults(paths: Paths) -> None:
    config = load_config(paths)
    assert (config.edge_port, config.api_port, config.source) == (DEFAULT_EDGE_PORT, DEFAULT_API_PORT, None)
    assert config.upstream_resolve == ()


def test_full_config_is_read(paths: Paths, tmp_path: Path) -> None:
    bundle = tmp_path / "corp.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    write(paths, f'''
[edge]
port = 9181
[api]
port = 0
[upstream]
ca_bundle = "{bundle}"
resolve = ["api.anthropic.com:443:127.0.0.1:8443", "API.OpenAI.com:443:[::1]:9443", "x.test:443:127.0.0.2"]
[core]
shutdown_grace_seconds = 2.5
[plugins.example]
anything = "goes"
''')
    config = load_config(paths)
    assert config.edge_port == 9181 and config.api_port == 0
    assert config.upstream_ca_bundle == bundle
    assert config.resolve_map() == {
        ("api.anthropic.com", 443): ("127.0.0.1", 8443),
        ("api.openai.com", 443): ("::1", 9443),
        ("x.test", 443): ("127.0.0.2", 443),
    }
    assert config.shutdown_grace_seconds == 2.5
    assert config.plugin_config("example") == {"anything": "goes"}
    assert config.plugin_config("absent") == {}


def test_relative_ca_bundle_is_relative_to_the_config_file(paths: Paths) -> None:
    write(paths, '[upstream]\nca_bundle = "corp.pem"\n')
    (paths.home / "corp.pem").write_text("x")
    assert load_config(paths).upstream_ca_bundle == paths.home / "corp.pem"


def test_utf8_bom_is_accepted(paths: Paths) -> None:
    write(paths, "\ufeff[edge]\nport = 9000\n".encode())
    assert load_config(paths).edge_port == 9000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[edge]\nport = abc\n", ":2:8: invalid value"),
        ("[edge\nport = 1\n", ":1:6: expected ']' at the end of a table declaration"),
        ('[edge]\nport = "abc', ":2:12: unterminated string at end of file"),
    ],
)
def test_syntax_errors_name_file_line_and_column(paths: Paths, text: str, message: str) -> None:
    write(paths, text)
    with pytest.raises(ConfigError) as info:
        load_config(paths)
    assert str(info.value) == f"{paths.config}{message}"
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[edge]\nport = "abc"\n', "config.toml: edge.port must be an integer port (0-65535), not 'abc'"),
        ("[edge]\nport = true\n", "config.toml: edge.port must be an integer port (0-65535), not True"),
        ("[api]\nport = 70000\n", "config.toml: api.port = 70000 is out of range (0-65535; 0 picks a free port)"),
        ("[bodys]\nenabled = true\n", "config.toml: unknown section [bodys] (known: api, budgets, capture, compatible, core, edge, keys, plugins, prices, projects, sync, upstream)"),
        ("[edge]\nprot = 1\n", "config.toml: unknown key edge.prot (known in [edge]: idle_timeout_seconds, max_connections, passthrough_max_seconds, passthrough_quiet_seconds, port)"),
        ('[upstream]\nresolve = "api.anthropic.com:443:127.0.0.1:1"\n',
         'config.toml: upstream.resolve must be a list of strings like ["api.anthropic.com:443:127.0.0.1:8443"]'),
        ('[upstream]\nresolve = ["api.anthropic.com:443"]\n',
         "config.toml: upstream.resolve: 'api.anthropic.com:443' is not HOST:PORT:ADDRESS:PORT "
         '(example: "api.anthropic.com:443:127.0.0.1:8443")'),
        ('[upstream]\nresolve = ["api.anthropic.com:443:example.com:1"]\n',
         "config.toml: upstream.resolve: 'example.com' in 'api.anthropic.com:443:example.com:1' must be an IP address"),
        ('[upstream]\nresolve = ["a.test:443:127.0.0.1:1", "A.test:443:127.0.0.1:2"]\n',
         "config.toml: upstream.resolve maps a.test:443 twice"),
        ('[upstream]\nca_bundle = "/nonexistent/x.pem"\n',
         "config.toml: upstream.ca_bundle = '/nonexistent/x.pem': no such file (/nonexistent/x.pem)"),
        ("edge = 3\n", "config.toml: edge must be a table ([edge])"),
        ("[core]\nshutdown_grace_seconds = -1\n",
         "config.toml: core.shutdown_grace_seconds must be a number of seconds between 0 and 3600, not -1"),
        ("plugins = 1\n", "config.toml: [plugins] holds one table per plugin, like [plugins.NAME]"),
    ],
)
def test_wrong_types_and_unknown_keys_are_errors(paths: Paths, text: str, message: str) -> None:
    write(paths, text)
    with pytest.raises(ConfigError) as info:
        load_config(paths)
    assert str(info.value) == message


def test_non_utf8_file(paths: Paths) -> None:
    write(paths, b"[edge]\nport = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(paths)


@pytest.mark.parametrize("command", [["calls"], ["report"], ["plugins"], ["run", "true"], ["serve"]])
def test_every_command_stops_on_a_bad_config_with_exit_2(paths: Paths, cli, command: list[str]) -> None:
    write(paths, "[edge]\nport = \n")
    result = cli(*command)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"halton-meter: error: {paths.config}:2:8: invalid value"
    assert "Traceback" not in result.stderr + result.stdout


def test_resolve_rule_port_range() -> None:
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        ResolveRule.parse("a.test:0:127.0.0.1:1", "x")


def test_project_rules_match_the_directory_and_everything_below_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[projects]\n"/work/acme" = "acme"\n"/clients/*" = "clients"\n"/src/**/infra" = "infra"\n"~/notes" = "notes"\n'
    )
    rules = load_config(Paths(home)).project_rules
    assert [(r.pattern, r.project) for r in rules] == [
        ("/work/acme", "acme"), ("/clients/*", "clients"), ("/src/**/infra", "infra"), ("~/notes", "notes")]
    acme, clients, infra, notes = rules
    assert acme.matches("/work/acme") and acme.matches("/work/acme/sub/dir/")
    assert not acme.matches("/work/acme-other") and not acme.matches("/work")
    assert clients.matches("/clients/x") and clients.matches("/clients/x/y") and not clients.matches("/clients")
    assert infra.matches("/src/infra") and infra.matches("/src/a/b/infra/k8s") and not infra.matches("/src/a/infrax")
    assert notes.matches(str(Path("~/notes/today").expanduser()))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[projects]\n"work/acme" = "acme"\n', "must be an absolute path or start with ~"),
        ('[projects]\n"/work/acme" = ""\n', "must be a project name"),
        ('[projects]\n"/work/acme" = "a/b"\n', "must be a project name"),
        ("[projects]\nwork.acme = \"x\"\n", "quote paths with dots"),
        ('[keys]\n"ABCD" = "team"\n', "is not a key fingerprint"),
        ('[keys]\n"3f9a1c2e" = ""\n', "must be a name"),
        ('[keys]\n"3f9a" = "a"\n"3f9a1c" = "b"\n', "one is a prefix of the other"),
    ],
)
def test_bad_project_rules_and_key_names_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(Paths(home))
    assert message in str(info.value)


def test_key_names() -> None:
    from halton_meter.attribution.keys import key_label

    names = {"3f9a": "team key", "0011aabb": "ci"}
    assert key_label("3f9a1c2e", names) == "team key (3f9a1c2e)"
    assert key_label("0011aabb", names) == "ci (0011aabb)"
    assert key_label("77777777", names) == "77777777"
    assert key_label(None, names) is None


def test_a_misspelled_price_provider_is_a_config_error_with_a_suggestion(paths, cli) -> None:
    """It used to be accepted and never applied: every call kept its list price, silently."""
    paths.home.mkdir(mode=0o700, exist_ok=True)
    paths.config.write_text('[prices.anthropc."claude-sonnet-4-5"]\ninput = 1.0\noutput = 2.0\n')
    for command in (["prices", "claude-sonnet-4-5"], ["reprice", "--dry-run"], ["serve", "--edge-port", "0"]):
        result = cli(*command)
        assert result.exit_code == 2, (command, result)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("halton-meter: error: config.toml: [prices.anthropc] names no provider; "
                               "did you mean [prices.anthropic]? (known: "), line
    doctor = json.loads(cli("doctor", "--only", "check.config", "--json").stdout)["checks"][0]
    assert doctor["status"] == "fail" and "[prices.anthropc] names no provider" in doctor["summary"]
    paths.config.write_text('[[compatible]]\nname = "corp"\nhosts = ["llm.corp.example"]\nformat = "openai"\n'
                            '[prices.corp."*"]\ninput = 1.0\noutput = 2.0\n')
    assert cli("prices").exit_code == 0  # a [[compatible]] name is a provider
