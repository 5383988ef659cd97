"""The macOS (launchd) and Windows (Task Scheduler) installers, tested on any OS.

Neither OS runs here, so each installer runs against a small simulation of the commands it uses (launchctl,
security and networksetup; reg, schtasks, certutil and powershell), plugged into the command-runner seam
(`RecordingRunner`). The simulations keep state, so the tests assert three things: the exact, ordered
commands each operation runs; the files it writes (equal to golden files in tests/golden/, reviewed by eye);
and that rollback and uninstall run exactly the recorded undo commands, newest first, and leave the
simulated OS byte for byte as it was before.

Regenerate the golden files after an intended change with HALTON_METER_UPDATE_GOLDEN=1, then review the diff.
"""

from __future__ import annotations

import base64
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from halton_meter.ca import CA_COMMON_NAME, ensure_ca
from halton_meter.config import Config
from halton_meter.errors import HaltonError
from halton_meter.host import PluginHost
from halton_meter.lifecycle.commands import CommandResult, RecordingRunner
from halton_meter.lifecycle.init import (
    InitContext,
    InitOptions,
    UnsupportedOnPlatform,
    rollback,
    run_init,
    undo_all,
)
from halton_meter.lifecycle.state import SystemState
from halton_meter.paths import Paths
from halton_meter.types import InitStep, PlatformInfo
from halton_meter_plugins.init_steps import client_env
from halton_meter_plugins.installers import launchd, windows

GOLDEN = Path(__file__).parent / "golden"
UID = 501
EDGE_PORT = 18081
DARWIN = PlatformInfo("darwin")
WINDOWS = PlatformInfo("windows")
LINUX = PlatformInfo("linux", has_systemd_user=True)
WIN_USER = "ADA-PC\\ada"
WIN_PYTHONW = r"C:\Users\Ada Lovelace\pipx\venvs\halton-meter\Scripts\pythonw.exe"


def check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("HALTON_METER_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"missing golden file {path}; generate it with HALTON_METER_UPDATE_GOLDEN=1 and review it"
    assert data == path.read_bytes(), f"{name} differs from its golden file (HALTON_METER_UPDATE_GOLDEN=1 to update)"


def sha1_of(pem_path: Path) -> str:
    """Independent of the installers' own helper: cryptography's fingerprint."""
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def fail(argv: tuple[str, ...], stderr: str, code: int = 1) -> CommandResult:
    return CommandResult(argv, code, "", stderr)


def ok(argv: tuple[str, ...], stdout: str = "") -> CommandResult:
    return CommandResult(argv, 0, stdout, "")


# ==================================================================================================
# A simulated Mac: launchctl, security, networksetup
# ==================================================================================================


@dataclass
class Proxy:
    enabled: bool = False
    server: str = ""
    port: int = 0
    authenticated: bool = False


@dataclass
class Service:
    enabled: bool = True
    secure: Proxy = field(default_factory=Proxy)
    web: Proxy = field(default_factory=Proxy)
    bypass: list[str] = field(default_factory=list)


@dataclass
class FakeMac:
    services: dict[str, Service] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    loaded: dict[str, str] = field(default_factory=dict)
    """target → plist path"""
    running: set[str] = field(default_factory=set)
    keychain: set[str] = field(default_factory=set)
    trusted: set[str] = field(default_factory=set)
    cancel_trust: bool = False
    stop_polls: int = 1
    """How many `launchctl print` answers still say running after a SIGTERM."""
    _stopping: int = 0

    def os_state(self) -> dict[str, Any]:
        return copy.deepcopy({"services": self.services, "env": self.env, "loaded": self.loaded,
                              "running": self.running, "keychain": self.keychain, "trusted": self.trusted})

    def runner(self) -> RecordingRunner:
        return RecordingRunner(script={"launchctl": self.launchctl, "security": self.security,
                                       "networksetup": self.networksetup})

    # ---- launchctl ----------------------------------------------------------------------------------

    def launchctl(self, argv: tuple[str, ...]) -> CommandResult:
        verb, args = argv[1], argv[2:]
        if verb == "print":
            target = args[0]
            if target not in self.loaded:
                return fail(argv, f'Could not find service "{target.rsplit("/", 1)[1]}" in domain for user gui: {UID}',
                            113)
            if target in self.running and self._stopping:
                self._stopping -= 1
                if not self._stopping:
                    self.running.discard(target)
                    return ok(argv, self._print(target, False))
            return ok(argv, self._print(target, target in self.running))
        if verb == "bootstrap":
            target = f"{args[0]}/{Path(args[1]).stem}"
            if target in self.loaded:
                return fail(argv, "Bootstrap failed: 5: Input/output error", 5)
            self.loaded[target] = args[1]
            self.running.add(target)  # RunAtLoad
            return ok(argv)
        if verb == "bootout":
            if args[0] not in self.loaded:
                return fail(argv, "Boot-out failed: 3: No such process", 3)
            del self.loaded[args[0]]
            self.running.discard(args[0])
            return ok(argv)
        if verb == "kickstart":
            if args[0] not in self.loaded:
                return fail(argv, "Could not find service", 113)
            self.running.add(args[0])
            return ok(argv)
        if verb == "kill":
            if args[1] in self.running:
                if args[0] == "SIGKILL":
                    self.running.discard(args[1])
                else:
                    self._stopping = self.stop_polls + 1
            return ok(argv)
        if verb == "getenv":
            return ok(argv, self.env[args[0]] + "\n" if args[0] in self.env else "")
        if verb == "setenv":
            self.env[args[0]] = args[1]
            return ok(argv)
        if verb == "unsetenv":
            self.env.pop(args[0], None)
            return ok(argv)
        raise AssertionError(f"unexpected {argv}")

    @staticmethod
    def _print(target: str, running: bool) -> str:
        lines = [f"{target} = {{", "\tactive count = 1", "\ttype = LaunchAgent",
                 f"\tstate = {'running' if running else 'not running'}", "", "\tprogram = /usr/bin/python3",
                 "\tinherited environment = {", "\t\tstate = nested, not ours", "\t}"]
        lines += ["\tpid = 4242", "\tlast exit code = (never exited)"] if running else ["\tlast exit code = 0"]
        return "\n".join(lines + ["}"]) + "\n"

    # ---- security -----------------------------------------------------------------------------------

    def security(self, argv: tuple[str, ...]) -> CommandResult:
        verb = argv[1]
        if verb == "verify-cert":
            sha1 = sha1_of(Path(argv[argv.index("-c") + 1]))
            if sha1 in self.trusted:
                return ok(argv, "...certificate verification successful.\n")
            return fail(argv, "Cert Verify Result: CSSMERR_TP_NOT_TRUSTED")
        if verb == "find-certificate":
            out = "".join(f'keychain: "{argv[-1]}"\nSHA-256 hash: {"0" * 64}\nSHA-1 hash: {h}\n'
                          for h in sorted(self.keychain))
            return ok(argv, out) if out else fail(argv, "security: SecKeychainSearchCopyNext: The specified item "
                                                        "could not be found in the keychain.", 44)
        if verb == "add-trusted-cert":
            sha1 = sha1_of(Path(argv[-1]))
            self.keychain.add(sha1)
            if self.cancel_trust:
                return fail(argv, "SecTrustSettingsSetTrustSettings: The authorization was canceled by the user.")
            self.trusted.add(sha1)
            return ok(argv)
        if verb == "delete-certificate":
            sha1 = argv[argv.index("-Z") + 1]
            if sha1 not in self.keychain:
                return fail(argv, "Unable to delete certificate matching", 44)
            self.keychain.discard(sha1)
            if "-t" in argv:
                self.trusted.discard(sha1)
            return ok(argv)
        if verb == "remove-trusted-cert":
            self.trusted.discard(sha1_of(Path(argv[-1])))
            return ok(argv)
        raise AssertionError(f"unexpected {argv}")

    # ---- networksetup -------------------------------------------------------------------------------

    def networksetup(self, argv: tuple[str, ...]) -> CommandResult:
        verb, args = argv[1], argv[2:]
        if verb == "-listallnetworkservices":
            lines = ["An asterisk (*) denotes that a network service is disabled."]
            lines += [("" if s.enabled else "*") + name for name, s in self.services.items()]
            return ok(argv, "\n".join(lines) + "\n")
        service = self.services[args[0]]
        kind = "secure" if "secure" in verb else "web"
        proxy: Proxy = getattr(service, kind)
        if verb in ("-getsecurewebproxy", "-getwebproxy"):
            return ok(argv, f"Enabled: {'Yes' if proxy.enabled else 'No'}\nServer: {proxy.server}\n"
                            f"Port: {proxy.port}\nAuthenticated Proxy Enabled: {int(proxy.authenticated)}\n")
        if verb in ("-setsecurewebproxy", "-setwebproxy"):
            setattr(service, kind, Proxy(True, args[1], int(args[2] or 0), False))
            return ok(argv)
        if verb in ("-setsecurewebproxystate", "-setwebproxystate"):
            proxy.enabled = args[1] == "on"
            return ok(argv)
        if verb == "-getproxybypassdomains":
            if not service.bypass:
                return ok(argv, f"There aren't any bypass domains set on {args[0]}.\n")
            return ok(argv, "\n".join(service.bypass) + "\n")
        if verb == "-setproxybypassdomains":
            service.bypass = [] if list(args[1:]) == ["Empty"] else list(args[1:])
            return ok(argv)
        raise AssertionError(f"unexpected {argv}")


# ==================================================================================================
# A simulated Windows user: reg, schtasks, certutil, powershell
# ==================================================================================================


@dataclass
class FakeWindows:
    registry: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)
    """key → lowercase name → (name as created, type, data as `reg query` prints it)"""
    task: bytes | None = None
    task_status: str = "Ready"
    root_store: set[str] = field(default_factory=set)
    decline_root: bool = False
    notified: int = 0

    def os_state(self) -> dict[str, Any]:
        return copy.deepcopy({"registry": self.registry, "task": self.task, "root": self.root_store})

    def runner(self) -> RecordingRunner:
        return RecordingRunner(script={"reg": self.reg, "schtasks": self.schtasks, "certutil": self.certutil,
                                       "powershell": self.powershell})

    def set(self, key: str, name: str, kind: str, data: str) -> None:
        self.registry.setdefault(key, {})[name.lower()] = (name, kind, data)

    def reg(self, argv: tuple[str, ...]) -> CommandResult:
        verb, key, name = argv[1], argv[2], argv[argv.index("/v") + 1]
        values = self.registry.setdefault(key, {})
        if verb == "query":
            if name.lower() not in values:
                return fail(argv, "ERROR: The system was unable to find the specified registry key or value.")
            shown, kind, data = values[name.lower()]
            hive = key.replace("HKCU", "HKEY_CURRENT_USER", 1)
            return ok(argv, f"\n{hive}\n    {shown}    {kind}    {data}\n\n")
        if verb == "add":
            kind, data = argv[argv.index("/t") + 1], argv[argv.index("/d") + 1]
            if kind == "REG_DWORD":
                data = hex(int(data, 0))
            shown = values[name.lower()][0] if name.lower() in values else name
            values[name.lower()] = (shown, kind, data)
            return ok(argv, "The operation completed successfully.\n")
        if verb == "delete":
            values.pop(name.lower(), None)
            if not values:
                del self.registry[key]
            return ok(argv, "The operation completed successfully.\n")
        raise AssertionError(f"unexpected {argv}")

    def schtasks(self, argv: tuple[str, ...]) -> CommandResult:
        verb = argv[1]
        if verb == "/Query":
            if self.task is None:
                return fail(argv, "ERROR: The system cannot find the file specified.")
            return ok(argv, f'"\\halton-meter","N/A","{self.task_status}"\n')
        if verb == "/Create":
            self.task = Path(argv[argv.index("/XML") + 1]).read_bytes()
            return ok(argv, 'SUCCESS: The scheduled task "halton-meter" has successfully been created.\n')
        if verb == "/Delete":
            self.task = None
            return ok(argv)
        if verb == "/Run":
            self.task_status = "Running"
            return ok(argv)
        if verb == "/End":
            self.task_status = "Ready"
            return ok(argv)
        raise AssertionError(f"unexpected {argv}")

    def certutil(self, argv: tuple[str, ...]) -> CommandResult:
        verb, target = argv[2], argv[4]
        if verb == "-store":
            if target in self.root_store:
                return ok(argv, "CertUtil: -store command completed successfully.\n")
            return fail(argv, "CertUtil: -store command FAILED: 0x80090011 (-2146893807 NTE_NOT_FOUND)")
        if verb == "-addstore":
            if self.decline_root:
                return fail(argv, "CertUtil: -addstore command FAILED: 0x800704c7 (WIN32: 1223 ERROR_CANCELLED)")
            self.root_store.add(sha1_of(Path(target)))
            return ok(argv)
        if verb == "-delstore":
            self.root_store.discard(target)
            return ok(argv)
        raise AssertionError(f"unexpected {argv}")

    def powershell(self, argv: tuple[str, ...]) -> CommandResult:
        assert argv == tuple(windows.NOTIFY)
        self.notified += 1
        return ok(argv)


# ==================================================================================================
# Contexts
# ==================================================================================================


def make_ctx(tmp_path: Path, installer: Any, platform: PlatformInfo, runner: RecordingRunner, *,
             mode: str = "apps", non_interactive: bool = False) -> InitContext:
    paths = Paths(tmp_path / "home")
    ctx = InitContext(
        paths=paths,
        config=Config(paths=paths, edge_port=EDGE_PORT, api_port=18765),
        options=InitOptions(mode=mode, non_interactive=non_interactive),
        runner=runner,
        installer=installer,
        platform=platform,
        user_home=tmp_path / "user",
        state=SystemState(),
    )
    ctx.reported = []  # type: ignore[attr-defined]
    ctx.report = ctx.reported.append  # type: ignore[attr-defined]
    return ctx


def mac(tmp_path: Path, fake: FakeMac, **kwargs: Any) -> InitContext:
    installer = launchd.LaunchdInstaller(DARWIN, uid=UID)
    installer.poll_interval = 0
    return make_ctx(tmp_path, installer, DARWIN, fake.runner(), **kwargs)


def win(tmp_path: Path, fake: FakeWindows, **kwargs: Any) -> InitContext:
    installer = windows.WindowsInstaller(WINDOWS, user=WIN_USER, interpreter=WIN_PYTHONW)
    installer.poll_interval = 0
    return make_ctx(tmp_path, installer, WINDOWS, fake.runner(), **kwargs)


def calls(ctx: InitContext) -> list[tuple[str, ...]]:
    return ctx.runner.calls  # type: ignore[attr-defined,no-any-return]


def take_calls(ctx: InitContext) -> list[tuple[str, ...]]:
    done = list(calls(ctx))
    calls(ctx).clear()
    return done


def recorded_undo(ctx: InitContext) -> list[list[list[str]]]:
    return [c.undo for c in ctx.state.changes if c.kind == "command"]


def reversed_undo_commands(ctx: InitContext) -> list[tuple[str, ...]]:
    """What undoing every recorded command change runs: newest change first, each change's commands in order."""
    return [tuple(argv) for undo in reversed(recorded_undo(ctx)) for argv in undo]


def steps(installer_calls: dict[str, Any], fail_after: bool = False) -> list[InitStep]:
    """Init steps that drive just the installer (the real steps also make a CA and start a meter)."""

    def never(ctx: Any) -> bool:
        return False

    chosen = [
        InitStep("init.service", "service", never, installer_calls["service"]),
        InitStep("init.environment", "environment", never, installer_calls["environment"],
                 requires=("init.service",), modes=("apps", "full")),
        InitStep("init.system-proxy", "system proxy", never, installer_calls["proxy"],
                 requires=("init.environment",), modes=("full",)),
    ]
    if fail_after:
        def boom(ctx: Any) -> None:
            raise HaltonError("the self-test failed")

        chosen.append(InitStep("init.self-test", "self-test", never, boom, requires=("init.system-proxy",)))
    return chosen


INSTALLER_CALLS = {
    "service": lambda ctx: ctx.installer.install_services(ctx),
    "environment": lambda ctx: ctx.installer.persist_env(ctx, client_env(ctx)),
    "proxy": lambda ctx: ctx.installer.set_system_proxy(ctx, ctx.config.edge_port),
}


# ==================================================================================================
# Hooks: each installer answers only on its own platform
# ==================================================================================================


def test_each_hook_answers_only_for_its_platform() -> None:
    assert isinstance(launchd.halton_platform_installer(platform=DARWIN), launchd.LaunchdInstaller)
    assert isinstance(windows.halton_platform_installer(platform=WINDOWS), windows.WindowsInstaller)
    for other in (LINUX, PlatformInfo("linux"), WINDOWS, PlatformInfo("freebsd")):
        assert launchd.halton_platform_installer(platform=other) is None
    for other in (LINUX, PlatformInfo("linux"), DARWIN, PlatformInfo("freebsd")):
        assert windows.halton_platform_installer(platform=other) is None


def test_the_host_picks_launchd_on_macos_and_task_scheduler_on_windows(paths: Paths) -> None:
    host = PluginHost(Config(paths=paths)).load()
    darwin = host.hook.halton_platform_installer(platform=DARWIN)
    assert (darwin.id, darwin.kind) == ("installer.launchd", "launchd")
    win_installer = host.hook.halton_platform_installer(platform=WINDOWS)
    assert (win_installer.id, win_installer.kind) == ("installer.windows", "task-scheduler")


# ==================================================================================================
# macOS: files
# ==================================================================================================

MAC_PATHS = Paths(Path("/Users/ada/.halton-meter"))
MAC_ARGV = ["/Users/ada/.local/pipx/venvs/halton-meter/bin/python", "-m", "halton_meter", "serve"]


def test_launch_agent_plist_matches_golden() -> None:
    check_golden("launchd/com.halton-meter.serve.plist", launchd.agent_plist(MAC_PATHS, MAC_ARGV))


def test_env_agent_plist_matches_golden() -> None:
    env = client_env(SimpleNamespace(config=SimpleNamespace(edge_port=8081), paths=MAC_PATHS))
    check_golden("launchd/com.halton-meter.env.plist", launchd.env_agent_plist(env))


def test_launch_agent_plist_is_a_valid_property_list_with_the_service_settings() -> None:
    import plistlib

    job = plistlib.loads(launchd.agent_plist(MAC_PATHS, MAC_ARGV))
    assert job["ProgramArguments"] == MAC_ARGV
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ThrottleInterval"] == 10 and job["Umask"] == 0o077 and job["RunAtLoad"] is True
    assert job["EnvironmentVariables"]["HALTON_METER_HOME"] == "/Users/ada/.halton-meter"
    assert job["StandardOutPath"] == job["StandardErrorPath"] == "/Users/ada/.halton-meter/logs/serve.out"


# ==================================================================================================
# macOS: service
# ==================================================================================================

TARGET = f"gui/{UID}/{launchd.LABEL}"


def test_macos_install_writes_the_agent_and_bootstraps_it_once(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    ctx.current_step = "init.service"
    ctx.installer.install_services(ctx)
    plist = tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist"
    assert take_calls(ctx) == [
        ("launchctl", "print", TARGET),
        ("launchctl", "bootstrap", f"gui/{UID}", str(plist)),
    ]
    assert plist.read_bytes() == launchd.agent_plist(ctx.paths)
    assert recorded_undo(ctx) == [[["launchctl", "bootout", TARGET]]]
    assert fake.loaded == {TARGET: str(plist)}

    # Again: nothing changed, so only the read-only query runs and nothing new is recorded.
    changes = len(ctx.state.changes)
    ctx.installer.install_services(ctx)
    assert take_calls(ctx) == [("launchctl", "print", TARGET)]
    assert len(ctx.state.changes) == changes

    # A changed definition (a new interpreter, say) is loaded again: launchd keeps what it loaded.
    plist.write_bytes(b"<plist>older</plist>")
    ctx.installer.install_services(ctx)
    assert take_calls(ctx) == [
        ("launchctl", "print", TARGET),
        ("launchctl", "bootout", TARGET),
        ("launchctl", "bootstrap", f"gui/{UID}", str(plist)),
    ]
    assert recorded_undo(ctx) == [[["launchctl", "bootout", TARGET]]]  # the same undo, recorded once

    # system_state.json lost: the agent is loaded but uninstall would not know to unload it, so load it again
    # through the context, which records the undo.
    ctx.state = SystemState()
    ctx.installer.install_services(ctx)
    assert take_calls(ctx)[1:] == [("launchctl", "bootout", TARGET), ("launchctl", "bootstrap", f"gui/{UID}", str(plist))]
    assert recorded_undo(ctx) == [[["launchctl", "bootout", TARGET]]]


def test_macos_install_outside_a_desktop_session_says_where_to_run_it(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    runner = ctx.runner
    runner.script = {**runner.script, ("launchctl", "bootstrap", f"gui/{UID}", str(  # type: ignore[attr-defined]
        tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist")):
        CommandResult((), 125, "", "Bootstrap failed: 125: Domain does not support specified action")}
    with pytest.raises(HaltonError, match="logged-in desktop session"):
        ctx.installer.install_services(ctx)
    assert recorded_undo(ctx) == []


def test_macos_start_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[Path] = []
    monkeypatch.setattr(launchd, "wait_until_running", lambda paths: waited.append(paths.home))
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    ctx.installer.install_services(ctx)
    fake.running.clear()
    take_calls(ctx)

    ctx.installer.start(ctx)
    assert take_calls(ctx) == [("launchctl", "print", TARGET), ("launchctl", "kickstart", TARGET)]
    assert waited == [ctx.paths.home]
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.detail) == (True, True, f"launchd agent {launchd.LABEL} running, pid 4242")
    take_calls(ctx)

    fake.stop_polls = 2  # the supervisor takes a moment to drain
    ctx.installer.stop(ctx)
    assert take_calls(ctx) == [
        ("launchctl", "print", TARGET),
        ("launchctl", "kill", "SIGTERM", TARGET),
        ("launchctl", "print", TARGET),
        ("launchctl", "print", TARGET),
        ("launchctl", "print", TARGET),
    ]
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running) == (True, False)
    assert "last exit code 0" in state.detail and state.fix
    take_calls(ctx)

    ctx.installer.stop(ctx)  # already stopped: only the query
    assert take_calls(ctx) == [("launchctl", "print", TARGET)]


def test_macos_start_loads_an_agent_that_was_booted_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launchd, "wait_until_running", lambda paths: None)
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    ctx.installer.install_services(ctx)
    fake.loaded.clear()
    fake.running.clear()
    take_calls(ctx)
    ctx.installer.start(ctx)
    plist = str(tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist")
    assert take_calls(ctx) == [
        ("launchctl", "print", TARGET),
        ("launchctl", "bootstrap", f"gui/{UID}", plist),
        ("launchctl", "kickstart", TARGET),
    ]


def test_macos_service_state_when_not_loaded_or_the_plist_is_gone(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.fix) == (False, False, "halton-meter init")
    ctx.installer.install_services(ctx)
    fake.loaded.clear()
    fake.running.clear()
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.fix) == (False, False, "halton-meter start")
    ctx.installer.install_services(ctx)
    (tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist").unlink()
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.fix) == (False, True, "halton-meter init")


def test_launchctl_print_parsing_reads_only_top_level_keys() -> None:
    text = FakeMac._print(TARGET, False)
    job = launchd.parse_print(text)
    assert (job.state, job.pid, job.last_exit, job.running) == ("not running", None, "0", False)
    job = launchd.parse_print(FakeMac._print(TARGET, True))
    assert (job.state, job.pid, job.running) == ("running", 4242, True)


# ==================================================================================================
# macOS: trust
# ==================================================================================================


def test_macos_trust_adds_the_ca_to_the_login_keychain(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    ensure_ca(ctx.paths)
    sha1 = sha1_of(ctx.paths.ca_cert)
    assert launchd.cert_sha1(ctx.paths.ca_cert) == sha1
    keychain = str(tmp_path / "user/Library/Keychains/login.keychain-db")
    ctx.current_step = "init.os-trust"
    assert ctx.installer.trust_ca(ctx) is True
    assert take_calls(ctx) == [
        ("security", "verify-cert", "-c", str(ctx.paths.ca_cert)),
        ("security", "find-certificate", "-a", "-Z", "-c", CA_COMMON_NAME, keychain),
        ("security", "add-trusted-cert", "-r", "trustRoot", "-k", keychain, str(ctx.paths.ca_cert)),
    ]
    assert recorded_undo(ctx) == [[["security", "delete-certificate", "-t", "-Z", sha1, keychain]]]
    assert ctx.reported == ["macOS asks for your password to trust the meter's CA in your login keychain"]  # type: ignore[attr-defined]
    assert fake.trusted == fake.keychain == {sha1}

    ctx.undo_step("init.os-trust")
    assert take_calls(ctx) == [("security", "delete-certificate", "-t", "-Z", sha1, keychain)]
    assert fake.trusted == fake.keychain == set()


def test_macos_trust_of_a_certificate_already_in_the_keychain_removes_only_the_trust(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake)
    ensure_ca(ctx.paths)
    fake.keychain.add(sha1_of(ctx.paths.ca_cert))  # imported by hand earlier, never trusted
    before = fake.os_state()
    ctx.current_step = "init.os-trust"
    ctx.installer.trust_ca(ctx)
    assert recorded_undo(ctx) == [[["security", "remove-trusted-cert", str(ctx.paths.ca_cert)]]]
    ctx.undo_step("init.os-trust")
    assert fake.os_state() == before


def test_macos_trust_non_interactive_skips_with_the_exact_command(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake, non_interactive=True)
    ensure_ca(ctx.paths)
    assert ctx.installer.trust_ca(ctx) is False
    assert take_calls(ctx) == [("security", "verify-cert", "-c", str(ctx.paths.ca_cert))]
    keychain = tmp_path / "user/Library/Keychains/login.keychain-db"
    assert ctx.notes[-1].endswith(
        f"run it yourself: security add-trusted-cert -r trustRoot -k {keychain} {ctx.paths.ca_cert}")
    assert recorded_undo(ctx) == [] and fake.keychain == set()


def test_macos_trust_already_trusted_changes_nothing(tmp_path: Path) -> None:
    fake = FakeMac()
    ctx = mac(tmp_path, fake, non_interactive=True)
    ensure_ca(ctx.paths)
    fake.trusted.add(sha1_of(ctx.paths.ca_cert))
    assert ctx.installer.trust_ca(ctx) is True
    assert take_calls(ctx) == [("security", "verify-cert", "-c", str(ctx.paths.ca_cert))]
    assert recorded_undo(ctx) == []


def test_macos_trust_cancelled_takes_the_imported_copy_out_again(tmp_path: Path) -> None:
    fake = FakeMac(cancel_trust=True)
    ctx = mac(tmp_path, fake)
    ensure_ca(ctx.paths)
    sha1 = sha1_of(ctx.paths.ca_cert)
    with pytest.raises(HaltonError, match="did not trust the meter's CA.*canceled by the user"):
        ctx.installer.trust_ca(ctx)
    keychain = str(tmp_path / "user/Library/Keychains/login.keychain-db")
    assert take_calls(ctx)[-1] == ("security", "delete-certificate", "-Z", sha1, keychain)
    assert fake.keychain == set() and recorded_undo(ctx) == []


# ==================================================================================================
# macOS: environment for apps
# ==================================================================================================


def test_macos_persist_env_sets_launchd_variables_and_a_login_agent(tmp_path: Path) -> None:
    fake = FakeMac(env={"HTTPS_PROXY": "http://corp-proxy:3128", "PATH": "/usr/bin:/bin"})
    before = fake.os_state()
    ctx = mac(tmp_path, fake)
    ctx.current_step = "init.environment"
    env = client_env(ctx)
    ctx.installer.persist_env(ctx, env)
    expected = []
    for key, value in env.items():
        expected += [("launchctl", "getenv", key), ("launchctl", "setenv", key, value)]
    assert take_calls(ctx) == expected
    agent = tmp_path / "user/Library/LaunchAgents/com.halton-meter.env.plist"
    assert agent.read_bytes() == launchd.env_agent_plist(env)
    assert fake.env == {**env, "PATH": "/usr/bin:/bin"}
    assert recorded_undo(ctx)[0] == [["launchctl", "setenv", "HTTPS_PROXY", "http://corp-proxy:3128"]]
    assert recorded_undo(ctx)[1] == [["launchctl", "unsetenv", "HTTP_PROXY"]]

    # Again: every value is already right, so only the queries run.
    changes = len(ctx.state.changes)
    ctx.installer.persist_env(ctx, env)
    assert take_calls(ctx) == [("launchctl", "getenv", key) for key in env]
    assert len(ctx.state.changes) == changes

    # Undo (mode switch or uninstall): exactly the recorded commands, newest first; the previous values back.
    expected_undo = reversed_undo_commands(ctx)
    ctx.undo_step("init.environment")
    assert take_calls(ctx) == expected_undo
    assert expected_undo[-1] == ("launchctl", "setenv", "HTTPS_PROXY", "http://corp-proxy:3128")
    assert fake.os_state() == before
    assert not agent.exists()


# ==================================================================================================
# macOS: system proxy (full mode)
# ==================================================================================================


def office_mac() -> FakeMac:
    return FakeMac(services={
        "Wi-Fi": Service(bypass=["*.local", "169.254/16"]),
        "USB 10/100/1000 LAN": Service(secure=Proxy(True, "proxy.corp.example", 3128),
                                       web=Proxy(False, "proxy.corp.example", 80)),
        "Bluetooth PAN": Service(enabled=False),
    })


def test_macos_system_proxy_commands_and_exact_restore(tmp_path: Path) -> None:
    fake = office_mac()
    before = fake.os_state()
    ctx = mac(tmp_path, fake, mode="full")
    ctx.current_step = "init.system-proxy"
    ctx.installer.set_system_proxy(ctx, EDGE_PORT)
    port = str(EDGE_PORT)
    lan = "USB 10/100/1000 LAN"
    assert take_calls(ctx) == [
        ("networksetup", "-listallnetworkservices"),
        ("networksetup", "-getsecurewebproxy", "Wi-Fi"),
        ("networksetup", "-getwebproxy", "Wi-Fi"),
        ("networksetup", "-getproxybypassdomains", "Wi-Fi"),
        ("networksetup", "-getsecurewebproxy", lan),
        ("networksetup", "-getwebproxy", lan),
        ("networksetup", "-getproxybypassdomains", lan),
        ("networksetup", "-setsecurewebproxy", "Wi-Fi", "127.0.0.1", port),
        ("networksetup", "-setwebproxy", "Wi-Fi", "127.0.0.1", port),
        ("networksetup", "-setproxybypassdomains", "Wi-Fi", "*.local", "169.254/16", "localhost", "127.0.0.1", "::1"),
        ("networksetup", "-setsecurewebproxy", lan, "127.0.0.1", port),
        ("networksetup", "-setwebproxy", lan, "127.0.0.1", port),
        ("networksetup", "-setproxybypassdomains", lan, "localhost", "127.0.0.1", "::1"),
    ]
    assert recorded_undo(ctx) == [
        [["networksetup", "-setsecurewebproxy", "Wi-Fi", "", "0"], ["networksetup", "-setsecurewebproxystate", "Wi-Fi", "off"]],
        [["networksetup", "-setwebproxy", "Wi-Fi", "", "0"], ["networksetup", "-setwebproxystate", "Wi-Fi", "off"]],
        [["networksetup", "-setproxybypassdomains", "Wi-Fi", "*.local", "169.254/16"]],
        [["networksetup", "-setsecurewebproxy", lan, "proxy.corp.example", "3128"]],
        [["networksetup", "-setwebproxy", lan, "proxy.corp.example", "80"], ["networksetup", "-setwebproxystate", lan, "off"]],
        [["networksetup", "-setproxybypassdomains", lan, "Empty"]],
    ]
    assert "Bluetooth PAN" not in str(calls(ctx))
    assert ctx.notes[-1] == (f"system proxy 127.0.0.1:{EDGE_PORT} on Wi-Fi, {lan}; replaced "
                             f"proxy.corp.example:3128 ({lan}) (restored by `halton-meter uninstall`)")
    for name in ("Wi-Fi", lan):
        service = fake.services[name]
        assert service.secure == service.web == Proxy(True, "127.0.0.1", EDGE_PORT, False)

    # Again: already pointing at the edge, so only the reads run.
    changes = len(ctx.state.changes)
    ctx.installer.set_system_proxy(ctx, EDGE_PORT)
    assert all(argv[1].startswith(("-get", "-list")) for argv in take_calls(ctx))
    assert len(ctx.state.changes) == changes

    expected_undo = reversed_undo_commands(ctx)
    ctx.undo_step("init.system-proxy")
    assert take_calls(ctx) == expected_undo
    assert fake.os_state() == before


def test_macos_system_proxy_refuses_an_authenticated_proxy_before_changing_anything(tmp_path: Path) -> None:
    fake = office_mac()
    fake.services["USB 10/100/1000 LAN"].secure.authenticated = True
    before = fake.os_state()
    ctx = mac(tmp_path, fake, mode="full")
    with pytest.raises(HaltonError, match="authenticated HTTPS proxy"):
        ctx.installer.set_system_proxy(ctx, EDGE_PORT)
    assert not any(argv[1].startswith("-set") for argv in calls(ctx))
    assert fake.os_state() == before and recorded_undo(ctx) == []


# ==================================================================================================
# macOS: a whole init, its rollback, and uninstall
# ==================================================================================================


def test_macos_failed_init_rolls_back_exactly_the_undo_commands_newest_first(tmp_path: Path) -> None:
    fake = office_mac()
    fake.env = {"NO_PROXY": "*.corp.example"}
    before = fake.os_state()
    ctx = mac(tmp_path, fake, mode="full")
    at_failure: dict[str, Any] = {}

    def on_step(outcome: Any) -> None:
        if outcome.status == "failed":  # reported before the rollback starts
            at_failure["undo"] = reversed_undo_commands(ctx)
            at_failure["calls"] = len(calls(ctx))

    result = run_init(ctx, steps(INSTALLER_CALLS, fail_after=True), on_step=on_step)
    assert result.failed is not None and result.failed.step.id == "init.self-test"
    assert calls(ctx)[at_failure["calls"]:] == at_failure["undo"]
    assert at_failure["undo"][-1] == ("launchctl", "bootout", TARGET)
    assert fake.os_state() == before
    assert not (tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist").exists()
    assert not (tmp_path / "user/Library/LaunchAgents/com.halton-meter.env.plist").exists()
    assert ctx.state.changes == []


def test_macos_rollback_command_order(tmp_path: Path) -> None:
    fake = office_mac()
    before = fake.os_state()
    ctx = mac(tmp_path, fake, mode="full")
    applied = steps(INSTALLER_CALLS)
    for step in applied:
        ctx.current_step = step.id
        step.apply(ctx)
    expected = reversed_undo_commands(ctx)
    take_calls(ctx)
    rollback(ctx, applied)
    assert take_calls(ctx) == expected
    assert expected[0][:2] == ("networksetup", "-setproxybypassdomains")  # the newest change goes first
    assert expected[-1] == ("launchctl", "bootout", TARGET)  # the oldest last
    assert fake.os_state() == before


def test_macos_uninstall_restores_everything(tmp_path: Path) -> None:
    fake = office_mac()
    fake.env = {"HTTPS_PROXY": "http://corp:3128"}
    before = fake.os_state()
    ctx = mac(tmp_path, fake, mode="full")
    chosen = steps(INSTALLER_CALLS)
    result = run_init(ctx, chosen, on_step=lambda outcome: None)
    assert result.failed is None
    state_file = tmp_path / "system_state.json"
    ctx.state.save(state_file)

    # A later process: the state comes from the file, as `halton-meter uninstall` reads it.
    later = mac(tmp_path, fake, mode="full")
    later.state = SystemState.load(state_file)
    expected = reversed_undo_commands(later)
    undo_all(later, {s.id: s for s in chosen})
    assert take_calls(later) == expected
    assert fake.os_state() == before
    assert later.state.changes == []
    assert not (tmp_path / "user/Library/LaunchAgents/com.halton-meter.serve.plist").exists()


# ==================================================================================================
# Windows: files
# ==================================================================================================

WIN_PATHS = Paths(PureWindowsPath(r"C:\Users\Ada Lovelace\.halton-meter"))  # type: ignore[arg-type]
WIN_ARGV = [r"C:\Users\Ada Lovelace\pipx\venvs\halton-meter\Scripts\python.exe", "-m", "halton_meter", "serve"]


def test_task_xml_matches_golden() -> None:
    check_golden("windows/serve-task.xml", windows.task_xml(WIN_PATHS, WIN_USER, WIN_PYTHONW).encode())


def test_task_launcher_matches_golden_and_compiles() -> None:
    script = windows.launcher_script(WIN_PATHS, WIN_ARGV)
    check_golden("windows/serve-task.py", script.encode())
    compile(script, "serve-task.py", "exec")


def test_task_file_is_utf16_with_bom_and_crlf_as_declared() -> None:
    xml = windows.task_xml(WIN_PATHS, WIN_USER, WIN_PYTHONW)
    data = windows.task_file_bytes(xml)
    assert data.startswith(b"\xff\xfe")
    text = data[2:].decode("utf-16-le")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    assert text.replace("\r\n", "\n") == xml

    import xml.etree.ElementTree as ET

    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.fromstring(data)  # the parser honours the BOM and the declared encoding
    assert root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=ns) == WIN_USER
    assert root.findtext("t:Settings/t:RestartOnFailure/t:Count", namespaces=ns) == "10"
    assert root.findtext("t:Principals/t:Principal/t:RunLevel", namespaces=ns) == "LeastPrivilege"
    assert root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=ns) == \
        '"C:\\Users\\Ada Lovelace\\.halton-meter\\serve-task.py"'


def test_the_launcher_sets_the_environment_and_runs_the_module(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the generated launcher here, with a stand-in module: environment, argv and output all as promised."""
    paths = Paths(tmp_path / "meter home")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "fake_meter.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'home': os.environ['HALTON_METER_HOME'],"
        " 'logs': os.environ['HALTON_METER_LOG_DIR']}))\n")
    launcher = tmp_path / "serve-task.py"
    launcher.write_text(windows.launcher_script(paths, ["python", "-m", "fake_meter", "serve"]))
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}
    subprocess.run([sys.executable, str(launcher)], check=True, env=env, cwd=tmp_path)
    import json

    out = json.loads((paths.logs / "serve.out").read_text())
    assert out == {"argv": ["serve"], "home": str(paths.home), "logs": str(paths.logs)}


def test_gui_interpreter_prefers_pythonw(tmp_path: Path) -> None:
    python = tmp_path / "python.exe"
    python.write_text("")
    assert windows.gui_interpreter(str(python)) == str(python)
    (tmp_path / "pythonw.exe").write_text("")
    assert windows.gui_interpreter(str(python)) == str(tmp_path / "pythonw.exe")
    assert windows.gui_interpreter("/usr/bin/python3") == "/usr/bin/python3"


# ==================================================================================================
# Windows: service
# ==================================================================================================

CREATE = ("schtasks", "/Create", "/TN", "halton-meter", "/XML")
QUERY = ("schtasks", "/Query", "/TN", "halton-meter", "/FO", "CSV", "/NH")


def test_windows_install_registers_the_task_once(tmp_path: Path) -> None:
    fake = FakeWindows()
    ctx = win(tmp_path, fake)
    ctx.current_step = "init.service"
    ctx.installer.install_services(ctx)
    xml_path = ctx.paths.home / "serve-task.xml"
    assert take_calls(ctx) == [(*CREATE, str(xml_path), "/F")]
    assert xml_path.read_bytes() == windows.task_file_bytes(windows.task_xml(ctx.paths, WIN_USER, WIN_PYTHONW))
    assert (ctx.paths.home / "serve-task.py").read_text() == windows.launcher_script(ctx.paths)
    assert fake.task == xml_path.read_bytes()
    assert recorded_undo(ctx) == [[["schtasks", "/Delete", "/TN", "halton-meter", "/F"]]]

    changes = len(ctx.state.changes)
    ctx.installer.install_services(ctx)  # unchanged: only the query
    assert take_calls(ctx) == [QUERY]
    assert len(ctx.state.changes) == changes

    fake.task = None  # deleted by hand: registered again
    ctx.installer.install_services(ctx)
    assert take_calls(ctx) == [QUERY, (*CREATE, str(xml_path), "/F")]

    ctx.undo_step("init.service")
    assert take_calls(ctx) == [("schtasks", "/Delete", "/TN", "halton-meter", "/F")]
    assert fake.task is None
    assert not xml_path.exists() and not (ctx.paths.home / "serve-task.py").exists()


def test_windows_start_stop_and_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[Any] = []
    monkeypatch.setattr(windows, "wait_until_up", lambda paths: waited.append(paths))
    fake = FakeWindows()
    ctx = win(tmp_path, fake)
    ctx.installer.install_services(ctx)
    take_calls(ctx)

    ctx.installer.start(ctx)
    assert take_calls(ctx) == [QUERY, ("schtasks", "/Run", "/TN", "halton-meter")]
    assert waited == [ctx.paths]
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running) == (True, True)
    take_calls(ctx)

    ctx.installer.stop(ctx)
    assert take_calls(ctx) == [QUERY, ("schtasks", "/End", "/TN", "halton-meter")]
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.detail) == (True, False, "Task Scheduler task halton-meter Ready")
    take_calls(ctx)

    ctx.installer.stop(ctx)  # not running: only the query
    assert take_calls(ctx) == [QUERY]

    fake.task = None
    state = ctx.installer.service_state(ctx)
    assert (state.installed, state.running, state.fix) == (False, False, "halton-meter init")
    with pytest.raises(HaltonError, match="not registered"):
        ctx.installer.start(ctx)


def test_windows_status_in_another_language_falls_back_to_the_port(tmp_path: Path) -> None:
    fake = FakeWindows(task=b"x", task_status="Wird ausgeführt")
    ctx = win(tmp_path, fake)
    assert ctx.installer.service_state(ctx).running is False  # no runtime.json: nothing answers
    assert windows.parse_task_status('"\\halton-meter","N/A","Running"\r\n') == "Running"


# ==================================================================================================
# Windows: trust
# ==================================================================================================


def test_windows_trust_adds_the_ca_to_the_user_root_store(tmp_path: Path) -> None:
    fake = FakeWindows()
    ctx = win(tmp_path, fake)
    ensure_ca(ctx.paths)
    sha1 = sha1_of(ctx.paths.ca_cert)
    ctx.current_step = "init.os-trust"
    assert ctx.installer.trust_ca(ctx) is True
    assert take_calls(ctx) == [
        ("certutil", "-user", "-store", "Root", sha1),
        ("certutil", "-user", "-addstore", "Root", str(ctx.paths.ca_cert)),
    ]
    assert recorded_undo(ctx) == [[["certutil", "-user", "-delstore", "Root", sha1]]]
    assert fake.root_store == {sha1}
    ctx.undo_step("init.os-trust")
    assert fake.root_store == set()


def test_windows_trust_non_interactive_and_already_trusted(tmp_path: Path) -> None:
    fake = FakeWindows()
    ctx = win(tmp_path, fake, non_interactive=True)
    ensure_ca(ctx.paths)
    sha1 = sha1_of(ctx.paths.ca_cert)
    assert ctx.installer.trust_ca(ctx) is False
    assert take_calls(ctx) == [("certutil", "-user", "-store", "Root", sha1)]
    assert ctx.notes[-1].endswith(f"run it yourself: certutil -user -addstore Root {ctx.paths.ca_cert}")
    fake.root_store.add(sha1)
    assert ctx.installer.trust_ca(ctx) is True
    assert take_calls(ctx) == [("certutil", "-user", "-store", "Root", sha1)]
    assert recorded_undo(ctx) == []


def test_windows_trust_declined_fails_clearly(tmp_path: Path) -> None:
    ctx = win(tmp_path, FakeWindows(decline_root=True))
    ensure_ca(ctx.paths)
    with pytest.raises(HaltonError, match="did not add the meter's CA.*ERROR_CANCELLED"):
        ctx.installer.trust_ca(ctx)
    assert recorded_undo(ctx) == []


# ==================================================================================================
# Windows: environment and per-user proxy (apps mode)
# ==================================================================================================

ENV = r"HKCU\Environment"
INET = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Internet Settings"
VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
             "NODE_EXTRA_CA_CERTS")


def test_windows_persist_env_commands_on_a_clean_profile(tmp_path: Path) -> None:
    fake = FakeWindows()
    fake.set(ENV, "Path", "REG_EXPAND_SZ", r"%USERPROFILE%\AppData\Local\Microsoft\WindowsApps;")
    before = fake.os_state()
    ctx = win(tmp_path, fake)
    ctx.current_step = "init.environment"
    env = client_env(ctx)
    ctx.installer.persist_env(ctx, env)
    proxy = f"http://127.0.0.1:{EDGE_PORT}"
    bundle = str(ctx.paths.client_bundle)
    values = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "localhost,127.0.0.1,::1",
              "SSL_CERT_FILE": bundle, "REQUESTS_CA_BUNDLE": bundle, "CURL_CA_BUNDLE": bundle,
              "NODE_EXTRA_CA_CERTS": bundle}
    assert take_calls(ctx) == [
        *[("reg", "query", ENV, "/v", name) for name in VARIABLES],
        *[("reg", "query", INET, "/v", name) for name in ("ProxyEnable", "ProxyServer", "ProxyOverride",
                                                          "AutoConfigURL")],
        *[("reg", "add", ENV, "/v", name, "/t", "REG_SZ", "/d", values[name], "/f") for name in VARIABLES],
        ("reg", "add", INET, "/v", "ProxyEnable", "/t", "REG_DWORD", "/d", "1", "/f"),
        ("reg", "add", INET, "/v", "ProxyServer", "/t", "REG_SZ", "/d", f"127.0.0.1:{EDGE_PORT}", "/f"),
        ("reg", "add", INET, "/v", "ProxyOverride", "/t", "REG_SZ", "/d", "<local>", "/f"),
        tuple(windows.NOTIFY),
    ]
    # The lowercase duplicates are the same values on Windows: never written twice.
    assert "https_proxy" not in str(calls(ctx)) and "no_proxy" not in str(calls(ctx))
    assert fake.notified == 1
    assert fake.registry[INET]["proxyenable"] == ("ProxyEnable", "REG_DWORD", "0x1")

    undo = recorded_undo(ctx)
    assert undo[0] == [["reg", "delete", ENV, "/v", "HTTPS_PROXY", "/f"], list(windows.NOTIFY)]
    assert all(len(u) == 1 and u[0][:2] == ["reg", "delete"] for u in undo[1:])

    # Again: every value is right, so only the queries run (and nobody is notified).
    changes = len(ctx.state.changes)
    ctx.installer.persist_env(ctx, env)
    assert all(argv[:2] == ("reg", "query") for argv in take_calls(ctx))
    assert len(ctx.state.changes) == changes and fake.notified == 1

    expected_undo = reversed_undo_commands(ctx)
    ctx.undo_step("init.environment")
    assert take_calls(ctx) == expected_undo
    assert expected_undo[-1] == tuple(windows.NOTIFY)  # once, after every value is back
    assert fake.os_state() == before


def test_windows_persist_env_restores_previous_values_byte_for_byte(tmp_path: Path) -> None:
    fake = FakeWindows()
    fake.set(ENV, "HTTPS_PROXY", "REG_EXPAND_SZ", "%CORP_PROXY%")
    fake.set(ENV, "no_proxy", "REG_SZ", "*.corp.example")
    fake.set(INET, "ProxyEnable", "REG_DWORD", "0x0")
    fake.set(INET, "ProxyServer", "REG_SZ", "proxy.corp.example:8080")
    fake.set(INET, "ProxyOverride", "REG_SZ", "*.corp.example;10.*")
    fake.set(INET, "AutoConfigURL", "REG_SZ", "http://wpad.corp.example/proxy.pac")
    before = fake.os_state()
    ctx = win(tmp_path, fake)
    ctx.current_step = "init.environment"
    ctx.installer.persist_env(ctx, client_env(ctx))
    assert fake.registry[INET]["proxyoverride"][2] == "*.corp.example;10.*;<local>"
    assert fake.registry[ENV]["no_proxy"] == ("no_proxy", "REG_SZ", "localhost,127.0.0.1,::1")
    undo = {u[0][4]: u[0] for u in recorded_undo(ctx)}
    assert undo["HTTPS_PROXY"] == ["reg", "add", ENV, "/v", "HTTPS_PROXY", "/t", "REG_EXPAND_SZ", "/d", "%CORP_PROXY%", "/f"]
    assert undo["NO_PROXY"] == ["reg", "add", ENV, "/v", "NO_PROXY", "/t", "REG_SZ", "/d", "*.corp.example", "/f"]
    assert undo["ProxyEnable"] == ["reg", "add", INET, "/v", "ProxyEnable", "/t", "REG_DWORD", "/d", "0", "/f"]
    assert undo["ProxyServer"][-3:] == ["/d", "proxy.corp.example:8080", "/f"]
    assert any("AutoConfigURL" in line for line in ctx.reported)  # type: ignore[attr-defined]

    ctx.undo_step("init.environment")
    assert fake.os_state() == before


def test_windows_full_mode_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    ctx = win(tmp_path, FakeWindows(), mode="full")
    with pytest.raises(UnsupportedOnPlatform) as info:
        ctx.installer.set_system_proxy(ctx, EDGE_PORT)
    assert "\n" not in info.value.message
    assert info.value.message.startswith("a machine-wide proxy (--full) is not supported on Windows; --apps")
    assert calls(ctx) == []


def test_windows_notification_script_is_what_the_encoded_command_carries() -> None:
    encoded = windows.NOTIFY[windows.NOTIFY.index("-EncodedCommand") + 1]
    script = base64.b64decode(encoded).decode("utf-16-le")
    assert script == windows.NOTIFY_SCRIPT
    assert "SendMessageTimeout([IntPtr]0xffff, 0x1A" in script and "'Environment'" in script
    assert "InternetSetOption([IntPtr]::Zero, 39" in script and "InternetSetOption([IntPtr]::Zero, 37" in script


def test_reg_query_parsing() -> None:
    text = ("\r\nHKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings\r\n"
            "    ProxyEnable    REG_DWORD    0x1\r\n\r\n")
    assert windows.parse_reg_query(text, "ProxyEnable") == windows.RegValue("REG_DWORD", "1")
    text = "\nHKEY_CURRENT_USER\\Environment\n    SSL_CERT_FILE    REG_SZ    C:\\Users\\Ada Lovelace\\ca  x.pem\n"
    assert windows.parse_reg_query(text, "ssl_cert_file") == windows.RegValue("REG_SZ",
                                                                               "C:\\Users\\Ada Lovelace\\ca  x.pem")
    assert windows.parse_reg_query("\nHKEY_CURRENT_USER\\Environment\n    EMPTY    REG_SZ    \n", "EMPTY") == \
        windows.RegValue("REG_SZ", "")


# ==================================================================================================
# Windows: a whole init, its rollback, and uninstall
# ==================================================================================================


def test_windows_rollback_and_uninstall_restore_everything(tmp_path: Path) -> None:
    fake = FakeWindows()
    fake.set(INET, "ProxyEnable", "REG_DWORD", "0x0")
    fake.set(ENV, "HTTP_PROXY", "REG_SZ", "http://old:8080")
    before = fake.os_state()

    # A failing later step rolls back exactly this run's changes, newest first.
    ctx = win(tmp_path, fake)
    applied = steps(INSTALLER_CALLS)[:2]
    for step in applied:
        ctx.current_step = step.id
        step.apply(ctx)
    expected = reversed_undo_commands(ctx)
    assert expected[-1] == ("schtasks", "/Delete", "/TN", "halton-meter", "/F")
    take_calls(ctx)
    rollback(ctx, applied)
    assert take_calls(ctx) == expected
    assert fake.os_state() == before
    assert not (ctx.paths.home / "serve-task.xml").exists()

    # run_init with a failing step does the same.
    ctx = win(tmp_path, fake)
    result = run_init(ctx, steps(INSTALLER_CALLS, fail_after=True), on_step=lambda outcome: None)
    assert result.failed is not None and result.rolled_back > 0
    assert fake.os_state() == before and ctx.state.changes == []

    # A successful init, then uninstall from the saved state.
    ctx = win(tmp_path, fake)
    chosen = steps(INSTALLER_CALLS)
    assert run_init(ctx, chosen, on_step=lambda outcome: None).failed is None
    assert fake.task is not None
    ctx.state.save(tmp_path / "system_state.json")
    later = win(tmp_path, fake)
    later.state = SystemState.load(tmp_path / "system_state.json")
    expected = reversed_undo_commands(later)
    undo_all(later, {s.id: s for s in chosen})
    assert take_calls(later) == expected
    assert fake.os_state() == before


# ==================================================================================================
# Every platform and mode: whatever init changes, uninstall undoes
# ==================================================================================================


class Observed:
    """Wraps a fake OS's command runner: which commands changed the simulated OS (its `os_state`)."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.changed: list[tuple[str, ...]] = []
        self.failed: list[tuple[str, ...]] = []
        runner = fake.runner()
        runner.script = {name: self._watch(answer) for name, answer in runner.script.items()}
        self.runner = runner

    def _watch(self, answer: Any) -> Any:
        def run(argv: tuple[str, ...]) -> CommandResult:
            before = self.fake.os_state()
            result = answer(argv)
            if self.fake.os_state() != before:
                self.changed.append(argv)
            if not result.ok:
                self.failed.append(argv)
            return result
        return run


PLATFORM_MODES = [("macos", "env"), ("macos", "apps"), ("macos", "full"), ("windows", "env"), ("windows", "apps")]


@pytest.mark.parametrize("system,mode", PLATFORM_MODES, ids=[f"{s}-{m}" for s, m in PLATFORM_MODES])
def test_every_change_init_makes_is_undone_by_uninstall(tmp_path: Path, system: str, mode: str) -> None:
    """The OS trust, the service, the environment and (macOS --full) the system proxy, in each mode: every
    command that changed the simulated OS during init has its undo recorded, and uninstall — from the saved
    state, as a later process runs it — leaves the OS exactly as it was, with no command failing."""
    fake: Any = office_mac() if system == "macos" else FakeWindows()
    if system == "macos":
        fake.env = {"HTTPS_PROXY": "http://corp:3128"}
    else:
        fake.set(ENV, "HTTP_PROXY", "REG_SZ", "http://old:8080")
    before = fake.os_state()
    make = mac if system == "macos" else win
    observed = Observed(fake)
    ctx = make(tmp_path, fake, mode=mode)
    ctx.runner = observed.runner
    ensure_ca(ctx.paths)
    trust = InitStep("init.os-trust", "OS trust", lambda c: False, lambda c: c.installer.trust_ca(c))
    chosen = [trust, *steps(INSTALLER_CALLS)]
    result = run_init(ctx, chosen, on_step=lambda outcome: None)
    assert result.failed is None, result.failed
    changed_by_init = list(observed.changed)
    assert changed_by_init, "init changed nothing: the test would prove nothing"
    assert fake.os_state() != before
    # each command that changed the OS belongs to a recorded change with an undo
    undo_count = sum(len(undo) for undo in recorded_undo(ctx))
    assert undo_count >= 1 and all(undo for undo in recorded_undo(ctx))
    ctx.state.save(tmp_path / "system_state.json")

    later_observed = Observed(fake)
    later = make(tmp_path, fake, mode=mode)
    later.runner = later_observed.runner
    later.state = SystemState.load(tmp_path / "system_state.json")
    expected_undo = reversed_undo_commands(later)
    undo_all(later, {s.id: s for s in chosen})
    assert fake.os_state() == before, (changed_by_init, later_observed.changed)
    assert later.state.changes == []
    ran = calls(later)
    assert [argv for argv in ran if argv in expected_undo] == expected_undo  # every recorded undo ran, in order
    assert later_observed.changed, "uninstall changed nothing back"
    assert all(argv in ran for argv in later_observed.changed)


def test_windows_apps_mode_says_how_to_route_winhttp_programs_and_runs_nothing_for_them(tmp_path: Path) -> None:
    """WinHTTP's proxy is machine-wide and needs an administrator: init prints the netsh line, never runs it."""
    fake = FakeWindows()
    ctx = win(tmp_path, fake)
    ctx.installer.persist_env(ctx, {"HTTPS_PROXY": f"http://127.0.0.1:{EDGE_PORT}"})
    advice = [line for line in ctx.reported if "netsh winhttp import proxy source=ie" in line]  # type: ignore[attr-defined]
    assert advice == [windows.WINHTTP_ADVICE] and "netsh winhttp reset proxy" in advice[0]
    assert not any(argv[0] == "netsh" for argv in calls(ctx))
