"""Windows: everything per user (HKCU, the user's Root certificate store, a user Task Scheduler task); no
administrator rights are ever asked for, and nothing is written under HKLM or Program Files.

* Service: the Task Scheduler task `halton-meter` starts the supervisor at the user's logon. A task cannot
  carry environment variables, so its action runs a small launcher, `serve-task.py` in the meter's home,
  which sets `service_env()` and runs `serve_argv()`'s module in its own process. It runs under
  `pythonw.exe` when the interpreter has one: no console window appears at logon, and none can be closed
  by mistake (a `.cmd` launcher would run in a visible console window).
* Trust: `certutil -user -addstore Root`. Windows asks the user to confirm a new root in a dialog, so
  `--non-interactive` never runs it (nobody would answer): the step is skipped and its note gives the exact
  command to run by hand.
* Apps mode: the variables go to `HKCU\\Environment` and the per-user WinINet proxy (`ProxyEnable`,
  `ProxyServer`, `ProxyOverride` under `HKCU\\…\\Internet Settings`) points at the edge; each value's
  previous content (or absence) is read first and restored exactly on uninstall. Running programs are then
  told (WM_SETTINGCHANGE "Environment", and WinINet's settings-changed/refresh options) through a short
  PowerShell P/Invoke passed with `-EncodedCommand`, so no quoting can go wrong. Programs built on WinHTTP
  read neither: init prints the `netsh winhttp import proxy source=ie` line that routes them (it needs an
  administrator and is machine-wide, so init never runs it).
* Full mode (a machine-wide proxy) is not offered.

Why this module is long: the Windows installer is one unit (task XML, its launcher, the registry and
certificate-store commands and their exact undo), tested command by command against a recorded runner;
splitting it would only scatter the commands that undo each other.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shlex
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from halton_meter.plugin import (
    SERVICE_NAME,
    START_TIMEOUT,
    CommandFailed,
    HaltonError,
    InitContext,
    Paths,
    PlatformInfo,
    ServiceState,
    UnsupportedOnPlatform,
    api_healthy,
    core_port,
    hookimpl,
    log_tail,
    port_answers,
    read_runtime,
    serve_argv,
    service_env,
)

TASK = SERVICE_NAME
LAUNCHER = "serve-task.py"
TASK_XML = "serve-task.xml"
ENVIRONMENT = r"HKCU\Environment"
INTERNET_SETTINGS = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Internet Settings"
LOOPBACK = "127.0.0.1"
LOCAL_BYPASS = "<local>"
STOP_TIMEOUT = 40.0
TRUST_TIMEOUT = 300.0
"""How long the confirmation dialog of `certutil -user -addstore Root` may stay open."""
NOT_RUNNING_STATES = {"Ready", "Disabled", "Queued", "Could not start", "Unknown"}
"""`schtasks /Query` statuses (English) that mean no instance runs; other languages fall back to the port."""

NOTIFY_SCRIPT = """\
$signature = @'
[DllImport("user32.dll", CharSet = CharSet.Unicode)]
public static extern IntPtr SendMessageTimeout(IntPtr hWnd, uint msg, UIntPtr wParam, string lParam,
    uint flags, uint timeout, out UIntPtr result);
[DllImport("wininet.dll")]
public static extern bool InternetSetOption(IntPtr hInternet, int option, IntPtr buffer, int length);
'@
$api = Add-Type -MemberDefinition $signature -Name Notify -Namespace HaltonMeter -PassThru
$result = [UIntPtr]::Zero
# HWND_BROADCAST, WM_SETTINGCHANGE "Environment", SMTO_ABORTIFHUNG, 5 s: Explorer and others re-read HKCU\\Environment
[void]$api::SendMessageTimeout([IntPtr]0xffff, 0x1A, [UIntPtr]::Zero, 'Environment', 2, 5000, [ref]$result)
# INTERNET_OPTION_SETTINGS_CHANGED (39), INTERNET_OPTION_REFRESH (37): WinINet re-reads the proxy settings
[void]$api::InternetSetOption([IntPtr]::Zero, 39, [IntPtr]::Zero, 0)
[void]$api::InternetSetOption([IntPtr]::Zero, 37, [IntPtr]::Zero, 0)
"""
NOTIFY = ["powershell", "-NoProfile", "-NonInteractive", "-EncodedCommand",
          base64.b64encode(NOTIFY_SCRIPT.encode("utf-16-le")).decode()]
"""Tell running programs that the user environment and the WinINet proxy changed."""


# --------------------------------------------------------------------------------------------------
# The launcher and the task definition (pure, deterministic: compared with golden files)
# --------------------------------------------------------------------------------------------------


def gui_interpreter(python: str) -> str:
    """`pythonw.exe` beside `python.exe` (same interpreter, no console window), when there is one."""
    path = Path(python)
    if path.name.lower() == "python.exe" and path.with_name("pythonw.exe").exists():
        return str(path.with_name("pythonw.exe"))
    return python


def launcher_script(paths: Paths, argv: Sequence[str] | None = None) -> str:
    """The file the task runs: sets the service environment, then runs the `-m` module of `argv`."""
    argv = list(argv if argv is not None else serve_argv())
    if argv[1:2] != ["-m"] or len(argv) < 3:
        raise HaltonError(f"cannot build the task launcher for {argv!r}: expected `python -m module …`")
    module, args = argv[2], argv[3:]
    lines = [
        "# Run at logon by the Task Scheduler task `halton-meter` (written by `halton-meter init`, removed by",
        "# `halton-meter uninstall`). A task cannot carry environment variables, so this sets them and then",
        "# runs the meter in this same process: ending the task ends the meter.",
        "import os",
        "import runpy",
        "import sys",
        "",
        "os.environ.update({",
        *(f"    {key!r}: {value!r}," for key, value in service_env(paths).items()),
        "})",
        "# Under pythonw there is no console: what would go there (a failure before logging starts) goes here.",
        f"os.makedirs({str(paths.logs)!r}, exist_ok=True)",
        f"sys.stdout = sys.stderr = open({str(paths.logs / 'serve.out')!r}, 'a', encoding='utf-8', buffering=1)",
        f"sys.argv = {[module, *args]!r}",
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
    ]
    return "\n".join(lines) + "\n"


def task_xml(paths: Paths, user: str, interpreter: str) -> str:
    """The task definition (Task Scheduler schema 1.2, Windows 7 and later), written as UTF-16 with CRLF (as
    Task Scheduler exports it) by `task_file_bytes`. Settings worth a word: no battery conditions (a laptop
    on battery still meters); no time limit (PT0S); Priority 5, normal (the default 7 is below normal, with
    low I/O priority, for a process every LLM call waits on); IgnoreNew (`schtasks /Run` while it runs
    starts nothing); InteractiveToken and LeastPrivilege (runs only in the user's own session, never
    elevated, and needs no stored password)."""
    launcher = subprocess.list2cmdline([str(paths.home / LAUNCHER)])
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>Halton Meter: meters the LLM API calls of this user's tools (halton-meter serve)</Description>
    <URI>\\{TASK}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{escape(user)}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{escape(user)}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>false</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>5</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>10</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(subprocess.list2cmdline([interpreter]))}</Command>
      <Arguments>{escape(launcher)}</Arguments>
      <WorkingDirectory>{escape(str(paths.home))}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
"""


def task_file_bytes(xml: str) -> bytes:
    """UTF-16 little-endian with a byte-order mark and CRLF line ends: what the encoding declaration says."""
    return b"\xff\xfe" + xml.replace("\n", "\r\n").encode("utf-16-le")


# --------------------------------------------------------------------------------------------------
# Registry, schtasks and certutil helpers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegValue:
    type: str
    data: str


def parse_reg_query(text: str, name: str) -> RegValue | None:
    """One value from `reg query <key> /v <name>` (`    NAME    REG_TYPE    DATA`); DWORDs as decimal."""
    for line in text.splitlines():
        m = re.match(r"^ {4}(.+?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$", line.rstrip("\r"))
        if m and m.group(1).lower() == name.lower():
            kind, data = m.group(2), m.group(3) or ""
            if kind in ("REG_DWORD", "REG_QWORD") and data.lower().startswith("0x"):
                data = str(int(data, 16))
            return RegValue(kind, data)
    return None


def reg_add(key: str, name: str, value: RegValue) -> list[str]:
    return ["reg", "add", key, "/v", name, "/t", value.type, "/d", value.data, "/f"]


def reg_delete(key: str, name: str) -> list[str]:
    return ["reg", "delete", key, "/v", name, "/f"]


def parse_task_status(text: str) -> str | None:
    """`schtasks /Query /TN <task> /FO CSV /NH`: `"\\name","next run","status"` → status."""
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 3:
            return row[-1].strip()
    return None


def cert_sha1(path: Path) -> str:
    """The certificate's SHA-1 thumbprint: how certutil names exactly this certificate."""
    der = ssl.PEM_cert_to_DER_cert(path.read_text().strip())
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def wait_until_up(paths: Paths, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Block until edge, core and API answer. Not `services.wait_until_running`: its liveness probe sends
    signal 0 with os.kill, which on Windows terminates the process instead of testing it."""
    deadline = time.monotonic() + timeout
    runtime = None
    while time.monotonic() < deadline:
        runtime = read_runtime(paths)
        if runtime is not None and port_answers(runtime["edge_port"]):
            port = core_port(paths)
            if port is not None and port_answers(port) and api_healthy(runtime["api_port"]):
                return runtime
        time.sleep(0.1)
    tail = log_tail(paths)
    raise HaltonError(f"the meter did not come up within {timeout:g} s; see `halton-meter logs`"
                      + (f"\n{tail}" if tail else ""))


def edge_answers(paths: Paths) -> bool:
    runtime = read_runtime(paths)
    return runtime is not None and port_answers(runtime["edge_port"])


# --------------------------------------------------------------------------------------------------
# The installer
# --------------------------------------------------------------------------------------------------


WINHTTP_ADVICE = ("programs built on WinHTTP follow neither HTTPS_PROXY nor your per-user proxy; to meter them "
                  "too, run `netsh winhttp import proxy source=ie` in an administrator prompt (machine-wide, so "
                  "init never does it; `netsh winhttp reset proxy` undoes it)")
"""WinHTTP (some Windows services and command-line tools) has its own machine-wide proxy setting, which needs
an administrator: init only says how to copy the per-user proxy into it."""


class WindowsInstaller:
    id = "installer.windows"
    kind = "task-scheduler"
    supports_system_proxy = False
    poll_interval = 0.2

    def __init__(self, platform: PlatformInfo, user: str | None = None, interpreter: str | None = None) -> None:
        self.platform = platform
        self._user = user
        self._interpreter = interpreter

    def describe(self) -> str:
        return f"Task Scheduler logon task {TASK} (per user)"

    @property
    def user(self) -> str:
        if self._user:
            return self._user
        name, domain = os.environ.get("USERNAME", ""), os.environ.get("USERDOMAIN", "")
        if not name:
            raise HaltonError("USERNAME is not set, so the logon task cannot name its user")
        return f"{domain}\\{name}" if domain else name

    @property
    def interpreter(self) -> str:
        return self._interpreter or gui_interpreter(serve_argv()[0])

    # ---- service ------------------------------------------------------------------------------------

    def _status(self, ctx: InitContext) -> str | None:
        """The task's status, `""` when it exists but the status could not be read, None when there is none."""
        result = ctx.runner.run(["schtasks", "/Query", "/TN", TASK, "/FO", "CSV", "/NH"], check=False, timeout=10)
        if not result.ok:
            return None
        return parse_task_status(result.stdout) or ""

    def _running(self, ctx: InitContext, status: str | None) -> bool:
        if status is None:
            return False
        if status == "Running":
            return True
        return status not in NOT_RUNNING_STATES and edge_answers(ctx.paths)  # a status in another language

    def _delete_recorded(self, ctx: InitContext) -> bool:
        undo = [["schtasks", "/Delete", "/TN", TASK, "/F"]]
        return any(c.kind == "command" and c.undo == undo for c in ctx.state.changes)

    def install_services(self, ctx: InitContext) -> None:
        home = ctx.paths.home
        changed = ctx.write_file(home / LAUNCHER, launcher_script(ctx.paths), mode=0o644)
        xml_path = home / TASK_XML
        changed = ctx.write_file(xml_path, task_file_bytes(task_xml(ctx.paths, self.user, self.interpreter)),
                                 mode=0o644) or changed
        if not changed and self._status(ctx) is not None and self._delete_recorded(ctx):
            return  # registered from exactly this definition, and uninstall knows to delete it
        ctx.run(["schtasks", "/Create", "/TN", TASK, "/XML", str(xml_path), "/F"],
                undo=[["schtasks", "/Delete", "/TN", TASK, "/F"]], description=f"register the logon task {TASK}")
        note = f"Task Scheduler task {TASK}: starts the meter at logon"
        if not self.interpreter.lower().endswith("pythonw.exe"):
            note += " (in a console window: this Python has no pythonw.exe; closing that window stops the meter)"
        ctx.notes.append(note)

    def start(self, ctx: InitContext) -> None:
        if self._status(ctx) is None:
            raise HaltonError(f"the logon task {TASK} is not registered; run `halton-meter init`")
        ctx.runner.run(["schtasks", "/Run", "/TN", TASK], timeout=30)
        wait_until_up(ctx.paths)

    def stop(self, ctx: InitContext) -> None:
        """`schtasks /End` (it terminates the task's process; there is no gentler way to ask a task to stop),
        then wait for the edge port to fall silent."""
        status = self._status(ctx)
        if not self._running(ctx, status):
            return
        ctx.runner.run(["schtasks", "/End", "/TN", TASK], check=False, timeout=30)
        deadline = time.monotonic() + STOP_TIMEOUT
        while edge_answers(ctx.paths) and time.monotonic() < deadline:
            time.sleep(self.poll_interval)

    def service_state(self, ctx: InitContext) -> ServiceState:
        status = self._status(ctx)
        if status is None:
            return ServiceState(False, False, f"Task Scheduler task {TASK} not registered", fix="halton-meter init")
        if self._running(ctx, status):
            return ServiceState(True, True, f"Task Scheduler task {TASK} running")
        return ServiceState(True, False, f"Task Scheduler task {TASK} {status or 'not running'}",
                            fix="halton-meter start  (why it stopped: halton-meter logs)")

    # ---- trust --------------------------------------------------------------------------------------

    def trust_ca(self, ctx: InitContext) -> bool:
        cert = str(ctx.paths.ca_cert)
        sha1 = cert_sha1(ctx.paths.ca_cert)
        if ctx.runner.run(["certutil", "-user", "-store", "Root", sha1], check=False, timeout=15).ok:
            ctx.notes.append("the meter's CA is already in your Root certificate store")
            return True
        add = ["certutil", "-user", "-addstore", "Root", cert]
        if ctx.options.non_interactive:
            ctx.notes.append("not added to your Root certificate store: Windows asks you to confirm that in a "
                             f"dialog, which --non-interactive does not wait for; run it yourself: {shlex.join(add)}")
            return False
        ctx.report("Windows asks you to confirm adding the meter's CA to your Root certificate store")
        try:
            ctx.run(add, undo=[["certutil", "-user", "-delstore", "Root", sha1]],
                    description="trust the CA in the user Root store", timeout=TRUST_TIMEOUT)
        except CommandFailed as exc:
            raise HaltonError(f"Windows did not add the meter's CA to your Root store ({exc.message}); run "
                              "`halton-meter init` again and confirm the dialog") from None
        ctx.notes.append(f"CA in your Root certificate store (thumbprint {sha1})")
        return True

    # ---- environment and per-user proxy (apps mode) -------------------------------------------------

    def _query(self, ctx: InitContext, key: str, name: str) -> RegValue | None:
        result = ctx.runner.run(["reg", "query", key, "/v", name], check=False, timeout=10)
        return parse_reg_query(result.stdout, name) if result.ok else None

    def persist_env(self, ctx: InitContext, env: Mapping[str, str]) -> None:
        # Variable names ignore case on Windows: HTTPS_PROXY and https_proxy are one value; the first wins.
        variables: dict[str, tuple[str, str]] = {}
        for name, value in env.items():
            variables.setdefault(name.upper(), (name, value))
        wanted: list[tuple[str, str, RegValue]] = [
            (ENVIRONMENT, name, RegValue("REG_SZ", value)) for name, value in variables.values()
        ]
        previous = {(key, name): self._query(ctx, key, name) for key, name, _ in wanted}
        for name in ("ProxyEnable", "ProxyServer", "ProxyOverride", "AutoConfigURL"):
            previous[(INTERNET_SETTINGS, name)] = self._query(ctx, INTERNET_SETTINGS, name)
        server = f"{LOOPBACK}:{ctx.config.edge_port}"
        old_override = previous[(INTERNET_SETTINGS, "ProxyOverride")]
        entries = [e.strip() for e in (old_override.data if old_override else "").split(";") if e.strip()]
        override = ";".join(entries + ([] if LOCAL_BYPASS in entries else [LOCAL_BYPASS]))
        wanted += [
            (INTERNET_SETTINGS, "ProxyEnable", RegValue("REG_DWORD", "1")),
            (INTERNET_SETTINGS, "ProxyServer", RegValue("REG_SZ", server)),
            (INTERNET_SETTINGS, "ProxyOverride", RegValue("REG_SZ", override)),
        ]

        changed = False
        for key, name, wanted_value in wanted:
            before = previous[(key, name)]
            if before == wanted_value:
                continue
            undo = [reg_add(key, name, before) if before is not None else reg_delete(key, name)]
            if not changed:
                # The first change of a run is undone last (undo runs newest first): its undo ends by telling
                # running programs, once, after every value is back.
                undo.append(NOTIFY)
            ctx.run(reg_add(key, name, wanted_value), undo=undo, description=f"{key}\\{name}")
            changed = True
        if changed:
            notified = ctx.runner.run(NOTIFY, check=False, timeout=60)
            if not notified.ok:
                ctx.report("could not notify running programs of the new settings; programs started from now "
                           "on see them")

        enabled, old_server = previous[(INTERNET_SETTINGS, "ProxyEnable")], previous[(INTERNET_SETTINGS, "ProxyServer")]
        if enabled is not None and enabled.data == "1" and old_server is not None and old_server.data != server:
            ctx.report(f"replaced your per-user proxy {old_server.data}; `halton-meter uninstall` restores it")
        if previous[(INTERNET_SETTINGS, "AutoConfigURL")] is not None:
            ctx.report("a proxy auto-config script (AutoConfigURL) is set: apps that follow it do not use the "
                       "meter's per-user proxy; HTTPS_PROXY still routes the apps that read it")
        ctx.report(WINHTTP_ADVICE)

    def set_system_proxy(self, ctx: InitContext, port: int) -> None:
        raise UnsupportedOnPlatform(
            "a machine-wide proxy (--full) is not supported on Windows; --apps already sets the per-user "
            "proxy (HKCU Internet Settings) that browsers, WinINet and Electron apps follow"
        )


@hookimpl
def halton_platform_installer(platform: PlatformInfo) -> WindowsInstaller | None:
    if platform.system == "windows":
        return WindowsInstaller(platform)
    return None
