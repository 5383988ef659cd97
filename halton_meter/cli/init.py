from __future__ import annotations

import sys

import click
from rich.text import Text

from halton_meter import terminal


@click.command("init")
@click.option("--apps", "mode", flag_value="apps", help="Also route new shells and GUI apps through the meter.")
@click.option("--full", "mode", flag_value="full", help="Also set the system proxy (macOS only).")
@click.option("--env-only", "mode", flag_value="env", default=True,
              help="Default: meter only what runs under `halton-meter run`.")
@click.option("--no-shell-rc", is_flag=True, help="With --apps/--full: do not add the block to your shell rc.")
@click.option("--trust-system", is_flag=True,
              help="Linux: also add the CA to the system trust store (runs sudo; never done silently).")
@click.option("--non-interactive", is_flag=True, help="Never prompt; fail with the exact command instead.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan and change nothing.")
@click.option("--clean", is_flag=True, help="Undo everything a previous init did first, then set up afresh.")
def command(mode: str, no_shell_rc: bool, trust_system: bool, non_interactive: bool, dry_run: bool,
            clean: bool) -> int:
    """Set the meter up on this machine and start it, step by step, and prove it works.

    \b
    Modes:
      (default)  env-only: meter what you run with `halton-meter run -- CMD`
      --apps     also new shells (a marked shell-rc block) and GUI apps (environment.d,
                 launchctl, HKCU\\Environment) get HTTPS_PROXY and the CA bundle
      --full     also the system proxy (macOS only)

    Every change is recorded in system_state.json; `halton-meter uninstall` restores what was there
    before. Re-running init is harmless and switches modes cleanly. If a step fails, what this run
    changed is rolled back and the failing step is named with its fix.
    """
    from halton_meter import terminal
    from halton_meter.errors import ExitCode, HaltonError, UsageError
    from halton_meter.lifecycle.context import build_context, state_path
    from halton_meter.lifecycle.init import InitOptions, plan, run_init, undo_all

    throwaway = throwaway_environment(sys.prefix)
    if throwaway is not None and not dry_run:
        raise UsageError(
            f"this halton-meter runs from {throwaway}, a temporary environment (uvx): the service init sets up "
            "would stop working when it is cleaned; install it first with `uv tool install halton-meter` "
            "(or `pipx install halton-meter`), then run `halton-meter init`")
    options = InitOptions(mode=mode, shell_rc=not no_shell_rc, non_interactive=non_interactive,
                          trust_system=trust_system, dry_run=dry_run)
    ctx, host = build_context(options)
    if not dry_run:
        from halton_meter.paths import WRITABLE_FIX, writable_problem

        problem = writable_problem(ctx.paths.home)
        if problem is not None:  # say it once, before any step changes anything it would then have to undo
            raise HaltonError(f"cannot set up Halton Meter in {ctx.paths.home}: {problem}; {WRITABLE_FIX}")
    steps = host.registries.init_steps.ordered()
    if mode == "full" and not getattr(ctx.installer, "supports_system_proxy", False):
        raise UsageError(
            f"--full (a system-wide proxy) is not supported on this platform ({ctx.platform.system}); "
            "--apps covers new shells and every app that honours HTTPS_PROXY"
        )
    terminal.line(f"Halton Meter init · mode: {mode} · {ctx.installer.describe()}")
    if dry_run:
        outcomes = plan(ctx, steps)
        for index, outcome in enumerate(outcomes, 1):
            init_step(index, len(outcomes), outcome.step.title, outcome.status, outcome.detail)
        terminal.line("Dry run: nothing was changed.")
        return 0
    if clean and ctx.state.changes:
        undone = undo_all(ctx, {s.id: s for s in steps})
        ctx.state.save(state_path(ctx.config))
        terminal.line(f"--clean: undid {undone} change(s) from the previous init")
    total = len(steps)
    counter = iter(range(1, total + 1))
    ctx.report = terminal.line

    def show(outcome):
        init_step(next(counter), total, outcome.step.title, outcome.status, outcome.detail)

    result = run_init(ctx, steps, show)
    if result.failed is not None:
        ctx.state.save(state_path(ctx.config))
        init_done(False, f"init failed at {result.failed.step.id}; undid the {result.rolled_back} "
                                  f"change(s) this run made")
        raise HaltonError(result.failed.message, exit_code=ExitCode.FAILURE)
    ctx.state.stamp(mode, ctx.installer.id, options.to_json())
    ctx.state.save(state_path(ctx.config))
    hint = "open a new terminal, then use your tools as usual" if mode != "env" else \
        "meter a command with: halton-meter run -- claude"
    init_done(True, f"init complete · mode: {mode} · {hint}")
    return 0


_STEP_MARK = {"done": ("✓", "green"), "applied": ("✓", "green"), "skipped": ("–", "dim"), "undone": ("↺", "cyan"),
              "failed": ("✗", "bold red"), "apply": ("→", "yellow"), "undo": ("↺", "cyan")}


def init_step(index: int, total: int, title: str, status: str, detail: str) -> None:
    mark, style = _STEP_MARK.get(status, ("?", ""))
    words = {"done": "already in place", "applied": "done", "skipped": "skipped", "undone": "undone",
             "failed": "FAILED", "apply": "will apply", "undo": "will undo"}[status]
    text = Text.assemble((f"{index}/{total} ", "dim"), (f"{mark} ", style), f"{title}: ", (words, style))
    if detail and detail not in ("already in place", "will apply"):
        text.append(f" · {detail}", style="dim" if status != "failed" else "red")
    terminal.console().print(text, soft_wrap=True)


def init_done(ok: bool, message: str) -> None:
    style = "bold green" if ok else "bold red"
    terminal.console().print(Text.assemble(("✓ " if ok else "✗ ", style), (message, style if not ok else "")),
                             soft_wrap=True)


def throwaway_environment(prefix: str) -> str | None:
    """The uv cache directory `prefix` lies in, when this Python is one of uv's temporary environments
    (`uvx`, `uv tool run`: `…/uv/archive-v0/HASH`, `…/uv/builds-v0/…`), which uv may delete at any time;
    None for an installed environment (pipx, `uv tool install`, a virtualenv)."""
    import re

    found = re.match(r"(.*?[\\/](?:archive|builds)-v\d+)(?:[\\/]|$)", prefix)  # either separator: Windows too
    return found.group(1) if found else None
