"""The layout shows the processes: who may import whom, read from the source with `ast` (nothing imported).

The package rooms are `attribution`, `budgets`, `cli`, `core`, `doctor`, `edge`, `lifecycle`, `serve`,
`store`, `sync` and `testing`; every other module directly under `halton_meter/` is a top-level module. The rules:

1. No import cycle among `halton_meter` modules, counting imports inside functions too (a lazy import is
   still a dependency); only imports under `if TYPE_CHECKING:` are left out (they never run).
2. Rooms import downwards only:
   * `store` and `attribution` are libraries: they import no room, only top-level modules;
   * `budgets` and `sync` are libraries on top of `store` (spend is read from the rollups; sync reads the
     change log): each imports `store` and no other room;
   * `edge` and `core` are the two meter processes: neither imports the other, nor `serve`, `cli`,
     `doctor`, `lifecycle` or `testing`, with two named exceptions that import no room themselves (so
     they can never close a cycle): the child-process kit in `serve` (`serve.process`, `serve.stats`,
     `serve.configwatch`: orphan watch, counters files, live config reload), which the supervisor's
     children run, and `core.routing`, the routing table the edge also runs on to decide which CONNECTs
     go to the core;
   * `serve` (the supervisor and its API) starts `edge` and `core` as processes (`python -m`) and never
     imports them, nor `cli`, `doctor`, `lifecycle` or `testing`;
   * `doctor` never imports `cli`, `edge` or `core` (it looks at the running processes through their
     files and sockets);
   * nothing imports `cli` but `halton_meter.__main__`.
3. Top-level modules are the contract and the shared helpers (hookspecs, types, errors, paths, config,
   protocol, targets, clock, …): they import no room. The exceptions are named: `__main__` (runs the
   CLI), the two features built on the store that `cli` and `serve` both use, `report` and
   `importing`, and `plugin`, the public plugin API, which re-exports what plugins may use from every room
   (nothing in the host imports it but the built-in plugins, the checks and third parties).
4. No module in `halton_meter/`, `plugins/` or `checks/` is over 400 lines unless its module docstring
   has a line starting exactly `Why this module is long:` that gives the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "halton_meter"
ROOMS = frozenset({"attribution", "budgets", "cli", "core", "doctor", "edge", "lifecycle", "serve", "store",
                   "sync", "testing"})
PROCESS_NEVER = frozenset({"cli", "doctor", "lifecycle", "testing"})
NEVER: dict[str, frozenset[str]] = {
    "store": ROOMS - {"store"},
    "attribution": ROOMS - {"attribution"},
    "budgets": ROOMS - {"budgets", "store"},
    "sync": ROOMS - {"sync", "store"},
    "edge": PROCESS_NEVER | {"core", "serve"},
    "core": PROCESS_NEVER | {"edge", "serve"},
    "serve": PROCESS_NEVER | {"edge", "core"},
    "doctor": frozenset({"cli", "edge", "core"}),
}
"""Room → the rooms it must never import (rule 2)."""
SHARED = {
    "edge": frozenset({"halton_meter.serve.process", "halton_meter.serve.stats", "halton_meter.serve.configwatch",
                       "halton_meter.core.routing"}),
    "core": frozenset({"halton_meter.serve.process", "halton_meter.serve.stats", "halton_meter.serve.configwatch"}),
}
"""The named exceptions to rule 2: modules of another room a process may import (each imports no room)."""
TOP_LEVEL_FEATURES = frozenset({"halton_meter.__main__", "halton_meter.report", "halton_meter.importing",
                                "halton_meter.plugin"})
"""Top-level modules that may import rooms (rule 3)."""
LONG_LINES = 400
REASON = "Why this module is long:"
def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> set[str]:
    """The halton_meter modules `module` imports: `from pkg import sub` counts as `pkg.sub` when that is a
    module, otherwise as `pkg`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_one(other)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "halton_meter")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "halton_meter":
                return
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def test_the_graph_is_read() -> None:
    """Guard against a test that passes because it sees nothing."""
    assert "halton_meter.edge.server" in GRAPH and "halton_meter.edge.splice" in GRAPH["halton_meter.edge.server"]
    assert "halton_meter.protocol" in GRAPH["halton_meter.core.addon"]


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in GRAPH:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


def test_rooms_import_downwards_only() -> None:
    wrong = []
    for module, imported in sorted(GRAPH.items()):
        room = _room(module)
        for target in sorted(imported):
            target_room = _room(target)
            if target_room is None or target_room == room:
                continue
            if target_room == "cli" and module != "halton_meter.__main__":
                wrong.append(f"{module} imports {target}: nothing but __main__ imports cli")
            elif room is None and module not in TOP_LEVEL_FEATURES:
                wrong.append(f"{module} imports {target}: a top-level module imports no room")
            elif room in NEVER and target_room in NEVER[room] and target not in SHARED.get(room, ()):
                wrong.append(f"{module} imports {target}: {room} never imports {target_room}")
    assert not wrong, "\n".join(wrong)


def test_shared_modules_import_no_room() -> None:
    """The named exceptions stay safe: a module a process may borrow from another room imports no room."""
    for module in sorted(set().union(*SHARED.values())):
        assert module in GRAPH, module
        assert not [t for t in GRAPH[module] if _room(t) is not None], (module, sorted(GRAPH[module]))


def _long_modules() -> list[Path]:
    found = []
    for root in ("halton_meter", "plugins", "checks"):
        for path in sorted((REPO / root).rglob("*.py")):
            if ".venv" in path.parts or "build" in path.parts:
                continue
            if len(path.read_text(encoding="utf-8").splitlines()) > LONG_LINES:
                found.append(path)
    return found


@pytest.mark.parametrize("path", _long_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_long_module_says_why(path: Path) -> None:
    relative = path.relative_to(REPO).as_posix()
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    reasons = [line for line in docstring.splitlines() if line.startswith(REASON)]
    assert reasons and len(reasons[0]) > len(REASON) + 10, (
        f"{relative} is over {LONG_LINES} lines: split it, or give its docstring a line starting "
        f"`{REASON}` with the reason")
