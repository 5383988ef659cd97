"""`halton-meter demo`: see what the meter does in seconds, with no provider key and no network.

Everything lives in a throwaway directory under the system temp dir (mode 0700): a local fake provider
(`halton_meter.testing.fake_provider`) answers as api.anthropic.com and api.openai.com on 127.0.0.1, and a
real `halton-meter serve` (the same code path users run, on ephemeral ports) is started with that
directory as its HALTON_METER_HOME and `upstream.resolve` sending the provider hosts to the fake. The demo
then makes a handful of calls through the meter's proxy the way an SDK does (CONNECT, TLS checked against
the temporary meter's CA, HTTP/1.1, streamed and not), waits for their rows, and runs `halton-meter calls`
and `halton-meter report --by project,model` against that home.

The user's own HALTON_METER_HOME, settings, database and running meter are never read or touched. The
meter is stopped and the directory deleted at the end, also on Ctrl-C, SIGTERM and errors; `--keep` keeps
the directory and prints its path.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from halton_meter.errors import HaltonError

if TYPE_CHECKING:
    from halton_meter.testing.fake_provider import FakeProvider, Reply
    from halton_meter.testing.meter import MeterProcess

CALL_TIMEOUT = 10.0
"""Seconds one demo call may take (connect, request and the whole answer)."""
ROWS_TIMEOUT = 15.0
"""Seconds to wait for the meter to commit every call's row."""
SHOW_TIMEOUT = 60.0
"""Seconds `calls` or `report` may take."""
STOP_TIMEOUT = 10.0
"""Seconds the meter gets to stop before it is killed."""
USER_AGENT = "halton-meter-demo"
_HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass(frozen=True)
class DemoCall:
    """One call the demo makes: where it goes, what it sends and what the fake answers."""

    project: str
    host: str
    path: str
    what: str
    """How the progress line describes it."""
    request: dict[str, Any]
    reply: Callable[[], Reply]
    headers: dict[str, str] = field(default_factory=dict)


def demo_calls() -> list[DemoCall]:
    """The demo's calls, with fixed token counts (tests check the report against them by hand).

    claude-sonnet-4-5 costs $3 / $15 per million input / output tokens, $0.30 per million cache reads and
    $3.75 per million 5-minute cache writes; gpt-4o $2.50 input, $1.25 cached input, $10 output.
    """
    from halton_meter.testing import bodies
    from halton_meter.testing.fake_provider import Pause, Reply

    anthropic = {"x-api-key": "sk-ant-demo-not-a-real-key", "anthropic-version": "2023-06-01"}
    openai = {"authorization": "Bearer sk-demo-not-a-real-key"}
    system = [{"type": "text", "text": "You are a careful senior engineer. <the repository's files …>",
               "cache_control": {"type": "ephemeral"}}]

    def message(prompt: str, *, stream: bool, cached: bool = False) -> dict[str, Any]:
        request: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 1024,
                                   "messages": [{"role": "user", "content": prompt}]}
        if cached:
            request["system"] = system
        if stream:
            request["stream"] = True
        return request

    def chat(prompt: str, *, stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
        return request

    def whole(body: bytes, latency: float) -> Callable[[], Reply]:
        # A pause before the body, so latency in the report looks like a network call, not like loopback.
        return lambda: Reply(pieces=[Pause(latency), body], framing="length")

    def streamed(events: list[bytes], first: float) -> Callable[[], Reply]:
        return lambda: Reply(pieces=[Pause(first), *events], sse=True, delay_between=0.02)

    text = ("Done: the tests pass.", " I renamed the helper", " and updated its callers.")
    return [
        DemoCall("demo-api", "api.anthropic.com", "/v1/messages", "anthropic messages",
                 message("Summarise this diff.", stream=False),
                 whole(bodies.anthropic_message(input_tokens=1850, output_tokens=420), 0.35), anthropic),
        DemoCall("demo-api", "api.anthropic.com", "/v1/messages", "anthropic messages, streamed, cache write",
                 message("Fix the failing test.", stream=True, cached=True),
                 streamed(bodies.anthropic_stream_events(input_tokens=45, cache_write=12000, output_tokens=610,
                                                         chunks=text), 0.3), anthropic),
        DemoCall("demo-api", "api.anthropic.com", "/v1/messages", "anthropic messages, streamed, cache read",
                 message("Now add a test for the edge case.", stream=True, cached=True),
                 streamed(bodies.anthropic_stream_events(input_tokens=80, cache_read=12000, output_tokens=530,
                                                         chunks=text), 0.2), anthropic),
        DemoCall("demo-api", "api.anthropic.com", "/v1/messages", "anthropic messages, cache read + write",
                 message("And update the docs.", stream=False, cached=True),
                 whole(bodies.anthropic_message(input_tokens=60, cache_read=12000, cache_write=2400,
                                                output_tokens=380), 0.3), anthropic),
        DemoCall("demo-web", "api.openai.com", "/v1/chat/completions", "openai chat",
                 chat("Write a release note.", stream=False),
                 whole(bodies.openai_chat(prompt_tokens=3200, completion_tokens=450), 0.3), openai),
        DemoCall("demo-web", "api.openai.com", "/v1/chat/completions", "openai chat, streamed, cached tokens",
                 chat("Shorter, please.", stream=True),
                 streamed(bodies.openai_chat_stream_events(prompt_tokens=3400, cached_tokens=3072,
                                                           completion_tokens=290, chunks=text), 0.25), openai),
        DemoCall("demo-web", "api.openai.com", "/v1/chat/completions", "openai chat, cached tokens",
                 chat("Now the changelog entry.", stream=False),
                 whole(bodies.openai_chat(prompt_tokens=3000, cached_tokens=2304, completion_tokens=250), 0.3),
                 openai),
        DemoCall("demo-web", "api.anthropic.com", "/v1/messages", "anthropic messages, streamed",
                 message("Review the release note.", stream=True),
                 streamed(bodies.anthropic_stream_events(input_tokens=900, output_tokens=240, chunks=text), 0.25),
                 anthropic),
    ]


@click.command("demo")
@click.option("--keep", is_flag=True,
              help="Keep the temporary home afterwards and print its path (look around with "
                   "HALTON_METER_HOME=PATH halton-meter report).")
def command(keep: bool) -> None:
    """Try Halton Meter without a provider key or a network: a throwaway meter in a temporary home, a local
    fake provider that answers as Anthropic and OpenAI, a handful of real calls through the meter, then
    `calls` and `report` for them.

    Your own meter, settings and database are not touched. Everything is stopped and deleted at the end
    (also on Ctrl-C), unless --keep.
    """
    from halton_meter import terminal

    started = time.monotonic()
    sandbox = Sandbox(keep=keep)
    try:
        with _signals_as_interrupt(), sandbox:
            _run(sandbox)
    except KeyboardInterrupt:
        # One line and exit 130, like Ctrl-C anywhere else, but without click's extra blank line.
        terminal.warn(f"demo interrupted: {sandbox.outcome()}")
        raise click.exceptions.Exit(130) from None
    finally:
        if keep and sandbox.home is not None:
            terminal.line(f"Kept the demo's home: {sandbox.home}")
            terminal.line(f"  look around: HALTON_METER_HOME={sandbox.home} halton-meter report --by model")
            terminal.line(f"  remove it:   rm -r {sandbox.root}")
    terminal.line(f"Demo done in {time.monotonic() - started:.1f}s: {sandbox.outcome()}.", style="dim")


def _say(message: str, style: str | None = None) -> None:
    from halton_meter import terminal

    terminal.line(message, style=style)
    sys.stdout.flush()


class Sandbox:
    """The demo's throwaway world: a temp directory (with the meter's home in it), the fake provider and
    the meter. Leaving the block stops the meter and the fake and deletes the directory (unless `keep`),
    with Ctrl-C and SIGTERM ignored meanwhile so the clean-up itself cannot be cut short."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.root: Path | None = None
        self.home: Path | None = None
        self.fake: FakeProvider | None = None
        self.meter: MeterProcess | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Sandbox:
        self.root = Path(tempfile.mkdtemp(prefix="halton-meter-demo-"))  # mode 0700, under the system temp dir
        try:
            self.home = self.root / "home"
            self.home.mkdir(mode=0o700)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def outcome(self) -> str:
        if self.root is None:
            return "nothing was started"
        if self.keep:
            return f"its meter is stopped, its home kept in {self.home}"
        return "its meter is stopped and its temporary home removed"

    def logs_hint(self) -> str:
        """The end of an error message: where the demo meter's logs are, or how to keep them."""
        if self.keep:
            return f"; its logs are kept in {self.root}"
        return "; `halton-meter demo --keep` keeps its logs to look at"

    def start_fake(self) -> FakeProvider:
        from halton_meter.testing.fake_provider import FakeProvider

        fake = FakeProvider()
        self._stack.callback(fake.close)
        self.fake = fake.start()
        return fake

    def start_meter(self) -> MeterProcess:
        from halton_meter.host import DISABLE_ENV
        from halton_meter.logs import LOG_DIR_ENV
        from halton_meter.paths import Paths
        from halton_meter.testing.meter import MeterProcess, write_config

        assert self.home is not None and self.fake is not None
        # The meter verifies "providers" against the fake's CA: a copy in the home keeps the config valid
        # after the fake is gone (for --keep).
        ca = self.home / "demo-fake-provider-ca.pem"
        shutil.copyfile(self.fake.ca_pem, ca)
        write_config(self.home, ca_bundle=ca, resolve=self.fake.resolve_rules())
        # Logs go to the temporary home even if the caller's environment names another log directory, and
        # the built-in providers load even if it disables some.
        env = {LOG_DIR_ENV: str(Paths(self.home).logs), DISABLE_ENV: ""}
        meter = MeterProcess.start(self.home, env=env)
        self._stack.callback(meter.stop, STOP_TIMEOUT)
        self.meter = meter
        return meter

    def __exit__(self, *exc: object) -> None:
        with _signals_ignored():
            try:
                self._stack.close()
            finally:
                if not self.keep and self.root is not None:
                    shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end the demo like Ctrl-C, so it still cleans up."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in _HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    signals = (signal.SIGINT, *_HANDLED_SIGNALS)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(sandbox: Sandbox) -> None:
    from halton_meter.cli import COMMANDS
    from halton_meter.paths import Paths

    assert sandbox.home is not None
    _say("Halton Meter demo: a throwaway meter, a local fake provider, real calls through the meter.", "bold")
    _say("Nothing here touches your own meter, settings or database; no key and no network needed.")
    _say(f"→ temporary home {sandbox.home}")
    fake = sandbox.start_fake()
    _say(f"→ fake provider on 127.0.0.1:{fake.port}, answering as api.anthropic.com and api.openai.com")
    _say("→ starting a real meter (`halton-meter serve` on free ports) …")
    began = time.monotonic()
    try:
        meter = sandbox.start_meter()
    except RuntimeError as exc:  # MeterProcess: serve exited or never became ready; its output says why
        raise HaltonError(f"the demo's meter did not start: {_last_line(str(exc))}{sandbox.logs_hint()}") from None
    _say(f"  ready in {time.monotonic() - began:.1f}s: proxy 127.0.0.1:{meter.edge_port}")

    calls = demo_calls()
    projects = " and ".join(dict.fromkeys(call.project for call in calls))
    _say(f"→ {len(calls)} calls through the proxy, as an SDK makes them (projects {projects}):")
    for call in calls:
        fake.add("POST", call.path, call.reply())
        began = time.monotonic()
        status = _call(meter, call, sandbox.logs_hint())
        _say(f"  {call.project:<9} {call.what:<42} {status}  {time.monotonic() - began:.2f}s")
    received = len(fake.requests)
    if received != len(calls):
        raise HaltonError(f"the demo's fake provider answered {received} of {len(calls)} calls"
                          f"{sandbox.logs_hint()}")
    _say("→ waiting for the meter to record them …")
    _wait_for_rows(meter, len(calls), sandbox.logs_hint())
    _say(f"  {len(calls)} rows in {Paths(sandbox.home).db}")

    _show(sandbox.home, "calls")
    _show(sandbox.home, "report", "--by", "project,model")
    _explain("import" in COMMANDS)


def _call(meter: MeterProcess, call: DemoCall, hint: str) -> int:
    """POST through the meter's proxy like an SDK: CONNECT with the project in the proxy credentials, TLS to
    the provider's name checked against the temporary meter's client bundle only, then read the whole answer
    as it arrives. Returns the status (anything but 200 is an error: the fake scripts 200s only)."""
    context = ssl.create_default_context(cafile=str(meter.client_bundle))
    connection = http.client.HTTPSConnection("127.0.0.1", meter.edge_port, timeout=CALL_TIMEOUT, context=context)
    credentials = base64.b64encode(f"project:{urllib.parse.quote(call.project, safe='')}".encode()).decode()
    connection.set_tunnel(call.host, 443, headers={"Proxy-Authorization": f"Basic {credentials}"})
    body = json.dumps(call.request).encode()
    headers = {"content-type": "application/json", "accept": "application/json", "user-agent": USER_AGENT,
               **call.headers}
    try:
        connection.request("POST", call.path, body=body, headers=headers)
        response = connection.getresponse()
        while response.read1(65536):
            pass
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        raise HaltonError(f"the demo's call to {call.host}{call.path} through its meter failed: "
                          f"{exc or type(exc).__name__}{hint}") from None
    finally:
        connection.close()
    if status != 200:
        raise HaltonError(f"the demo's call to {call.host}{call.path} answered {status}{hint}")
    return status


def _wait_for_rows(meter: MeterProcess, count: int, hint: str) -> None:
    deadline = time.monotonic() + ROWS_TIMEOUT
    while True:
        rows = meter.rows()
        if len(rows) >= count:
            return
        if time.monotonic() > deadline:
            raise HaltonError(f"the demo's meter recorded {len(rows)} of {count} calls within {ROWS_TIMEOUT:.0f}s"
                              f"{hint}")
        time.sleep(0.05)


def _show(home: Path, *args: str) -> None:
    """Run `halton-meter ARGS` for the temporary home, printing to this terminal as the command does."""
    _say("")
    _say(f"$ halton-meter {' '.join(args)}", "bold cyan")
    env = {**os.environ, "HALTON_METER_HOME": str(home)}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        code = subprocess.call([sys.executable, "-m", "halton_meter", *args], env=env, stdin=subprocess.DEVNULL,
                               timeout=SHOW_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise HaltonError(f"`halton-meter {args[0]}` did not finish within {SHOW_TIMEOUT:.0f}s") from None
    if code != 0:
        raise HaltonError(f"`halton-meter {' '.join(args)}` exited with {code} for the demo's home")


def _explain(can_import: bool) -> None:
    _say("")
    _say("What you are looking at", "bold")
    for text in (
        "• calls: one row per API call that went through the meter: provider, model, tokens, cost, project.",
        "• Tokens are the provider's own numbers, read from each answer's usage (streamed or not), not estimates:",
        "  `in` is uncached input, `cache r/w` the prompt-cache reads and writes, `out` the output.",
        "• Cost is those tokens at the model's list prices (bundled genai-prices data, no network; see",
        "  `halton-meter prices claude-sonnet-4-5`), cache reads and writes at their own rates.",
        "• saved: what the cache reads saved, against paying the plain input price for the same tokens.",
        "• Projects here come from the proxy URL (`halton-meter run --project NAME`); otherwise from the git",
        "  repository or directory the tool runs in.",
    ):
        _say(text)
    _say("")
    _say("Next steps", "bold")
    steps = [("halton-meter init", "set the meter up for real and start it"),
             ("halton-meter run -- claude", "meter one command (Claude Code here; any tool works)")]
    if can_import:
        steps.append(("halton-meter import claude-code", "bring in what Claude Code already spent"))
    steps.append(("halton-meter report", "what it all cost, by project (--by model, --today, …)"))
    for name, what in steps:
        _say(f"  {name:<33} {what}")
    _say("")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
