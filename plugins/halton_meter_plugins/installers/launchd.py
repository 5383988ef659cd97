"""launchd (macOS): everything per user, nothing under /Library.

* Service: a LaunchAgent (`~/Library/LaunchAgents/com.halton-meter.serve.plist`) in the user's GUI domain
  runs the supervisor at login and restarts it after a crash, never after a clean stop.
* Trust: the CA goes into the login keychain with a user trust setting (`security add-trusted-cert`).
  macOS confirms that change with a password dialog, so `--non-interactive` never runs it (it would wait
  for a dialog nobody answers): the step is skipped and its note gives the exact command to run by hand.
* Apps mode: `launchctl setenv` gives apps started from the Dock, Spotlight or Finder the proxy and CA
  variables now, and a second, one-shot agent sets them again at every login (launchd forgets them at
  reboot).
* Full mode: every enabled network service gets the edge as its HTTP and HTTPS proxy (`networksetup`);
  what each service had before (server, port, on/off, bypass list) is recorded, and uninstall puts exactly
  that back.

Every OS command goes through the command-runner seam; every change through the init context.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import re
import shlex
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halton_meter.plugin import (
    CA_COMMON_NAME,
    CommandFailed,
    HaltonError,
    InitContext,
    Paths,
    PlatformInfo,
    ServiceState,
    hookimpl,
    serve_argv,
    service_env,
    wait_until_running,
)

LABEL = "com.halton-meter.serve"
ENV_LABEL = "com.halton-meter.env"
LOGIN_KEYCHAIN = Path("Library") / "Keychains" / "login.keychain-db"
LOOPBACK = "127.0.0.1"
BYPASS = ("localhost", "127.0.0.1", "::1")
STOP_TIMEOUT = 40.0
TRUST_TIMEOUT = 300.0
"""How long the password dialog of `security add-trusted-cert` may stay open."""


# --------------------------------------------------------------------------------------------------
# The property lists (pure, deterministic: compared byte for byte with golden files)
# --------------------------------------------------------------------------------------------------


def agent_plist(paths: Paths, argv: Sequence[str] | None = None) -> bytes:
    """The LaunchAgent that runs the supervisor (`halton-meter serve`)."""
    out = str(paths.logs / "serve.out")
    job: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": list(argv if argv is not None else serve_argv()),
        "EnvironmentVariables": service_env(paths),
        "WorkingDirectory": str(paths.home),
        "RunAtLoad": True,
        # Restart after a crash (non-zero exit or a signal), not after a clean stop (`halton-meter stop`
        # sends SIGTERM; the supervisor drains and exits 0). launchd has no equivalent of systemd's
        # RestartPreventExitStatus, so a configuration error (exit 2) is retried at the throttle interval.
        "KeepAlive": {"SuccessfulExit": False},
        # launchd's backoff floor: it never spawns the job again sooner than this many seconds after its
        # last start (10 s is launchd's default). A crash loop costs one start every 10 s, never a busy
        # loop; stated explicitly so the restart cadence is visible here.
        "ThrottleInterval": 10,
        # SIGTERM, then SIGKILL after this long when launchd itself stops the job (bootout, logout): the
        # supervisor's drain (shutdown_grace_seconds, 10 s by default) fits well inside it.
        "ExitTimeOut": 30,
        # Every LLM call of the user's tools passes through this process while they wait for it. launchd
        # throttles CPU and I/O of Background jobs (and lightly of unspecified/Standard ones), and marks a
        # Background process's sockets as background traffic, which would add latency to every call;
        # Interactive runs it with the same limits as an app.
        "ProcessType": "Interactive",
        "StandardOutPath": out,
        "StandardErrorPath": out,
        "Umask": 0o077,  # 63: logs and databases the supervisor creates are private to the user
    }
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True)


def env_agent_plist(env: Mapping[str, str]) -> bytes:
    """The one-shot LaunchAgent that repeats `launchctl setenv` at every login (the values are forgotten at
    reboot). One `launchctl setenv` per variable, through /bin/sh: one invocation sets one variable."""
    script = "\n".join(shlex.join(["/bin/launchctl", "setenv", key, value]) for key, value in env.items())
    job: dict[str, Any] = {
        "Label": ENV_LABEL,
        "ProgramArguments": ["/bin/sh", "-c", script],
        "RunAtLoad": True,  # runs once at login and exits; no KeepAlive
        "ProcessType": "Background",
    }
    return plistlib.dumps(job, fmt=plistlib.FMT_XML, sort_keys=True)


# --------------------------------------------------------------------------------------------------
# Parsing what launchctl, security and networksetup print
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    state: str
    pid: int | None
    last_exit: str | None

    @property
    def running(self) -> bool:
        return self.pid is not None or self.state == "running"


def parse_print(text: str) -> Job:
    """`launchctl print gui/<uid>/<label>`: top-level keys are indented by exactly one tab."""
    state = re.search(r"^\tstate = (.+)$", text, re.M)
    pid = re.search(r"^\tpid = (\d+)$", text, re.M)
    last = re.search(r"^\tlast exit code = (.+)$", text, re.M)
    return Job(state.group(1).strip() if state else "unknown", int(pid.group(1)) if pid else None,
               last.group(1).strip() if last else None)


@dataclass(frozen=True)
class Proxy:
    enabled: bool
    server: str
    port: int
    authenticated: bool

    def points_at(self, port: int) -> bool:
        return self.enabled and self.server == LOOPBACK and self.port == port


def parse_proxy(text: str) -> Proxy:
    """`networksetup -getwebproxy|-getsecurewebproxy <service>`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        port = int(fields.get("Port", "0") or "0")
    except ValueError:
        port = 0
    return Proxy(fields.get("Enabled", "No") == "Yes", fields.get("Server", ""), port,
                 fields.get("Authenticated Proxy Enabled", "0") not in ("0", ""))


def parse_bypass(text: str) -> list[str]:
    """`networksetup -getproxybypassdomains <service>`: one domain a line, or a sentence when there is none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("There aren't any") for line in lines):
        return []
    return lines


def parse_services(text: str) -> list[str]:
    """`networksetup -listallnetworkservices`: a header line, then one service a line; `*` marks a disabled one."""
    return [line for line in text.splitlines()[1:] if line.strip() and not line.startswith("*")]


def cert_sha1(path: Path) -> str:
    """The SHA-1 of the certificate's DER: how `security` names one certificate exactly (`-Z`)."""
    der = ssl.PEM_cert_to_DER_cert(path.read_text().strip())
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def keychain_hashes(text: str) -> set[str]:
    """`security find-certificate -a -Z …`: the `SHA-1 hash:` line of each certificate found."""
    return {m.upper() for m in re.findall(r"^SHA-1 hash: ([0-9A-Fa-f]{40})$", text, re.M)}


# --------------------------------------------------------------------------------------------------
# The installer
# --------------------------------------------------------------------------------------------------


class LaunchdInstaller:
    id = "installer.launchd"
    kind = "launchd"
    supports_system_proxy = True
    poll_interval = 0.2

    def __init__(self, platform: PlatformInfo, uid: int | None = None) -> None:
        self.platform = platform
        self._uid = uid

    def describe(self) -> str:
        return f"launchd user agent {LABEL}"

    # ---- names --------------------------------------------------------------------------------------

    @property
    def uid(self) -> int:
        return self._uid if self._uid is not None else os.getuid()

    @property
    def domain(self) -> str:
        return f"gui/{self.uid}"

    @property
    def target(self) -> str:
        return f"{self.domain}/{LABEL}"

    def agent_path(self, ctx: InitContext) -> Path:
        return ctx.user_home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def env_agent_path(self, ctx: InitContext) -> Path:
        return ctx.user_home / "Library" / "LaunchAgents" / f"{ENV_LABEL}.plist"

    def keychain(self, ctx: InitContext) -> Path:
        return ctx.user_home / LOGIN_KEYCHAIN

    # ---- service ------------------------------------------------------------------------------------

    def _job(self, ctx: InitContext) -> Job | None:
        result = ctx.runner.run(["launchctl", "print", self.target], check=False, timeout=5)
        return parse_print(result.stdout) if result.ok else None

    def _bootout_recorded(self, ctx: InitContext) -> bool:
        undo = [["launchctl", "bootout", self.target]]
        return any(c.kind == "command" and c.undo == undo for c in ctx.state.changes)

    def install_services(self, ctx: InitContext) -> None:
        path = self.agent_path(ctx)
        changed = ctx.write_file(path, agent_plist(ctx.paths), mode=0o644)
        loaded = self._job(ctx) is not None
        if loaded and not changed and self._bootout_recorded(ctx):
            return  # loaded from exactly this definition, and uninstall knows to unload it
        if loaded:
            # launchd keeps the definition it loaded; a changed plist is read again only by a new bootstrap
            ctx.runner.run(["launchctl", "bootout", self.target], check=False, timeout=60)
        try:
            ctx.run(["launchctl", "bootstrap", self.domain, str(path)],
                    undo=[["launchctl", "bootout", self.target]], description=f"load the launchd agent {LABEL}")
        except CommandFailed as exc:
            raise HaltonError(f"{exc.message}; LaunchAgents load in a logged-in desktop session: run "
                              "`halton-meter init` from Terminal in that session, not over ssh") from None
        ctx.notes.append(f"launchd agent {LABEL} ({path}); starts at login, restarts after a crash")

    def start(self, ctx: InitContext) -> None:
        if self._job(ctx) is None:
            path = self.agent_path(ctx)
            if not path.exists():
                raise HaltonError(f"the launchd agent is not installed ({path} is missing); run `halton-meter init`")
            ctx.runner.run(["launchctl", "bootstrap", self.domain, str(path)], timeout=60)
        ctx.runner.run(["launchctl", "kickstart", self.target], timeout=30)
        wait_until_running(ctx.paths)

    def stop(self, ctx: InitContext) -> None:
        """SIGTERM through launchd (the supervisor drains and exits 0, so KeepAlive leaves it stopped until
        the next login or `start`), then wait for it to be gone; SIGKILL only after STOP_TIMEOUT."""
        job = self._job(ctx)
        if job is None or not job.running:
            return
        ctx.runner.run(["launchctl", "kill", "SIGTERM", self.target], check=False, timeout=10)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            job = self._job(ctx)
            if job is None or not job.running:
                return
            time.sleep(self.poll_interval)
        ctx.runner.run(["launchctl", "kill", "SIGKILL", self.target], check=False, timeout=10)

    def service_state(self, ctx: InitContext) -> ServiceState:
        job = self._job(ctx)
        path = self.agent_path(ctx)
        if job is None:
            if path.exists():
                return ServiceState(False, False, f"launchd agent {LABEL} not loaded (it loads at the next login)",
                                    fix="halton-meter start")
            return ServiceState(False, False, f"launchd agent {LABEL} not installed", fix="halton-meter init")
        if not path.exists():
            return ServiceState(False, job.running, f"launchd agent {LABEL} is loaded but {path} is gone, so it "
                                "will not start at the next login", fix="halton-meter init")
        if job.running:
            pid = f", pid {job.pid}" if job.pid is not None else ""
            return ServiceState(True, True, f"launchd agent {LABEL} running{pid}")
        last = f" (last exit code {job.last_exit})" if job.last_exit else ""
        return ServiceState(True, False, f"launchd agent {LABEL} loaded, not running{last}",
                            fix="halton-meter start  (why it stopped: halton-meter logs)")

    # ---- trust --------------------------------------------------------------------------------------

    def trust_ca(self, ctx: InitContext) -> bool:
        cert = str(ctx.paths.ca_cert)
        keychain = str(self.keychain(ctx))
        if ctx.runner.run(["security", "verify-cert", "-c", cert], check=False, timeout=15).ok:
            ctx.notes.append("macOS already trusts the meter's CA")
            return True
        add = ["security", "add-trusted-cert", "-r", "trustRoot", "-k", keychain, cert]
        if ctx.options.non_interactive:
            ctx.notes.append("not added to the login keychain: macOS confirms it with a password dialog, which "
                             f"--non-interactive does not wait for; run it yourself: {shlex.join(add)}")
            return False
        sha1 = cert_sha1(ctx.paths.ca_cert)
        found = ctx.runner.run(["security", "find-certificate", "-a", "-Z", "-c", CA_COMMON_NAME, keychain],
                               check=False, timeout=15)
        in_keychain = sha1 in keychain_hashes(found.stdout)
        # Undo exactly what this adds: the trust setting, and the certificate too unless it was there before.
        undo = ([["security", "remove-trusted-cert", cert]] if in_keychain
                else [["security", "delete-certificate", "-t", "-Z", sha1, keychain]])
        ctx.report("macOS asks for your password to trust the meter's CA in your login keychain")
        try:
            ctx.run(add, undo=undo, description="trust the CA in the login keychain", timeout=TRUST_TIMEOUT)
        except CommandFailed as exc:
            if not in_keychain:  # add-trusted-cert imports before it asks: take the untrusted copy out again
                ctx.runner.run(["security", "delete-certificate", "-Z", sha1, keychain], check=False, timeout=15)
            raise HaltonError(f"macOS did not trust the meter's CA ({exc.message}); run `halton-meter init` "
                              "again and confirm the password dialog") from None
        ctx.notes.append(f"CA trusted in the login keychain ({CA_COMMON_NAME}, SHA-1 {sha1})")
        return True

    # ---- environment for apps (apps and full modes) -------------------------------------------------

    def persist_env(self, ctx: InitContext, env: Mapping[str, str]) -> None:
        ctx.write_file(self.env_agent_path(ctx), env_agent_plist(env), mode=0o644)
        for key, value in env.items():
            current = ctx.runner.run(["launchctl", "getenv", key], check=False, timeout=5)
            previous = current.stdout.rstrip("\n") if current.ok else ""
            if previous == value:
                continue
            undo = [["launchctl", "setenv", key, previous]] if previous else [["launchctl", "unsetenv", key]]
            ctx.run(["launchctl", "setenv", key, value], undo=undo, description=f"launchctl setenv {key}")

    # ---- system proxy (full mode) -------------------------------------------------------------------

    def set_system_proxy(self, ctx: InitContext, port: int) -> None:
        listed = ctx.runner.run(["networksetup", "-listallnetworkservices"], timeout=15)
        services = parse_services(listed.stdout)
        if not services:
            raise HaltonError("networksetup lists no enabled network service to point at the meter")
        # Read everything first, so a refusal below changes nothing.
        snapshots = []
        for service in services:
            secure = parse_proxy(ctx.runner.run(["networksetup", "-getsecurewebproxy", service], timeout=15).stdout)
            web = parse_proxy(ctx.runner.run(["networksetup", "-getwebproxy", service], timeout=15).stdout)
            bypass = parse_bypass(ctx.runner.run(["networksetup", "-getproxybypassdomains", service],
                                                 timeout=15).stdout)
            for what, proxy in (("HTTPS", secure), ("HTTP", web)):
                if proxy.authenticated and not proxy.points_at(port):
                    raise HaltonError(
                        f"{service} uses an authenticated {what} proxy ({proxy.server}:{proxy.port}); --full would "
                        "replace it and uninstall could not restore its password; use --apps instead")
            snapshots.append((service, secure, web, bypass))
        replaced = []
        for service, secure, web, bypass in snapshots:
            for setter, state, previous in (("-setsecurewebproxy", "-setsecurewebproxystate", secure),
                                            ("-setwebproxy", "-setwebproxystate", web)):
                if previous.points_at(port):
                    continue
                if previous.enabled and previous.server != LOOPBACK:
                    replaced.append(f"{previous.server}:{previous.port} ({service})")
                ctx.run(["networksetup", setter, service, LOOPBACK, str(port)],
                        undo=_restore_proxy(setter, state, service, previous),
                        description=f"{setter[4:]} of {service} → {LOOPBACK}:{port}")
            wanted = bypass + [d for d in BYPASS if d not in bypass]
            if wanted != bypass:
                ctx.run(["networksetup", "-setproxybypassdomains", service, *wanted],
                        undo=[["networksetup", "-setproxybypassdomains", service, *(bypass or ["Empty"])]],
                        description=f"proxy bypass list of {service}")
        note = f"system proxy {LOOPBACK}:{port} on {', '.join(services)}"
        if replaced:
            note += f"; replaced {', '.join(sorted(set(replaced)))} (restored by `halton-meter uninstall`)"
        ctx.notes.append(note)


def _restore_proxy(setter: str, state: str, service: str, previous: Proxy) -> list[list[str]]:
    """The commands that put one proxy setting back exactly: server and port (a setter also switches the
    proxy on and authentication off, which was off: authenticated proxies are refused), then off again if
    it was off. An empty server is put back as empty; if networksetup refused that, the proxy is still
    switched off by the second command (undo commands run without stopping at a failure)."""
    commands = [["networksetup", setter, service, previous.server, str(previous.port)]]
    if not previous.enabled:
        commands.append(["networksetup", state, service, "off"])
    return commands


@hookimpl
def halton_platform_installer(platform: PlatformInfo) -> LaunchdInstaller | None:
    if platform.system == "darwin":
        return LaunchdInstaller(platform)
    return None
