"""Body capture: off unless a project is named in [capture]; then stored apart, with credentials redacted."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from halton_meter.config import load_config
from halton_meter.errors import ConfigError
from halton_meter.paths import Paths
from halton_meter.redact import REDACTED, redact
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess

SECRET_IN_PROMPT = "sk-ant-api03-CANARYKEY-pasted-into-a-prompt-0123456789"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"my key is {SECRET_IN_PROMPT}", "my key is "),
        ("Authorization: Bearer ya29.a0AfH6SMBxCANARY1234567890abcdef", "Authorization: "),
        ("curl -H 'x-api-key: sk-ant-api03-CANARY0123456789'", "curl -H 'x-api-key: "),
        ('{"api_key": "abcd1234efgh5678"}', '{"api_key": "'),
        ("AIzaSyD-CANARY-0123456789abcdefghijklmnopq", ""),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJlLWJ5dGVz", ""),
        ("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----", ""),
    ],
)
def test_redaction_removes_credential_shapes(text: str, kept: str) -> None:
    out = redact(text)
    assert out.startswith(kept) and REDACTED in out
    assert "CANARY" not in out and "abcd1234efgh5678" not in out and "MIIE" not in out


def test_plain_text_is_left_alone() -> None:
    assert redact("Refactor the billing module; keep tests green.") == "Refactor the billing module; keep tests green."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[capture]\nprojects = ["*"]\n', "capture is never on for everything"),
        ("[capture]\nprojects = true\n", "must be a list of project names"),
        ("[capture]\nproject = [\"a\"]\n", "unknown key capture.project"),
    ],
)
def test_capture_config_is_strict(paths: Paths, text: str, message: str) -> None:
    paths.home.mkdir(parents=True)
    paths.config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(paths)


@pytest.fixture(scope="module")
def capture_meter(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    home = tmp_path_factory.mktemp("capture") / "home"
    with MeterProcess.start(home, fake_provider, extra_config='[capture]\nprojects = ["capture-demo"]\n') as m:
        yield m


def call_from(meter: MeterProcess, project: str, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import httpx
        r = httpx.post("https://api.anthropic.com/v1/messages",
                       json={{"model": "claude-sonnet-4-5", "messages": [
                           {{"role": "user", "content": "CAPTURE-MARKER please review; key {SECRET_IN_PROMPT}"}}]}})
        assert r.status_code == 200, r.text
    """)
    # Provider hosts are answered by the core with our CA, so `run`'s environment is all the client needs.
    subprocess.run([sys.executable, "-c", code], env={**meter.env(), "HALTON_METER_PROJECT": project},
                   check=True, timeout=60, cwd=tmp_path)


def captures(meter: MeterProcess) -> list[dict]:
    conn = sqlite3.connect(f"file:{meter.home / 'db.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM captures")]
    finally:
        conn.close()


@pytest.mark.e2e
def test_capture_only_for_named_projects_and_redacted(capture_meter, fake_provider, tmp_path) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(
        input_tokens=9, output_tokens=3, text=f"Sure. Do not share {SECRET_IN_PROMPT}.")))
    before = len(capture_meter.rows())
    call_from(capture_meter, "someone-else", tmp_path)
    call_from(capture_meter, "capture-demo", tmp_path)
    rows = capture_meter.wait_for_calls(before + 2)[before:]
    by_project = {r["project"]: r for r in rows}
    stored = {c["call_id"]: c for c in captures(capture_meter)}
    assert by_project["someone-else"]["id"] not in stored  # never by default
    captured = stored[by_project["capture-demo"]["id"]]
    assert "CAPTURE-MARKER please review" in captured["request"]
    assert "Sure. Do not share" in captured["response"]
    assert SECRET_IN_PROMPT not in captured["request"] + captured["response"]
    assert REDACTED in captured["request"] and REDACTED in captured["response"]
    assert (captured["request_truncated"], captured["response_truncated"]) == (0, 0)
