"""Attribution end to end: real client processes, in real git repositories, through a real meter.

Each case runs a child Python process (httpx, through the proxy `halton-meter run` would set) in a
temporary directory and checks the row that lands: project, its source, repository, branch, tool family,
and the credential fingerprint. Rows are told apart by the model each child asks for.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess, meter_env

pytestmark = pytest.mark.e2e

CHILD = textwrap.dedent("""
    import json, os, ssl, sys, httpx
    model, key = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    for i in range(count):
        with httpx.Client(verify=ctx, timeout=30) as client:  # a new connection per call
            r = client.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": key},
                            json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            r.raise_for_status()
    print("ok")
""")


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def make_repo(path: Path, branch: str = "main") -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", branch, cwd=path)
    git("commit", "-q", "--allow-empty", "-m", "first", cwd=path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    def echo(request) -> Reply:  # answers with the model asked for; "cached" models read 50k cached tokens
        model = json.loads(request.body)["model"]
        cache = 50_000 if "cached" in model else 0
        return Reply(body=bodies.anthropic_message(model=model.removesuffix("-cached"), input_tokens=10,
                                                   output_tokens=2, cache_read=cache))

    with FakeProvider() as provider:
        provider.add("POST", "/v1/messages", echo)
        provider.add("POST", "/v1/chat/completions",
                     Reply(body=bodies.openai_chat(prompt_tokens=2000, completion_tokens=300)))
        yield provider


@pytest.fixture(scope="module")
def attr_meter(fake: FakeProvider, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    config = f'[projects]\n"{workspace}/clients/*" = "client-work"\n'
    with MeterProcess.start(tmp_path_factory.mktemp("home") / "home", fake, extra_config=config) as meter:
        yield meter


def child_env(meter: MeterProcess, **extra: str) -> dict[str, str]:
    env = meter.env()
    env.pop("HALTON_METER_PROJECT", None)
    env.update(extra)
    return env


def call_from(meter: MeterProcess, cwd: Path, model: str, key: str = "sk-ant-test-key-0001", count: int = 1,
              env: dict[str, str] | None = None, ua: str | None = None) -> None:
    code = CHILD if ua is None else CHILD.replace("httpx.Client(", f"httpx.Client(headers={{'user-agent': {ua!r}}}, ")
    result = subprocess.run([sys.executable, "-c", code, model, key, str(count)], cwd=cwd,
                            env=env or child_env(meter), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def row_for(meter: MeterProcess, model: str, count: int = 1, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [r for r in meter.rows() if r["model_requested"] == model]
        if len(rows) >= count:
            assert len(rows) == count, rows
            return rows[-1]
        time.sleep(0.05)
    raise AssertionError(f"no row for {model} within {timeout}s:\n{meter.log()[-3000:]}")


def test_git_repository_names_the_project_and_the_branch_is_recorded(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "alpha-service", branch="feature/login")
    (repo / "src" / "deep").mkdir(parents=True)
    call_from(attr_meter, repo / "src" / "deep", "m-git")
    row = row_for(attr_meter, "m-git")
    assert (row["project"], row["project_source"]) == ("alpha-service", "git")
    assert (row["repo"], row["branch"]) == ("alpha-service", "feature/login")
    assert row["client"] == "httpx" and row["user_agent"].startswith("python-httpx/")
    assert row["client_process"].startswith("python")


def test_project_file_wins_over_git_and_branch_is_still_recorded(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "monorepo")
    (repo / "services" / "billing" / "api").mkdir(parents=True)
    (repo / "services" / "billing" / ".halton-meter.toml").write_text('project = "billing"\n')
    call_from(attr_meter, repo / "services" / "billing" / "api", "m-file")
    row = row_for(attr_meter, "m-file")
    assert (row["project"], row["project_source"]) == ("billing", "file")
    assert (row["repo"], row["branch"]) == ("monorepo", "main")


def test_an_invalid_project_file_is_skipped_for_the_next_source(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "broken-file-repo")
    (repo / ".halton-meter.toml").write_text("project: oops\n")
    call_from(attr_meter, repo, "m-badfile")
    row = row_for(attr_meter, "m-badfile")
    assert (row["project"], row["project_source"]) == ("broken-file-repo", "git")


def test_linked_worktree_is_named_after_its_repository(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "gamma")
    worktree = workspace / "gamma-hotfix"
    git("worktree", "add", "-q", "-b", "hotfix/crash", str(worktree), cwd=repo)
    call_from(attr_meter, worktree, "m-worktree")
    row = row_for(attr_meter, "m-worktree")
    assert (row["project"], row["project_source"]) == ("gamma", "git")
    assert (row["repo"], row["branch"]) == ("gamma", "hotfix/crash")


def test_detached_head_records_the_commit(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "delta")
    sha = git("rev-parse", "HEAD", cwd=repo)
    git("checkout", "-q", "--detach", cwd=repo)
    call_from(attr_meter, repo, "m-detached")
    row = row_for(attr_meter, "m-detached")
    assert (row["project"], row["branch"]) == ("delta", f"detached@{sha[:7]}")


def test_plain_directory_falls_back_to_its_name(attr_meter, workspace) -> None:
    plain = workspace / "scratch-notes"
    plain.mkdir()
    call_from(attr_meter, plain, "m-cwd")
    row = row_for(attr_meter, "m-cwd")
    assert (row["project"], row["project_source"], row["repo"], row["branch"]) == ("scratch-notes", "cwd", None, None)


def test_config_rules_win_over_git(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "clients" / "initech")
    call_from(attr_meter, repo, "m-config")
    row = row_for(attr_meter, "m-config")
    assert (row["project"], row["project_source"], row["repo"]) == ("client-work", "config", "initech")


def test_environment_variable_wins_over_project_file(attr_meter, workspace) -> None:
    repo = make_repo(workspace / "epsilon")
    (repo / ".halton-meter.toml").write_text('project = "from-file"\n')
    call_from(attr_meter, repo, "m-env", env=child_env(attr_meter, HALTON_METER_PROJECT="Research & Dev"))
    row = row_for(attr_meter, "m-env")
    assert (row["project"], row["project_source"]) == ("Research & Dev", "env")


def test_run_project_reaches_grandchildren_through_the_proxy_url_and_the_environment(attr_meter, fake,
                                                                                    workspace) -> None:
    repo = make_repo(workspace / "zeta")
    script = workspace / "child.py"
    script.write_text(CHILD)
    # `run --project` → sh → python: the proxy URL carries the project (source `run`) ...
    shell = f'"{sys.executable}" "{script}" m-run sk-ant-test-key-0001'
    attr_meter.cli("run", "--project", "Acme API", "--", "sh", "-c", shell, cwd=repo)
    row = row_for(attr_meter, "m-run")
    assert (row["project"], row["project_source"], row["repo"]) == ("Acme API", "run", "zeta")
    # ... and a grandchild that rebuilt its proxy URL without credentials still has the environment.
    port = attr_meter.edge_port
    plain = (f'HTTPS_PROXY=http://127.0.0.1:{port} https_proxy=http://127.0.0.1:{port} '
             f'"{sys.executable}" "{script}" m-run-env sk-ant-test-key-0001')
    attr_meter.cli("run", "--project", "Acme API", "--", "sh", "-c", plain, cwd=repo)
    row = row_for(attr_meter, "m-run-env")
    assert (row["project"], row["project_source"]) == ("Acme API", "env")
    # The proxy credentials went no further than the edge.
    assert fake.requests and all(r.header("proxy-authorization") is None for r in fake.requests)


def test_run_rejects_a_bad_project_name(attr_meter) -> None:
    result = attr_meter.cli("run", "--project", "a/b", "--", "true", check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--project 'a/b'" in result.stderr


def test_key_fingerprints_tell_keys_apart_without_revealing_them(attr_meter, workspace) -> None:
    where = workspace / "keys-dir"
    where.mkdir()
    key_a, key_b = "sk-ant-api03-KEYA-aaaaaaaaaaaaaaaaaaaa", "sk-ant-api03-KEYB-bbbbbbbbbbbbbbbbbbbb"
    call_from(attr_meter, where, "m-key-a", key=key_a)
    call_from(attr_meter, where, "m-key-a2", key=key_a)
    call_from(attr_meter, where, "m-key-b", key=key_b)
    fp_a, fp_a2, fp_b = (row_for(attr_meter, m)["key_fingerprint"] for m in ("m-key-a", "m-key-a2", "m-key-b"))
    assert re.fullmatch(r"[0-9a-f]{8}", fp_a) and fp_a == fp_a2 and fp_a != fp_b
    # Keyed: the fingerprint is not a plain hash of the key anyone could compute.
    import hashlib

    for key, fp in ((key_a, fp_a), (key_b, fp_b)):
        assert fp not in hashlib.sha256(key.encode()).hexdigest() and fp not in key
    # The user can compute a key's fingerprint to name it in [keys].
    shown = subprocess.run([sys.executable, "-m", "halton_meter", "key-fingerprint"], input=key_a + "\n",
                           env=meter_env(attr_meter.home), capture_output=True, text=True, timeout=60)
    assert (shown.returncode, shown.stdout.strip()) == (0, fp_a), shown.stderr
    bearer = subprocess.run([sys.executable, "-m", "halton_meter", "key-fingerprint"], input=f"Bearer {key_b}",
                            env=meter_env(attr_meter.home), capture_output=True, text=True, timeout=60)
    assert bearer.stdout.strip() == fp_b
    empty = subprocess.run([sys.executable, "-m", "halton_meter", "key-fingerprint"], input="",
                           env=meter_env(attr_meter.home), capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1
    secret = attr_meter.home / "fingerprint.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    data = b"".join(p.read_bytes() for p in attr_meter.files_at_rest() if p.is_file() and p != secret)
    assert key_a.encode() not in data and b"KEYA" not in data


# --------------------------------------------------------------------------------------------------
# Under load: 5 processes in 5 repositories, ~100 calls/s, a new connection per call
# --------------------------------------------------------------------------------------------------

LOAD_CHILD = textwrap.dedent("""
    import os, ssl, sys, time, httpx
    model, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    sent = failed = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds and sent < rate * seconds:
        due = start + sent / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        with httpx.Client(verify=ctx, timeout=30) as client:
            r = client.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": "sk-ant-load"},
                            json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        sent += 1
        failed += r.status_code != 200
    print(sent, failed)
""")


def _load(meter: MeterProcess, workspace: Path, seconds: float, total_rate: float) -> None:
    repos = [make_repo(workspace / f"load-{seconds:g}-{i}-repo") for i in range(5)]
    procs = [subprocess.Popen([sys.executable, "-c", LOAD_CHILD, f"load-{seconds:g}-{i}", str(total_rate / 5),
                               str(seconds)], cwd=repo, env=child_env(meter), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, repo in enumerate(repos)]
    sent_total = 0
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err
        sent, failed = map(int, out.split())
        assert failed == 0
        sent_total += sent
    deadline = time.monotonic() + 60
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [r for r in meter.rows() if r["model_requested"].startswith(f"load-{seconds:g}-")]
        if len(rows) >= sent_total:
            break
        time.sleep(0.2)
    assert len(rows) == sent_total
    wrong = [r for r in rows if r["project"] != r["model_requested"] + "-repo"]
    right = sent_total - len(wrong)
    assert right / sent_total >= 0.999, (right, sent_total, wrong[:3])
    assert all(r["project_source"] == "git" and r["branch"] == "main" for r in rows if r not in wrong)


def test_attribution_holds_at_100_calls_a_second_from_five_repositories(attr_meter, workspace) -> None:
    _load(attr_meter, workspace, seconds=3, total_rate=100)


@pytest.mark.slow
def test_attribution_holds_for_a_minute_at_100_calls_a_second(attr_meter, workspace) -> None:
    _load(attr_meter, workspace, seconds=60, total_rate=100)


# --------------------------------------------------------------------------------------------------
# doctor names a bad project file
# --------------------------------------------------------------------------------------------------


def test_doctor_names_an_invalid_project_file_from_the_current_directory(attr_meter, workspace) -> None:
    bad = workspace / "doctor-bad"
    bad.mkdir()
    (bad / ".halton-meter.toml").write_text('project = ""\n')
    result = subprocess.run([sys.executable, "-m", "halton_meter", "doctor", "--only", "check.project", "--json"],
                            cwd=bad, env=meter_env(attr_meter.home), capture_output=True, text=True, timeout=60)
    data = json.loads(result.stdout)
    [check] = [c for c in data["checks"] if c["id"] == "check.project"]
    assert check["status"] == "fail" and str(bad / ".halton-meter.toml") in check["summary"]
    good = workspace / "doctor-good"
    good.mkdir()
    (good / ".halton-meter.toml").write_text('project = "good one"\n')
    result = subprocess.run([sys.executable, "-m", "halton_meter", "doctor", "--only", "check.project", "--json"],
                            cwd=good, env=meter_env(attr_meter.home), capture_output=True, text=True, timeout=60)
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["id"] == "check.project"]
    assert check["status"] == "ok" and "'good one' (file)" in check["summary"]


def test_rows_never_hold_the_proxy_credentials(attr_meter) -> None:
    db = attr_meter.home / "db.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "project:Acme" not in dump and "cHJvamVjdDpBY21l" not in dump  # base64 of "project:Acme"




# --------------------------------------------------------------------------------------------------
# Done when: three repositories, two tools, one command
# --------------------------------------------------------------------------------------------------

OPENAI_CHILD = textwrap.dedent("""
    import openai
    client = openai.OpenAI(api_key="sk-proj-acceptance", max_retries=0)
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    print(r.usage.prompt_tokens)
""")


def test_this_weeks_cost_per_project_tool_and_branch_adds_up(attr_meter, workspace) -> None:
    web = make_repo(workspace / "acc-web", branch="main")
    api = make_repo(workspace / "acc-api", branch="feature/search")
    ml = make_repo(workspace / "acc-ml", branch="main")
    claude = "claude-cli/2.0.14 (external, cli)"
    # Claude Code (cache-heavy) in two repositories, the OpenAI SDK in two, one call to an unpriced model.
    call_from(attr_meter, web, "claude-sonnet-4-5-cached", ua=claude, count=2)
    call_from(attr_meter, api, "claude-sonnet-4-5-cached", ua=claude)
    call_from(attr_meter, ml, "claude-mystery-model-x", ua=claude)
    for repo in (api, ml):
        result = subprocess.run([sys.executable, "-c", OPENAI_CHILD], cwd=repo, env=child_env(attr_meter),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    projects = ["acc-web", "acc-api", "acc-ml"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len([r for r in attr_meter.rows() if r["project"] in projects]) < 6:
        time.sleep(0.05)
    args = ["report", "--week", "--by", "project", "--by", "client", "--by", "branch"]
    for name in projects:
        args += ["--project", name]
    data = json.loads(attr_meter.cli(*args, "--json").stdout)
    rows = [r for r in attr_meter.rows() if r["project"] in projects]
    assert len(rows) == 6 and data["totals"]["calls"] == 6
    leaves = {(g["project"], g["client"], g["branch"]): g for g in data["groups"]}
    assert set(leaves) == {("acc-web", "claude-code", "main"), ("acc-api", "claude-code", "feature/search"),
                           ("acc-ml", "claude-code", "main"), ("acc-api", "openai-sdk-python", "feature/search"),
                           ("acc-ml", "openai-sdk-python", "main")}
    # The numbers add up: every leaf against the rows, and the leaves against the totals.
    from decimal import Decimal

    for (project, client, branch), group in leaves.items():
        mine = [r for r in rows if (r["project"], r["client"], r["branch"]) == (project, client, branch)]
        assert group["calls"] == len(mine)
        priced = sum(r["cost_nanos"] or 0 for r in mine)
        assert Decimal(group["cost_usd"]) == Decimal(priced).scaleb(-9)
        assert Decimal(group["cache_savings_usd"]) == Decimal(sum(r["cache_savings_nanos"] or 0 for r in mine)).scaleb(-9)
    for field in ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "unpriced_calls"):
        assert sum(g[field] for g in leaves.values()) == data["totals"][field], field
    assert sum(Decimal(g["cost_usd"]) for g in leaves.values()) == Decimal(data["totals"]["cost_usd"])
    # Cache savings are there (Sonnet 4.5: cache reads at $0.30 instead of $3 per MTok), and the unpriced call
    # is called out rather than counted as $0.
    assert Decimal(leaves[("acc-web", "claude-code", "main")]["cache_savings_usd"]) == Decimal("0.27")
    assert data["totals"]["unpriced_calls"] == 1 and data["totals"]["cost_complete"] is False
    table = attr_meter.cli(*args, COLUMNS="80").stdout
    assert "unpriced" in table and "feature/search" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_sigv4_requests_fingerprint_by_access_key_id_not_by_signature() -> None:
    from halton_meter.attribution.keys import credential_of

    def signed(key: str, date: str, signature: str) -> dict[str, str]:
        return {"authorization": f"AWS4-HMAC-SHA256 Credential={key}/{date}/us-east-1/bedrock/aws4_request, "
                                 f"SignedHeaders=content-type;host;x-amz-date, Signature={signature}",
                "x-amz-security-token": "FwoGZXIvYXdzEXAMPLE"}

    first = credential_of(signed("AKIAEXAMPLE1", "20261203", "ab" * 32))
    again = credential_of(signed("AKIAEXAMPLE1", "20261204", "cd" * 32))
    other = credential_of(signed("AKIAEXAMPLE2", "20261203", "ab" * 32))
    assert first == again == "aws:AKIAEXAMPLE1" and other == "aws:AKIAEXAMPLE2"
    # A SigV4 header without a Credential falls back to the whole value, as any other scheme.
    assert credential_of({"authorization": "AWS4-HMAC-SHA256 Signature=x"}) == "AWS4-HMAC-SHA256 Signature=x"
