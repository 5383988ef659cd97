"""One test per plugin hook (the datasette pattern), and a guard that keeps it so.

`test_every_hook_has_a_caller_and_a_test` fails when a hookspec declared in halton_meter/hookspecs.py has
no caller in the host code (a hook nothing calls is a promise to plugin authors that is not kept) or no
`test_hook_<name>` here that exercises it through the plugin host. A hook declared ahead of the feature
that calls it must be named in `RESERVED`, with the reason, where everyone sees it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from halton_meter import hookimpl, hookspecs
from halton_meter.config import load_config
from halton_meter.host import REGISTER_HOOKS, PluginHost
from halton_meter.types import (
    Attribution,
    Attributor,
    CallRecord,
    Check,
    CheckContext,
    CheckResult,
    Importer,
    InitStep,
    SyncTarget,
)

ROOT = Path(__file__).resolve().parent.parent
HOST_CODE = [ROOT / "halton_meter", ROOT / "plugins", ROOT / "checks"]

RESERVED: dict[str, str] = {}
"""Hooks allowed to have no caller yet, with the reason. Remove an entry once its feature calls the hook."""


def declared_hooks() -> list[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker))


def host_sources() -> str:
    texts = []
    for base in HOST_CODE:
        for path in base.rglob("*.py"):
            if path.name == "hookspecs.py" or "testing" in path.relative_to(base).parts:
                continue
            texts.append(path.read_text(encoding="utf-8"))
    return "\n".join(texts)


def has_caller(name: str, code: str) -> bool:
    """Called as `hook.<name>(...)`, or, for a `register` hook, its registry read by host code."""
    if re.search(rf"\bhook\.{name}\b", code):
        return True
    kind = {hook: kind for kind, hook in REGISTER_HOOKS.items()}.get(name)
    return kind is not None and re.search(rf"\bregistries\.{kind}\b", code) is not None


def test_every_hook_has_a_caller_and_a_test() -> None:
    hooks = declared_hooks()
    assert len(hooks) >= 9 and "halton_usage_recorded" in hooks
    code = host_sources()
    uncalled = [h for h in hooks if not has_caller(h, code) and h not in RESERVED]
    assert not uncalled, f"hooks no host code calls (call them, or name them in RESERVED with why): {uncalled}"
    stale = [h for h in RESERVED if h not in hooks or has_caller(h, code)]
    assert not stale, f"RESERVED entries to remove (the hook is gone or has a caller now): {stale}"
    untested = [h for h in hooks if not callable(globals().get(f"test_hook_{h}"))]
    assert not untested, f"hooks without a test_hook_<name> in {__name__}: {untested}"


def host_with(plugin: object, config: Any = None) -> PluginHost:
    host = PluginHost(config).load(builtins=(), entry_points=False)
    info = host.register_object(plugin, "under-test", source="entry_point")
    assert info.status == "ok", info.error
    return host


# ---- one test per hook ---------------------------------------------------------------------------


def test_hook_halton_configure(paths) -> None:
    seen: list[int] = []

    class Plugin:
        @hookimpl
        def halton_configure(self, config: Any) -> None:
            seen.append(config.edge_port)

    config = load_config(paths)
    host_with(Plugin(), config)  # registered after the host started: still configured (a historic call)
    assert seen == [config.edge_port]


def test_hook_halton_register_providers() -> None:
    from halton_meter.core.routing import RoutingTable
    from halton_meter_plugins.providers.openai import OpenAICompatibleProvider

    gateway = OpenAICompatibleProvider(id="provider.hook-test", name="hook-test", hosts=("llm.hook.test",),
                                       price_provider_id=None)

    class Plugin:
        @hookimpl
        def halton_register_providers(self, register: Any, config: Any) -> None:
            register(gateway)

    host = host_with(Plugin())
    assert RoutingTable(host.registries.providers).lookup("llm.hook.test", 443) is gateway


def test_hook_halton_register_checks(paths) -> None:
    class Plugin:
        @hookimpl
        def halton_register_checks(self, register: Any) -> None:
            register(Check("check.hook-test", "hook test", lambda ctx: CheckResult("warn", "from a plugin")))

    host = host_with(Plugin())
    check = host.registries.checks.get("check.hook-test")
    assert check.run(CheckContext(paths=paths, config=None)).summary == "from a plugin"


def test_hook_halton_register_init_steps() -> None:
    step = InitStep("step.hook-test", "hook test", check=lambda ctx: True, apply=lambda ctx: None)

    class Plugin:
        @hookimpl
        def halton_register_init_steps(self, register: Any) -> None:
            register(step)

    assert host_with(Plugin()).registries.init_steps.get("step.hook-test") is step


def test_hook_halton_register_sync_targets() -> None:
    # The core opens a configured [[sync]] target's sink from this registry (core/runner.py start_sync).
    target = SyncTarget("sync.hook-test", "hook test", open=lambda options: None)  # type: ignore[arg-type,return-value]

    class Plugin:
        @hookimpl
        def halton_register_sync_targets(self, register: Any) -> None:
            register(target)

    assert host_with(Plugin()).registries.sync_targets.get("sync.hook-test") is target


def test_hook_halton_register_attributors() -> None:
    from halton_meter.attribution.service import AttributionService

    class Plugin:
        @hookimpl
        def halton_register_attributors(self, register: Any, config: Any) -> None:
            register(Attributor("attr.hook-test", lambda client: Attribution("from-the-plugin", "hook-test")))

    service = AttributionService(host_with(Plugin()).registries.attributors.ordered())
    try:
        resolution = service.lookup(None).result(timeout=10)
    finally:
        service.close()
    assert (resolution.attribution.project, resolution.attribution.source) == ("from-the-plugin", "hook-test")


def test_hook_halton_register_importers() -> None:
    class HookTest(Importer):
        id, name, title = "import.hook-test", "hook-test", "Hook test"

    importer = HookTest()

    class Plugin:
        @hookimpl
        def halton_register_importers(self, register: Any) -> None:
            register(importer)

    assert host_with(Plugin()).registries.importers.get("import.hook-test") is importer


def test_hook_halton_platform_installer() -> None:
    from halton_meter.types import PlatformInfo

    sentinel = object()

    class Plugin:
        @hookimpl(tryfirst=True)
        def halton_platform_installer(self, platform: Any) -> Any:
            return sentinel

    host = host_with(Plugin())
    assert host.hook.halton_platform_installer(platform=PlatformInfo(system="linux")) is sentinel


def test_hook_halton_usage_recorded(tmp_path: Path) -> None:
    """The core wires the writer's `on_committed` to this hook: every final record reaches every plugin
    once committed, and a plugin that raises is counted (`hook_errors`), never losing the call."""
    from halton_meter.store.schema import migrate
    from halton_meter.store.writer import Writer

    got: list[str] = []

    class Listener:
        @hookimpl
        def halton_usage_recorded(self, record: CallRecord) -> None:
            got.append(record.id)

    class Broken:
        @hookimpl
        def halton_usage_recorded(self, record: CallRecord) -> None:
            raise RuntimeError("a plugin bug")

    host = host_with(Broken())
    host.register_object(Listener(), "listener", source="entry_point")  # pluggy calls the latest first
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db, on_committed=lambda r: host.hook.halton_usage_recorded(record=r)).start()
    try:
        writer.submit(CallRecord(id="c1", started_at="2026-11-22T12:00:00.000000Z", provider="openai",
                                 endpoint_kind="chat.completions", host="api.openai.com", method="POST",
                                 path="/v1/chat/completions", status=200, complete=True))
        assert writer.wait_idle(10)
    finally:
        writer.close()
    assert got == ["c1"]
    assert writer.stats.hook_errors == 1


def test_usage_hook_failures_show_in_the_core_row(paths, monkeypatch) -> None:
    """`status` and `doctor` share the core check: the failures the core counts are named there."""
    import json

    from halton_meter_checks import meter

    monkeypatch.setattr(meter, "core_state", lambda p: {"port": 4321, "pid": 99999})
    monkeypatch.setattr(meter, "pid_alive", lambda pid: True)
    monkeypatch.setattr(meter, "core_answers", lambda p: True)
    paths.run_dir.mkdir(parents=True)
    stats = paths.run_dir / "core-stats.json"
    ctx = CheckContext(paths=paths, config=None)

    stats.write_text(json.dumps({"updated_at": time.time(), "pid": 99999, "writer": {"hook_errors": 0}}))
    assert meter.check_core(ctx).status == "ok"
    stats.write_text(json.dumps({"updated_at": time.time(), "pid": 99999, "writer": {"hook_errors": 3}}))
    result = meter.check_core(ctx)
    assert result.status == "warn" and "halton_usage_recorded hook failed 3 time(s)" in result.summary
    assert result.details["hook_errors"] == 3 and "halton-meter logs" in (result.fix or "")


def test_the_guard_finds_an_uncalled_hook() -> None:
    """The guard can fail: a hook named nowhere in the host code has no caller."""
    assert not has_caller("halton_never_called_anywhere", host_sources())
    assert has_caller("halton_usage_recorded", host_sources())
    assert has_caller("halton_register_sync_targets", host_sources())  # the core's sync reads the registry
