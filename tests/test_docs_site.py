"""The documentation site (mkdocs.yml, docs/) builds cleanly and cannot drift from the code.

* `mkdocs build --strict` succeeds with no warning at all: a broken link, a missing anchor or a page left
  out of the nav fails the suite.
* The CLI reference is generated from the click commands at build time (docs/_hooks/cli_reference.py):
  every entry of `halton_meter.cli.COMMANDS` has its section, and so does every hook in
  `halton_meter.hookspecs`.
* Every `docs/….md` path that source files cite exists, and every relative link in README.md resolves.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CITING_DIRS = ("halton_meter", "plugins", "checks", "tests", "contrib", "bench")
CITED_DOC = re.compile(r"(?<![\w./-])docs/[a-z/_-]+\.md")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _require_mkdocs() -> None:
    # Not a skip: CI must prove the site builds, so a missing install is a failure with the fix.
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    assert not missing, f"{', '.join(missing)} not installed: pip install -e '.[docs]' (make test does this)"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_mkdocs()
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_COLOR": "1", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    output = ANSI.sub("", result.stdout + result.stderr)
    warnings = [line for line in output.splitlines() if line.lstrip().startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{output}"
    return site


def _hook_module():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "_hooks" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_builds_strict_without_warnings(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    assert (built_site / "reference" / "cli" / "index.html").is_file()


def test_every_command_is_in_the_generated_cli_reference(built_site: Path) -> None:
    from halton_meter.cli import COMMANDS

    generated = _hook_module().render_cli()
    page = (built_site / "reference" / "cli" / "index.html").read_text()
    for name in COMMANDS:
        assert f"### `{name}`" in generated, f"`{name}` missing from the generated CLI reference"
        assert f"halton-meter {name}" in generated
        assert f'id="{name}"' in page, f"`{name}` has no section in the built CLI reference page"
    assert "<!-- generated:cli -->" not in page


def test_every_hook_is_in_the_generated_hook_reference(built_site: Path) -> None:
    from halton_meter import hookspecs

    page = (built_site / "plugins" / "hooks" / "index.html").read_text()
    hooks = [name for name, value in vars(hookspecs).items()
             if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")]
    assert hooks
    for name in hooks:
        assert f'id="{name}"' in page, f"hook `{name}` missing from the generated hook reference"


def _cited_doc_paths() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for top in CITING_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix not in {".py", ".md", ".toml", ".txt", ".cfg"}:
                continue
            if any(part in {".venv", ".venv-test", "__pycache__", "site-packages"} for part in path.parts):
                continue
            for match in CITED_DOC.findall(path.read_text(errors="replace")):
                cited.setdefault(match, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_docs_page_exists() -> None:
    cited = _cited_doc_paths()
    # The provider tests cite these pages as normative references: the search must find them.
    assert "docs/concepts/tokens.md" in cited and "docs/testing.md" in cited
    missing = {doc: sorted(sources) for doc, sources in cited.items() if not (ROOT / doc).is_file()}
    assert not missing, f"cited but missing: {missing}"


def test_testing_page_has_the_sections_tests_cite() -> None:
    text = (ROOT / "docs" / "testing.md").read_text()
    headings = {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}
    for section in ("Load", "Faults", "Keep-alive and combined faults", "Bad inputs", "Security", "UX of failure"):
        assert section in headings, f'docs/testing.md has no "{section}" section'
    assert "## Error bodies" in (ROOT / "docs" / "providers" / "index.md").read_text()


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    broken = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_readme_keeps_the_fresh_machine_commands() -> None:
    # CI (.ci/run) runs the README's test command; the README must keep saying what it is.
    text = (ROOT / "README.md").read_text()
    assert "$ make init" in text and "$ make test" in text
