"""`halton-meter import`: Claude Code and Codex logs as rows with `source = import` — idempotent, never a call
the meter recorded, never any text, priced like live calls.

The fixtures are written the way the tools write them (field names and nesting from their public sources:
ccusage's loaders, Codex's `protocol.rs`; see docs/import.md). Every message, prompt and instruction in them
holds the canary, which must never reach the database.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from halton_meter.store.schema import MIGRATIONS, migrate
from halton_meter.store.writer import Writer
from halton_meter.types import CallRecord, ImportStats

CANARY = "CANARY-5e1f: refactor the billing module, my password is hunter2"
WORKSPACE_CWD = "/work/acme/app"  # gone since: attributed by the [projects] rule alone


# ---- fixtures written like the tools write them ----------------------------------------------------------


def write_jsonl(path: Path, entries: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for entry in entries:
            fh.write(entry if isinstance(entry, str) else json.dumps(entry, separators=(",", ":")))
            fh.write("\n")
    return path


def claude_user(session: str, cwd: str, ts: str, branch: str = "feature/billing") -> dict[str, Any]:
    return {"parentUuid": None, "isSidechain": False, "userType": "external", "cwd": cwd, "sessionId": session,
            "version": "2.0.14", "gitBranch": branch, "type": "user",
            "message": {"role": "user", "content": CANARY}, "uuid": str(uuid.uuid4()), "timestamp": ts}


def claude_assistant(session: str, cwd: str, ts: str, message_id: str, request_id: str | None, *,
                     model: str = "claude-sonnet-4-5-20250929", input_tokens: int = 3, output_tokens: int = 1,
                     cache_read: int = 0, cache_5m: int = 0, cache_1h: int = 0, stop_reason: str | None = None,
                     branch: str = "feature/billing", block: str = "text", sidechain: bool = False,
                     **extra: Any) -> dict[str, Any]:
    content = {"text": [{"type": "text", "text": CANARY}],
               "thinking": [{"type": "thinking", "thinking": CANARY, "signature": "Eo8CCkYIBRgCKkD"}],
               "tool_use": [{"type": "tool_use", "id": "toolu_01Qx", "name": "Bash",
                             "input": {"command": f"echo '{CANARY}'"}}]}[block]
    line = {
        "parentUuid": str(uuid.uuid4()), "isSidechain": sidechain, "userType": "external", "cwd": cwd,
        "sessionId": session, "version": "2.0.14", "gitBranch": branch,
        "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_5m + cache_1h,
                      "cache_read_input_tokens": cache_read,
                      "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
                      "output_tokens": output_tokens, "service_tier": "standard"},
        },
        "requestId": request_id, "type": "assistant", "uuid": str(uuid.uuid4()), "timestamp": ts,
    }
    if request_id is None:
        del line["requestId"]
    line.update(extra)
    return line


def claude_logs(home: Path, repo_dir: Path) -> Path:
    """Three files under ~/.claude/projects: a session (one message streamed over three lines, one message
    in one line, a synthetic error notice, a torn line and a stray one), a sub-agent's file, and a resumed
    session that copies a line of the first and adds a call of its own (in a real git repository)."""
    projects = home / ".claude" / "projects"
    session, resumed = "3f0c9a1e-8d2b-4c6e-9f1a-2b7d5e8c4a10", "7a2e4c91-5b3d-4e8f-a6c2-9d1b3f5e7a24"
    enc = projects / "-work-acme-app"
    b_line = claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:01:10.500Z", "msg_01B", "req_011B",
                              input_tokens=3, cache_read=20_000, cache_5m=1_000, output_tokens=250,
                              stop_reason="end_turn")
    write_jsonl(enc / f"{session}.jsonl", [
        {"type": "queue-operation", "operation": "dequeue", "timestamp": "2025-10-02T09:00:00.000Z",
         "sessionId": session},
        claude_user(session, WORKSPACE_CWD, "2025-10-02T09:00:00.100Z"),
        # msg_01A: thinking, text and tool use, one line each; only the last carries the final output count.
        claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:00:03.000Z", "msg_01A", "req_011A", block="thinking",
                         input_tokens=5, cache_read=15_000, cache_5m=1_500, cache_1h=500, output_tokens=1),
        claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:00:04.000Z", "msg_01A", "req_011A",
                         input_tokens=5, cache_read=15_000, cache_5m=1_500, cache_1h=500, output_tokens=1),
        claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:00:09.000Z", "msg_01A", "req_011A", block="tool_use",
                         input_tokens=5, cache_read=15_000, cache_5m=1_500, cache_1h=500, output_tokens=412,
                         stop_reason="tool_use"),
        {"parentUuid": "x", "isSidechain": False, "type": "user", "cwd": WORKSPACE_CWD, "sessionId": session,
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Qx",
                                                  "content": CANARY}]},
         "uuid": str(uuid.uuid4()), "timestamp": "2025-10-02T09:00:10.000Z"},
        b_line,
        # Claude Code's own notice of a failed request: no API call.
        claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:02:00.000Z", "b3c1d2e4-synthetic", None,
                         model="<synthetic>", input_tokens=0, output_tokens=0, isApiErrorMessage=True),
        '{"parentUuid":"4d","isSidechain":false,"type":"assistant","message":{"id":"msg_01T","usage":{"input_tok',
        "not json at all",
    ])
    write_jsonl(enc / session / "subagents" / "agent-a1b2c3.jsonl", [
        claude_assistant(session, WORKSPACE_CWD, "2025-10-02T09:03:00.000Z", "msg_01C", "req_011C",
                         model="claude-haiku-4-5-20251001", input_tokens=1_200, output_tokens=300,
                         stop_reason="end_turn", sidechain=True),
    ])
    write_jsonl(projects / "-src-widget" / f"{resumed}.jsonl", [
        b_line,  # history copied into the resumed session
        claude_user(resumed, str(repo_dir), "2025-10-03T14:00:00.000Z", branch="main"),
        claude_assistant(resumed, str(repo_dir), "2025-10-03T14:00:05.000Z", "msg_01D", None, branch="main",
                         input_tokens=10, output_tokens=20, stop_reason="end_turn"),
    ])
    return projects


def git_repo(root: Path) -> Path:
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def usage(input_tokens: int, cached: int, output: int, reasoning: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "cached_input_tokens": cached, "output_tokens": output,
            "reasoning_output_tokens": reasoning, "total_tokens": input_tokens + output}


def token_count(ts: str, total: dict[str, int], last: dict[str, int] | None) -> dict[str, Any]:
    info = {"total_token_usage": total, "last_token_usage": last, "model_context_window": 272_000}
    return {"timestamp": ts, "type": "event_msg", "payload": {
        "type": "token_count", "info": info,
        "rate_limits": {"primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": 1760000000},
                        "secondary": None}}}


def codex_logs(home: Path, cwd: str) -> Path:
    """A rollout with two calls (the first written twice, as Codex does), and a fork of it that replays both
    before making a call of its own."""
    first, second = usage(12_127, 6_912, 623, 454), usage(14_000, 12_000, 300, 100)
    both = {k: first[k] + second[k] for k in first}
    third = usage(15_000, 14_000, 200, 0)

    def head(session: str, ts: str) -> list[dict[str, Any]]:
        return [
            {"timestamp": ts, "type": "session_meta", "payload": {
                "id": session, "timestamp": ts, "cwd": cwd, "originator": "codex_cli_rs", "cli_version": "0.46.0",
                "instructions": CANARY, "source": "cli", "model_provider": "openai",
                "git": {"commit_hash": "9f1c2d3", "branch": "main", "repository_url": "git@github.com:acme/w.git"}}},
            {"timestamp": ts, "type": "response_item", "payload": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": CANARY}]}},
            {"timestamp": ts, "type": "turn_context", "payload": {
                "cwd": cwd, "approval_policy": "on-request", "sandbox_policy": {"mode": "workspace-write"},
                "model": "gpt-5-codex", "effort": "medium", "summary": "auto", "user_instructions": CANARY}},
            {"timestamp": ts, "type": "event_msg", "payload": {"type": "token_count", "info": None,
                                                               "rate_limits": {"primary": None}}},
        ]

    sessions = home / ".codex" / "sessions" / "2025" / "10"
    parent = "0199a213-81c0-7800-8aa1-bbab2a035a53"
    write_jsonl(sessions / "04" / f"rollout-2025-10-04T10-00-00-{parent}.jsonl", [
        *head(parent, "2025-10-04T10:00:00.000Z"),
        token_count("2025-10-04T10:00:08.541Z", first, first),
        token_count("2025-10-04T10:00:08.990Z", first, first),  # written again: totals did not move
        {"timestamp": "2025-10-04T10:00:09.000Z", "type": "event_msg",
         "payload": {"type": "agent_message", "message": CANARY}},
        token_count("2025-10-04T10:01:30.000Z", both, second),
    ])
    fork = "0199a300-0000-7000-8000-000000000002"
    write_jsonl(sessions / "05" / f"rollout-2025-10-05T08-00-00-{fork}.jsonl", [
        *head(fork, "2025-10-05T08:00:00.000Z"),
        token_count("2025-10-05T08:00:00.100Z", first, first),  # the parent's history, replayed
        token_count("2025-10-05T08:00:00.200Z", both, second),
        token_count("2025-10-05T08:02:00.000Z", {k: both[k] + third[k] for k in both}, third),
    ])
    return home / ".codex"


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def config(paths) -> Path:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text('[projects]\n"/work/acme/**" = "acme"\n')
    return paths.config


def rows(db: Path, where: str = "1") -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM calls WHERE {where} ORDER BY started_at")]
    finally:
        conn.close()


def run_json(cli, *args: str) -> dict[str, Any]:
    result = cli("import", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_no_text_stored(db: Path) -> None:
    """No byte of any prompt, message or instruction in the database or its write-ahead log."""
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            data = path.read_bytes()
            assert b"CANARY" not in data and b"hunter2" not in data, path
    conn = sqlite3.connect(db)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert "CANARY" not in repr(row)
    finally:
        conn.close()


# ---- Claude Code ---------------------------------------------------------------------------------------------


def test_claude_code_import_end_to_end(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "src" / "widget")
    claude_logs(user_home, repo)
    [result] = run_json(cli, "claude-code")["sources"]
    assert result["locations"] == [str(user_home / ".config/claude/projects"), str(user_home / ".claude/projects")]
    assert {k: result[k] for k in ("files", "calls_found", "imported", "already_imported", "already_metered",
                                   "duplicates", "not_calls", "unreadable_lines", "unreadable_files", "recent",
                                   "billing", "billing_basis")} == {
        "files": 3, "calls_found": 4, "imported": 4, "already_imported": 0, "already_metered": 0,
        "duplicates": 3,  # msg_01A's two earlier lines, msg_01B's copy in the resumed session
        "not_calls": 1, "unreadable_lines": 2, "unreadable_files": 0, "recent": 0,
        "billing": "api", "billing_basis": "default"}
    stored = {r["provider_request_id"]: r for r in rows(paths.db)}
    assert set(stored) == {"msg_01A", "msg_01B", "msg_01C", "msg_01D"}
    a, b, c, d = (stored[k] for k in ("msg_01A", "msg_01B", "msg_01C", "msg_01D"))
    assert {r["source"] for r in stored.values()} == {"import"}
    assert {r["client"] for r in stored.values()} == {"claude-code"}
    assert {r["provider"] for r in stored.values()} == {"anthropic"}
    assert {r["billing"] for r in stored.values()} == {"api"}
    assert all(r["complete"] and r["billable"] and r["usage_reported"] and r["priced"] for r in stored.values())
    # One call per message: the line with the final output count, started when the first line was written.
    assert (a["input_tokens"], a["cache_read_tokens"], a["cache_write_tokens"], a["cache_write_1h_tokens"],
            a["output_tokens"]) == (5, 15_000, 2_000, 500, 412)
    assert (a["started_at"], a["ended_at"]) == ("2025-10-02T09:00:03.000000Z", "2025-10-02T09:00:09.000000Z")
    assert a["model"] == "claude-sonnet-4-5-20250929" and a["import_key"] == "claude-code:msg_01A"
    # Attribution: the [projects] rule for a directory that no longer exists; the git repository for one
    # that does; the branch the log recorded, not the one checked out now.
    assert (a["project"], a["project_source"], a["branch"], a["repo"]) == ("acme", "config", "feature/billing", None)
    assert (d["project"], d["project_source"], d["branch"], d["repo"]) == ("widget", "git", "main", "widget")
    assert c["model"] == "claude-haiku-4-5-20251001" and c["project"] == "acme"
    # Hand-priced at claude-sonnet-4-5's list prices per million tokens: $3 input, $15 output, $0.30 cache
    # read, $3.75 for a 5-minute cache write and $6 for a 1-hour one.
    assert b["cost_nanos"] == (3 * 3 + 20_000 * 0.30 + 1_000 * 3.75 + 250 * 15) * 1_000 == 13_509_000
    assert a["cost_nanos"] == (5 * 3 + 15_000 * 0.30 + 1_500 * 3.75 + 500 * 6 + 412 * 15) * 1_000 == 19_320_000
    assert c["cost_nanos"] == (1_200 * 1 + 300 * 5) * 1_000  # haiku-4-5: $1 / $5
    assert b["cache_savings_nanos"] == 20_000 * (3 - 0.30) * 1_000
    assert json.loads(b["extra"]) == {"service_tier": "standard", "billing_basis": "default"}
    assert (b["host"], b["method"], b["path"], b["latency_ms"], b["status"]) == ("", "", "", None, None)
    assert_no_text_stored(paths.db)

    # Idempotent: nothing new the second time.
    [again] = run_json(cli, "claude-code")["sources"]
    assert (again["imported"], again["already_imported"], again["calls_found"]) == (0, 4, 4)
    assert len(rows(paths.db)) == 4

    # The report shows the history, and says where it came from.
    report = json.loads(cli("report", "--since", "2025-10-01", "--by", "project", "--json").stdout)
    assert report["totals"]["calls"] == 4
    assert report["totals"]["cost_usd"] == f"{(13_509_000 + 19_320_000 + 2_700_000 + 330_000) / 1e9:.9f}"
    assert {g["project"]: g["calls"] for g in report["groups"]} == {"acme": 3, "widget": 1}
    [note] = [n for n in report["notes"] if n["kind"] == "imported"]
    assert note["calls"] == 4 and "imported from claude-code logs (history before the meter)" in note["text"]
    table = cli("report", "--since", "2025-10-01")
    assert "4 calls imported from claude-code logs" in table.stdout
    # And `calls` names the source.
    listed = json.loads(cli("calls", "--since", "2025-10-01", "--json").stdout)
    assert {c["source"] for c in listed} == {"import"}


def test_the_summary_line(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    result = cli("import", "claude-code")
    assert result.exit_code == 0, result.stderr
    first, *notes = result.stdout.splitlines()
    assert first == ("claude-code: 3 files read · 4 calls imported ($0.035859) · 0 already metered · "
                     "0 already imported · 3 duplicates · 2 unreadable lines")
    assert notes == ["  billed as api: Claude Code's logs do not say how calls were paid; --billing subscription "
                     "if they were covered by a plan"]


def test_a_call_the_meter_recorded_is_not_imported_again(cli, paths, config, user_home: Path,
                                                         tmp_path: Path) -> None:
    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    migrate(paths.db)
    writer = Writer(paths.db).start()
    metered = CallRecord(
        id=str(uuid.uuid4()), started_at="2025-10-02T09:01:02.000000Z", provider="anthropic",
        endpoint_kind="messages", host="api.anthropic.com", method="POST", path="/v1/messages",
        model="claude-sonnet-4-5-20250929", complete=True, billable=True, usage_reported=True, input_tokens=3,
        output_tokens=250, cache_read_tokens=20_000, cache_write_tokens=1_000, price_provider_id="anthropic",
        billing="subscription", client="claude-code", provider_request_id="msg_01B", project="acme",
        project_source="cwd")
    assert writer.submit(metered)
    assert writer.close(timeout=10)
    [result] = run_json(cli, "claude-code")["sources"]
    assert (result["imported"], result["already_metered"]) == (3, 1)
    # The meter saw Claude Code signed in to a plan: the imported calls are billed the same way.
    assert (result["billing"], result["billing_basis"]) == ("subscription", "meter")
    everything = rows(paths.db)
    assert len(everything) == 4
    assert [r["source"] for r in everything if r["provider_request_id"] == "msg_01B"] == ["proxy"]
    assert {r["billing"] for r in everything} == {"subscription"}
    report = json.loads(cli("report", "--since", "2025-10-01", "--json").stdout)
    assert report["totals"]["calls"] == 4 and report["totals"]["subscription_calls"] == 4
    assert [n["calls"] for n in report["notes"] if n["kind"] == "imported"] == [3]


def test_dry_run_writes_nothing(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    [result] = run_json(cli, "claude-code", "--dry-run")["sources"]
    assert result["imported"] == 4 and result["dry_run"] is True
    assert not paths.db.exists()  # not even created
    text = cli("import", "claude-code", "--dry-run")
    assert "4 calls would be imported" in text.stdout and text.stdout.rstrip().endswith("Dry run: nothing was written.")
    run_json(cli, "claude-code", "--since", "2025-10-03")
    before = paths.db.read_bytes(), len(rows(paths.db))
    [result] = run_json(cli, "claude-code", "--dry-run")["sources"]
    assert (result["imported"], result["already_imported"]) == (3, 1)
    assert (paths.db.read_bytes(), len(rows(paths.db))) == before


def test_since_and_calls_still_being_written(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    projects = claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    just_now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    write_jsonl(projects / "-work-acme-app" / "live.jsonl", [
        claude_assistant("live", WORKSPACE_CWD, just_now, "msg_01L", "req_011L", output_tokens=1)])
    [result] = run_json(cli, "claude-code", "--since", "2025-10-03")["sources"]
    assert (result["imported"], result["before_since"], result["recent"]) == (1, 3, 1)
    assert [r["provider_request_id"] for r in rows(paths.db)] == ["msg_01D"]
    text = cli("import", "claude-code")
    assert "1 call from the last 10 minutes left for the next run" in text.stdout


def test_claude_config_dir_and_path(cli, paths, config, user_home: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    claude_logs(tmp_path / "elsewhere", git_repo(tmp_path / "src" / "widget"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path / 'elsewhere' / '.claude'}, {tmp_path / 'none'}")
    [result] = run_json(cli, "claude-code", "--dry-run")["sources"]
    assert result["imported"] == 4
    assert result["locations"] == [str(tmp_path / "elsewhere/.claude/projects"), str(tmp_path / "none/projects")]
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    [result] = run_json(cli, "claude-code", "--dry-run", "--path", str(tmp_path / "elsewhere" / ".claude"))["sources"]
    assert result["imported"] == 4 and result["files"] == 3


def test_billing_option_and_changing_it_later(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    [result] = run_json(cli, "claude-code", "--billing", "subscription")["sources"]
    assert (result["billing"], result["billing_basis"]) == ("subscription", "option")
    assert json.loads(cli("report", "--since", "2025-10-01", "--json").stdout)["totals"]["cost_usd"] == "0.000000000"
    [result] = run_json(cli, "claude-code", "--billing", "api")["sources"]
    assert (result["imported"], result["rebilled"]) == (0, 4)
    assert {r["billing"] for r in rows(paths.db)} == {"api"}
    report = json.loads(cli("report", "--since", "2025-10-01", "--json").stdout)
    assert report["totals"]["subscription_calls"] == 0 and report["totals"]["cost_usd"] == "0.035859000"


def test_unreadable_input_is_counted_never_a_traceback(cli, paths, config, user_home: Path) -> None:
    projects = user_home / ".claude" / "projects" / "-x"
    write_jsonl(projects / "bad.jsonl", [
        '{"type":"assistant","message":{"id":"msg_1","usage":{"input_tokens":"many","output_tokens":1}},'
        '"timestamp":"2025-10-01T00:00:00Z"}',
        '{"type":"assistant","message":{"id":"msg_2","usage":{"input_tokens":1,"output_tokens":1}},'
        '"timestamp":"yesterday"}',
        '{"type":"assistant","message":{"id":"msg_3","usage":[1,2]},"timestamp":"2025-10-01T00:00:00Z"}',
        '["usage"]',
        "\x00\x01 binary",
        '{"type":"assistant","message":{"id":"msg_4","model":"claude-sonnet-4-5","usage":{"input_tokens":1,'
        '"output_tokens":2}},"timestamp":"2025-10-01T00:00:00Z"}',
    ])
    (projects / "gone.jsonl").symlink_to(projects / "nowhere")
    [result] = run_json(cli, "claude-code")["sources"]
    assert (result["imported"], result["unreadable_lines"], result["unreadable_files"]) == (1, 5, 1)
    assert "gone.jsonl" in result["problems"][0]


def test_sources_that_do_not_exist(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    unknown = cli("import", "cursor")
    assert unknown.exit_code == 2 and "no importer named 'cursor'; known: claude-code, codex" in unknown.stderr
    missing = cli("import", "codex")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (f"halton-meter: error: no Codex logs found at {user_home}/.codex/sessions or "
                                      f"{user_home}/.codex/archived_sessions; pass --path DIR where they are")
    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    everything = cli("import", "all")
    assert everything.exit_code == 0, everything.stderr
    assert everything.stdout.splitlines()[0].startswith("claude-code: 3 files read · 4 calls imported")
    assert f"codex: no logs found at {user_home}/.codex/sessions" in everything.stdout
    assert cli("import", "all", "codex").exit_code == 2
    assert cli("import", "all", "--path", str(tmp_path)).exit_code == 2
    assert cli("import").exit_code == 2


# ---- Codex ---------------------------------------------------------------------------------------------------


def test_codex_import(cli, paths, config, user_home: Path, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "src" / "widget")
    codex_logs(user_home, str(repo))
    [result] = run_json(cli, "codex")["sources"]
    assert {k: result[k] for k in ("files", "calls_found", "imported", "duplicates", "unreadable_lines",
                                   "billing", "billing_basis")} == {
        "files": 2, "calls_found": 3, "imported": 3,
        "duplicates": 3,  # the event written twice, and the fork's replay of both calls
        "unreadable_lines": 0, "billing": "subscription", "billing_basis": "default"}
    stored = rows(paths.db)
    assert [r["output_tokens"] for r in stored] == [623, 300, 200]
    first = stored[0]
    assert (first["input_tokens"], first["cache_read_tokens"], first["output_tokens"], first["reasoning_tokens"]) == \
        (12_127 - 6_912, 6_912, 623, 454)
    assert (first["provider"], first["client"], first["billing"], first["model"]) == \
        ("codex", "codex", "subscription", "gpt-5-codex")
    assert (first["project"], first["branch"], first["repo"], first["started_at"]) == \
        ("widget", "main", "widget", "2025-10-04T10:00:08.541000Z")
    # gpt-5 list prices per million tokens: $1.25 input, $0.125 cached input, $10 output (reasoning included).
    assert first["cost_nanos"] == round((5_215 * 1.25 + 6_912 * 0.125 + 623 * 10) * 1_000) == 13_612_750
    assert first["provider_request_id"] is None
    assert_no_text_stored(paths.db)
    [again] = run_json(cli, "codex")["sources"]
    assert (again["imported"], again["already_imported"]) == (0, 3)


def test_a_codex_call_the_meter_recorded_matches_by_tokens_and_time(cli, paths, config, user_home: Path,
                                                                    tmp_path: Path) -> None:
    codex_logs(user_home, str(tmp_path / "somewhere"))
    migrate(paths.db)
    writer = Writer(paths.db).start()
    base = dict(provider="codex", endpoint_kind="responses", host="chatgpt.com", method="POST",
                path="/backend-api/codex/responses", model="gpt-5-codex", complete=True, billable=True,
                usage_reported=True, price_provider_id="openai", billing="subscription", client="codex",
                project="p", project_source="cwd")
    # The second call, metered live: it started 80 s before Codex logged its tokens.
    assert writer.submit(CallRecord(id=str(uuid.uuid4()), started_at="2025-10-04T10:00:10.000000Z",
                                    input_tokens=2_000, cache_read_tokens=12_000, output_tokens=300,
                                    provider_request_id="resp_0a1b", **base))
    # Same tokens as the third call, but a day away from it: another call.
    assert writer.submit(CallRecord(id=str(uuid.uuid4()), started_at="2025-10-06T08:02:00.000000Z",
                                    input_tokens=1_000, cache_read_tokens=14_000, output_tokens=200, **base))
    assert writer.close(timeout=10)
    [result] = run_json(cli, "codex")["sources"]
    assert (result["imported"], result["already_metered"], result["billing_basis"]) == (2, 1, "meter")
    assert sorted(r["output_tokens"] for r in rows(paths.db, "source = 'import'")) == [200, 623]


# ---- the pieces ---------------------------------------------------------------------------------------------


def test_importers_are_plugins() -> None:
    from halton_meter.host import PluginHost

    host = PluginHost().load(entry_points=False)
    importers = host.registries.importers
    assert importers.ids() == ["import.claude-code", "import.codex"]
    assert [i.name for i in importers] == ["claude-code", "codex"]
    assert host.plugins["importer.codex"].provides == {"importers": ["import.codex"]}


def test_a_third_party_importer_is_used_by_the_command(cli, paths, config, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An importer registered through the hook gets the same treatment: attribution, pricing, idempotence."""
    from halton_meter import hookimpl
    from halton_meter.host import PluginHost
    from halton_meter.types import ImportedCall, Importer, Usage

    class Tally(Importer):
        id, name, title, provider, endpoint_kind = "import.tally", "tally", "Tally", "anthropic", "messages"
        price_provider_id = "anthropic"

        def default_locations(self, environ, home):
            return [tmp_path / "tally"]

        def files(self, location):
            return sorted(location.glob("*.log"))

        def read(self, files, stats: ImportStats):
            for path in files:
                stats.files += 1
                yield ImportedCall(key=f"tally:{path.stem}", started_at="2025-10-01T00:00:00.000000Z",
                                   usage=Usage(input_tokens=100_000), model="claude-sonnet-4-5",
                                   cwd=str(tmp_path / "repo-x"))

    class Plugin:
        @hookimpl
        def halton_register_importers(self, register):
            register(Tally())

    (tmp_path / "tally").mkdir()
    (tmp_path / "tally" / "one.log").write_text("")
    load = PluginHost.load

    def load_with_tally(self, *args, **kwargs):
        load(self, *args, **kwargs)
        self.register_object(Plugin(), "tally")
        return self

    monkeypatch.setattr(PluginHost, "load", load_with_tally)
    [result] = run_json(cli, "tally")["sources"]
    assert result["imported"] == 1 and result["cost_usd"] == "0.300000000"
    assert rows(paths.db)[0]["project"] == "repo-x"
    assert run_json(cli, "tally")["sources"][0]["already_imported"] == 1


def test_migration_9_marks_earlier_rows_as_metered(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    for version in range(1, 9):
        for statement in MIGRATIONS.get(version, []):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 8")
    conn.execute(
        "INSERT INTO calls (id, started_at, recorded_at, provider, endpoint_kind, host, method, path, streamed,"
        " complete, billable, usage_reported, priced, project, project_source, provider_request_id)"
        " VALUES ('old', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 'anthropic', 'messages',"
        " 'api.anthropic.com', 'POST', '/v1/messages', 0, 1, 1, 1, 1, 'p', 'cwd', 'msg_old')")
    conn.close()
    migrate(db)
    [row] = rows(db)
    assert (row["source"], row["import_key"]) == ("proxy", None)
    conn = sqlite3.connect(db)
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM calls AS X WHERE X.source = 'import' AND X.started_at >= '2026'"))
    conn.close()
    assert "calls_imported_started_at" in plan


def test_codex_running_totals_alone_give_each_call(tmp_path: Path) -> None:
    """Logs that carry only `total_token_usage`: a call is what the totals grew by; totals that did not move
    are the same call again."""
    from halton_meter_plugins.importers.codex import CodexImporter

    one, two = usage(1_000, 0, 100, 0), usage(3_000, 1_000, 150, 20)
    path = write_jsonl(tmp_path / "rollout.jsonl", [
        {"timestamp": "2025-10-04T10:00:00Z", "type": "turn_context", "payload": {"model": "gpt-5", "cwd": "/w"}},
        token_count("2025-10-04T10:00:01Z", one, None),
        token_count("2025-10-04T10:00:02Z", one, None),
        token_count("2025-10-04T10:00:03Z", two, None),
        {"timestamp": "2025-10-04T10:00:04Z", "type": "event_msg",
         "payload": {"type": "token_count", "info": {"total_token_usage": {"input_tokens": "x"}}}},
    ])
    stats = ImportStats()
    calls = list(CodexImporter().read([path], stats))
    assert [(c.usage.input_tokens, c.usage.cache_read_tokens, c.usage.output_tokens, c.model) for c in calls] == [
        (1_000, 0, 100, "gpt-5"), (1_000, 1_000, 50, "gpt-5")]
    assert (stats.duplicates, stats.unreadable_lines, stats.files) == (1, 1, 1)


def test_claude_code_lines_without_the_flat_cache_field_or_a_message_id(tmp_path: Path) -> None:
    from halton_meter_plugins.importers.claude_code import ClaudeCodeImporter

    line = claude_assistant("s", "/w", "2025-10-02T09:00:00Z", "msg_X", "req_X", cache_5m=30, cache_1h=40)
    del line["message"]["usage"]["cache_creation_input_tokens"]
    no_id = claude_assistant("s", "/w", "2025-10-02T09:00:01Z", "", "req_Y", output_tokens=7)
    path = write_jsonl(tmp_path / "s.jsonl", [line, no_id])
    [first, second] = ClaudeCodeImporter().read([path], ImportStats())
    assert (first.usage.cache_write_tokens, first.usage.cache_write_1h_tokens) == (70, 40)
    assert (second.key, second.request_ids) == ("claude-code:req:req_Y", ("req_Y",))


def test_an_import_waits_for_the_meters_writer_and_says_so_when_it_cannot(
        cli, paths, config, user_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from halton_meter.store import imports

    claude_logs(user_home, git_repo(tmp_path / "src" / "widget"))
    migrate(paths.db)
    blocker = sqlite3.connect(paths.db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the meter's writer, mid-transaction
    release = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        [result] = run_json(cli, "claude-code")["sources"]
    finally:
        release.join()
    assert result["imported"] == 4

    def impatient(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, timeout=0.05)
        conn.execute("PRAGMA busy_timeout = 50")
        return conn

    monkeypatch.setattr(imports, "connect", impatient)
    monkeypatch.setattr(imports, "BUSY_ATTEMPTS", 2)
    (user_home / ".claude" / "projects" / "-work-acme-app" / "more.jsonl").write_text(json.dumps(
        claude_assistant("m", WORKSPACE_CWD, "2025-10-05T00:00:00Z", "msg_01M", "req_011M")) + "\n")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        refused = cli("import", "claude-code")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert refused.exit_code == 3
    assert refused.stderr.startswith("halton-meter: error: cannot write imported calls: database is locked; what "
                                     "was imported so far is kept, and running the import again carries on")
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
