"""The plugin host: built-ins, guarded entry points, duplicate ids, misspelled hooks, ordering, env filters."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from halton_meter import hookimpl
from halton_meter.errors import PluginError
from halton_meter.host import BUILTIN_PLUGINS, PluginHost, Registry, topological_order
from halton_meter.types import Attributor, CheckResult


def make_dist(root: Path, dist: str, plugins: dict[str, str]) -> None:
    """Install a fake distribution on sys.path: modules plus entry points in the `halton_meter` group."""
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = ["[halton_meter]"]
    for name, source in plugins.items():
        module = f"{dist.replace('-', '_')}_{name}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


GOOD = """
    from halton_meter import hookimpl
    from halton_meter.types import Check, CheckResult

    @hookimpl
    def halton_register_checks(register):
        register(Check("check.thirdparty", "third party", lambda ctx: CheckResult("ok", "fine")))
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_builtins_load_and_register(tmp_path: Path) -> None:
    host = PluginHost().load(entry_points=False)
    assert [p.name for p in host.plugins.values()] == [name for name, _ in BUILTIN_PLUGINS]
    assert all(p.status == "ok" for p in host.plugins.values())
    registries = host.registries
    assert {"provider.anthropic", "provider.openai", "provider.gemini"} <= set(registries.providers.ids())
    assert all(i.startswith("provider.") for i in registries.providers.ids())
    assert [a.id for a in registries.attributors.ordered()] == [
        "attributor.run", "attributor.env", "attributor.file", "attributor.config", "attributor.git", "attributor.cwd"]
    assert host.plugins["anthropic"].provides == {"providers": ["provider.anthropic"]}


def test_entry_point_plugin_is_loaded_with_its_version(site: Path) -> None:
    make_dist(site, "halton-meter-checks-x", {"checks_x": GOOD})
    host = PluginHost().load()
    info = host.plugins["checks_x"]
    assert (info.source, info.version, info.status) == ("entry_point", "1.2.3", "ok")
    assert "check.thirdparty" in host.registries.checks
    assert info.provides == {"checks": ["check.thirdparty"]}


def test_broken_entry_point_becomes_an_error_record(site: Path, cli) -> None:
    make_dist(site, "halton-meter-broken", {"broken": "raise RuntimeError('boom at import')\n", "good": GOOD})
    host = PluginHost().load()
    assert host.plugins["broken"].status == "error"
    assert host.plugins["broken"].error == "import failed: RuntimeError: boom at import"
    assert host.plugins["good"].status == "ok"
    # The CLI still works and reports it.
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["broken"]["status"] == "error" and "boom at import" in listed["broken"]["error"]
    assert listed["anthropic"]["status"] == "ok"
    table = cli("plugins")
    assert table.exit_code == 0 and "boom at import" in table.stdout


def test_misspelled_hook_is_caught_by_check_pending(site: Path) -> None:
    make_dist(site, "halton-meter-typo", {"typo": """
        from halton_meter import hookimpl

        @hookimpl
        def halton_register_provider(register):
            pass
    """})
    host = PluginHost().load()
    info = host.plugins["typo"]
    assert info.status == "error"
    assert info.error.startswith("unknown hook (misspelled?)") and "halton_register_provider" in info.error
    assert host.pm.get_plugin("typo") is None  # unregistered, so it cannot fire


def test_hook_without_marker_is_refused(site: Path) -> None:
    make_dist(site, "halton-meter-nomarker", {"nomarker": """
        def halton_register_checks(register):
            raise AssertionError("must never run")
    """})
    host = PluginHost().load()
    assert host.plugins["nomarker"].status == "error"
    assert "lack the @hookimpl marker" in host.plugins["nomarker"].error
    assert host.registries.checks.ids()  # collecting did not run the unmarked function
    assert host.plugins["nomarker"].provides == {}


def test_wrong_hook_arguments_are_refused(site: Path) -> None:
    make_dist(site, "halton-meter-args", {"args": """
        from halton_meter import hookimpl

        @hookimpl
        def halton_register_checks(register, extra):
            pass
    """})
    host = PluginHost().load()
    assert host.plugins["args"].status == "error"
    assert host.plugins["args"].error.startswith("registration failed")


def test_duplicate_id_is_an_error_naming_both_plugins(site: Path) -> None:
    make_dist(site, "halton-meter-dup", {"dup": """
        from halton_meter import hookimpl
        from halton_meter.types import Check, CheckResult

        @hookimpl
        def halton_register_checks(register):
            register(Check("check.dup-ok", "mine", lambda ctx: CheckResult("ok", "x")))
            register(Check("check.config", "stolen id", lambda ctx: CheckResult("ok", "x")))
    """})
    host = PluginHost().load()
    registries = host.registries
    info = host.plugins["dup"]
    assert info.status == "error"
    assert info.error == (
        "halton_register_checks failed: PluginError: duplicate check id 'check.config': "
        "registered by checks.basics and by dup"
    )
    assert registries.checks.get("check.config").title == "configuration"  # the first owner keeps it
    assert "check.dup-ok" not in registries.checks  # a failing plugin contributes nothing


def test_register_hook_that_raises_affects_only_that_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALTON_METER_PLUGINS", "raises")  # ignore other third-party plugins installed here
    make_dist(site, "halton-meter-raises", {"raises": """
        from halton_meter import hookimpl

        @hookimpl
        def halton_register_providers(register):
            raise ValueError("bad provider config")
    """})
    host = PluginHost().load()
    builtin = set(PluginHost().load(entry_points=False).registries.providers.ids())
    assert set(host.registries.providers.ids()) == builtin
    assert host.plugins["raises"].error == "halton_register_providers failed: ValueError: bad provider config"


def test_disable_env_blocks_builtins_and_entry_points(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "halton-meter-good", {"good": GOOD})
    monkeypatch.setenv("HALTON_METER_PLUGINS", "good")  # ignore other third-party plugins installed here
    monkeypatch.setenv("HALTON_METER_DISABLE_PLUGINS", "openai, good")
    host = PluginHost().load()
    assert host.plugins["openai"].status == "disabled"
    assert host.plugins["good"].status == "disabled"
    assert "provider.openai" not in host.registries.providers.ids()
    assert "provider.anthropic" in host.registries.providers.ids()
    assert "check.thirdparty" not in host.registries.checks


def test_allow_env_limits_third_party_plugins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "halton-meter-two", {"one": GOOD, "two": GOOD.replace("check.thirdparty", "check.two")})
    monkeypatch.setenv("HALTON_METER_PLUGINS", "two")
    host = PluginHost().load()
    assert host.plugins["one"].status == "disabled"
    assert host.plugins["one"].error == "not listed in HALTON_METER_PLUGINS"
    assert host.plugins["two"].status == "ok"
    assert host.plugins["anthropic"].status == "ok"  # the allow-list is for third-party plugins


def test_configure_is_historic_and_reaches_late_plugins(paths) -> None:
    from halton_meter.config import load_config

    seen = []

    class Late:
        @hookimpl
        def halton_configure(self, config):
            seen.append(config.edge_port)

    host = PluginHost(load_config(paths)).load(entry_points=False)
    host.register_object(Late(), "late")
    assert seen == [8081]


def test_usage_recorded_hook_is_an_event_for_every_plugin() -> None:
    got = []

    class A:
        @hookimpl
        def halton_usage_recorded(self, record):
            got.append(("a", record))

    class B:
        @hookimpl
        def halton_usage_recorded(self, record):
            got.append(("b", record))

    host = PluginHost().load(builtins=(), entry_points=False)
    host.register_object(A(), "a")
    host.register_object(B(), "b")
    host.hook.halton_usage_recorded(record="r")
    assert sorted(got) == [("a", "r"), ("b", "r")]


def test_platform_installer_first_result_wins() -> None:
    class Mac:
        @hookimpl
        def halton_platform_installer(self, platform):
            return "mac" if platform == "darwin" else None

    class Generic:
        @hookimpl
        def halton_platform_installer(self, platform):
            return "generic"

    host = PluginHost().load(builtins=(), entry_points=False)
    host.register_object(Generic(), "generic")
    host.register_object(Mac(), "mac")
    assert host.hook.halton_platform_installer(platform="darwin") == "mac"
    assert host.hook.halton_platform_installer(platform="linux") == "generic"


def test_ordering_uses_requires_not_registration_order() -> None:
    registry: Registry[Attributor] = Registry("attributor")
    noop = lambda client: None  # noqa: E731
    registry.add(Attributor("c", noop, requires=("b",)), "p")
    registry.add(Attributor("a", noop), "p")
    registry.add(Attributor("b", noop, requires=("a",)), "p")
    registry.add(Attributor("0", noop), "p")
    assert [a.id for a in registry.ordered()] == ["0", "a", "b", "c"]


def test_ordering_refuses_cycles_and_unknown_ids() -> None:
    with pytest.raises(PluginError, match="cycle"):
        topological_order({"a": ("b",), "b": ("a",), "c": ()})
    with pytest.raises(PluginError, match="requires unknown id"):
        topological_order({"a": ("zzz",)})


def test_every_hook_is_documented_and_named_in_the_register_table() -> None:
    from halton_meter import hookspecs
    from halton_meter.host import REGISTER_HOOKS

    hooks = [n for n in dir(hookspecs) if n.startswith("halton_")]
    assert set(REGISTER_HOOKS.values()) <= set(hooks)
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"{name} needs a docstring saying when it runs and what it returns"
    assert {"halton_configure", "halton_platform_installer", "halton_usage_recorded"} <= set(hooks)


def test_registry_rejects_items_without_an_id() -> None:
    registry: Registry[object] = Registry("check")
    with pytest.raises(PluginError, match="without a string id"):
        registry.add(object(), "p")


def test_builtin_check_runs(paths) -> None:
    host = PluginHost().load(entry_points=False)
    from halton_meter.types import CheckContext

    check = host.registries.checks.get("check.home")
    result = check.run(CheckContext(paths=paths, config=None))
    assert isinstance(result, CheckResult) and result.status == "warn"
    paths.home.mkdir(mode=0o755)
    paths.home.chmod(0o755)
    assert check.run(CheckContext(paths=paths, config=None)).fix == f"chmod 700 {paths.home}"
