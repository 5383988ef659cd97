"""The plugin API is `halton_meter.plugin` and nothing else (its docstring is the promise).

Every plugin in this repository (plugins/, checks/, contrib/) imports from the host only through
`halton_meter.plugin`, and never another plugin package's modules; every name the API promises exists; and
the surface a plugin is typed against (hookspecs, the Protocols and contexts in `halton_meter.types`, the
hook implementations themselves) never falls back to `Any`.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from halton_meter import hookspecs, plugin

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_ROOTS = {
    # source root -> the plugin package it holds (the only plugin package its modules may import)
    ROOT / "plugins": "halton_meter_plugins",
    ROOT / "checks": "halton_meter_checks",
    ROOT / "contrib" / "halton-meter-provider-example": "halton_meter_provider_example",
}
PLUGIN_PACKAGES = set(PLUGIN_ROOTS.values())
API = "halton_meter.plugin"


def plugin_modules() -> list[tuple[Path, str]]:
    """(file, its plugin package) for every plugin module; a package's own tests/ are not plugin code."""
    found = []
    for root, package in PLUGIN_ROOTS.items():
        for path in sorted((root / package).rglob("*.py")):
            found.append((path, package))
    return found


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import, inside functions too; `from a import b` counts as
    importing `a.b` when `b` could be a module (it is checked against the same rules)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module in ("halton_meter", *PLUGIN_PACKAGES):
                out.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return out


def violation(module: str, own_package: str) -> str | None:
    top = module.split(".")[0]
    if top == "halton_meter":
        if module in ("halton_meter", API) or module.startswith(API + "."):
            return None
        if module.startswith("halton_meter.") and module.split(".")[1] in {"__version__", "hookimpl"}:
            return f"{module}: import it from {API}"
        return f"{module}: plugins import the host only through {API}"
    if top in PLUGIN_PACKAGES and top != own_package:
        return f"{module}: another plugin package's internals (use {API})"
    return None


def test_the_scan_sees_every_plugin_module() -> None:
    modules = plugin_modules()
    assert len(modules) > 30
    assert any(p.name == "__init__.py" and pkg == "halton_meter_provider_example" for p, pkg in modules)


@pytest.mark.parametrize("path,package", plugin_modules(), ids=lambda v: str(v).split("contrib/")[-1]
                         if isinstance(v, Path) else v)
def test_plugins_import_the_host_only_through_the_plugin_api(path: Path, package: str) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for line, module in imported_modules(tree):
        if module == "halton_meter":  # `from halton_meter import plugin` (checked as halton_meter.plugin)
            continue
        problem = violation(module, package)
        if problem:
            problems.append(f"{path.relative_to(ROOT)}:{line}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module,package,bad", [
    ("halton_meter.types", "halton_meter_plugins", True),
    ("halton_meter.lifecycle.init", "halton_meter_checks", True),
    ("halton_meter.hookimpl", "halton_meter_checks", True),
    ("halton_meter.plugin", "halton_meter_provider_example", False),
    ("halton_meter_plugins.providers.openai", "halton_meter_provider_example", True),
    ("halton_meter_plugins.providers.openai", "halton_meter_plugins", False),
    ("json", "halton_meter_plugins", False),
])
def test_the_rule_itself(module: str, package: str, bad: bool) -> None:
    assert (violation(module, package) is not None) is bad


def test_every_promised_name_exists() -> None:
    names = plugin.__all__
    assert len(names) == len(set(names)), "duplicates in __all__"
    missing = [name for name in names if not hasattr(plugin, name)]
    assert not missing, f"halton_meter.plugin.__all__ names what it does not have: {missing}"
    for name in ("hookimpl", "Provider", "Check", "CheckResult", "InitStep", "SyncTarget", "Attributor",
                 "CheckContext", "InitContext", "PluginConfig", "CommandRunner", "UnsupportedOnPlatform",
                 "StepSkipped", "ConfigError", "OpenAICompatibleProvider", "AnthropicCompatibleProvider",
                 "SSEDecoder", "loads_or_none"):
        assert name in names, name
    assert plugin.hookimpl is hookspecs.hookimpl


def test_the_module_docstring_states_the_promise() -> None:
    doc = plugin.__doc__ or ""
    assert "whole promised surface" in doc
    assert "config" in doc and "Host services" in doc


def test_old_import_paths_of_moved_names_still_work() -> None:
    from halton_meter.errors import StepSkipped, UnsupportedOnPlatform
    from halton_meter.lifecycle import init
    from halton_meter.lifecycle.commands import CommandResult, CommandRunner
    from halton_meter.types import CommandResult as TypesCommandResult
    from halton_meter.types import CommandRunner as TypesCommandRunner

    assert init.UnsupportedOnPlatform is UnsupportedOnPlatform and init.StepSkipped is StepSkipped
    assert CommandResult is TypesCommandResult and CommandRunner is TypesCommandRunner


# ---- no Any on the plugin surface ------------------------------------------------------------------------


def is_any(annotation: ast.expr | None) -> bool:
    """The annotation is `Any` (or `Any | None`, `Optional[Any]`); `Mapping[str, Any]` for TOML or JSON
    values is allowed."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return is_any(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Name):
        return annotation.id == "Any"
    if isinstance(annotation, ast.Attribute):
        return annotation.attr == "Any"
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return is_any(annotation.left) or is_any(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        if annotation.value.id == "Optional":
            return is_any(annotation.slice)
    return False


def any_parameters(function: ast.FunctionDef | ast.AsyncFunctionDef, where: str) -> list[str]:
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    problems = [f"{where}.{function.name}({a.arg})" for a in every if a.arg not in ("self", "cls")
                and (a.annotation is None or is_any(a.annotation))]
    if function.returns is None or is_any(function.returns):
        problems.append(f"{where}.{function.name} -> (return)")
    return problems


def test_no_hookspec_parameter_is_any() -> None:
    tree = ast.parse(inspect.getsource(hookspecs))
    specs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("halton_")]
    assert len(specs) == 9
    problems = [p for spec in specs for p in any_parameters(spec, "hookspecs")]
    assert not problems, problems


def surface_classes() -> list[ast.ClassDef]:
    from halton_meter import types

    tree = ast.parse(inspect.getsource(types))
    classes = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        protocol = any(isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases)
        if protocol or node.name.endswith("Context"):
            classes.append(node)
    return classes


def test_no_public_protocol_or_context_member_is_any() -> None:
    classes = surface_classes()
    assert {"PluginConfig", "InitContext", "CheckContext", "CommandRunner", "PlatformInstaller"} <= {
        c.name for c in classes}
    problems = []
    for cls in classes:
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if not node.target.id.startswith("_") and is_any(node.annotation):
                    problems.append(f"{cls.name}.{node.target.id}")
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                problems.extend(any_parameters(node, cls.name))
    assert not problems, problems


def test_no_hook_implementation_in_a_plugin_takes_any() -> None:
    problems = []
    count = 0
    for path, _package in plugin_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("halton_") and any(
                    (isinstance(d, ast.Name) and d.id == "hookimpl") for d in node.decorator_list):
                count += 1
                problems.extend(any_parameters(node, str(path.relative_to(ROOT))))
    assert count >= 25
    assert not problems, problems


# ---- the SSE event rewriter plugins build on (halton_meter.wire) ------------------------------------------


class _DropPings(plugin.SSEEventRewriter):
    def rewrite_event(self, event: bytes) -> bytes:
        return b"" if b"ping" in event else event


def _through(rewriter: plugin.SSEEventRewriter, body: bytes, cuts: list[int]) -> bytes:
    points = sorted({0, len(body), *(c for c in cuts if 0 < c < len(body))})
    return b"".join(rewriter.rewrite(body[a:b]) for a, b in zip(points, points[1:], strict=False)) + rewriter.flush()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_event_rewriter_is_byte_exact_and_chunking_blind(newline: bytes) -> None:
    events = [b"event: a", b"data: {\"x\":1}", b"", b": comment", b"data: ping", b"", b"data: last", b""]
    body = newline.join(events) + newline
    kept = newline.join([b"event: a", b"data: {\"x\":1}", b"", b"data: last", b""]) + newline
    for cuts in ([], list(range(1, len(body))), [3, 17, 18, 30]):
        assert _through(plugin.SSEEventRewriter(), body, cuts) == body
        assert _through(_DropPings(), body, cuts) == kept


def test_sse_event_rewriter_bounds_what_it_holds() -> None:
    big = b"data: " + b"p" * 100 + b"ping\n\n"
    assert _through(_DropPings(max_held=32), big, [10, 50]) == big  # too big to hold: passed unchanged
