"""The dashboard in a real headless Chromium (Playwright) against a real `halton-meter serve`.

One meter and one browser for the module: a few metered calls through the fake provider, then the page is
checked against the CLI's own JSON (`report --json`, `calls --json`), in two time zones and two viewports,
with the network closed (every request that is not for the meter's loopback API is refused and recorded)
and no console error, page error or CSP violation allowed.

Skipped, with the reason, only when Chromium (/usr/bin/chromium, or $HALTON_METER_CHROMIUM) or the
`playwright` package is missing; under CI (`CI` set) a missing browser fails instead.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from reportkit import call as past_call
from reportkit import write

from halton_meter.clock import utc_stamp
from halton_meter.paths import Paths
from halton_meter.serve.api import read_token
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.types import PUBLIC_FIELDS

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("HALTON_METER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
README_SHOT = ROOT / "docs" / "img" / "dashboard-overview.png"
ZONES = ("Asia/Kolkata", "America/Los_Angeles")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PROJECTS = ("billing-api", "web-shop")
# Report CSP violations as console errors too (Chromium logs most, this catches the rest).
CSP_PROBE = ("document.addEventListener('securitypolicyviolation', (e) => "
             "console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium, or set HALTON_METER_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (it is in the test extra: pip install -e '.[test]')"
    return None


# ---- the meter and its calls ----------------------------------------------------------------------


def metered_call(meter: MeterProcess, fake: FakeProvider, project: str, *, model: str = "claude-sonnet-4-5",
                 input_tokens: int = 1000, output_tokens: int = 200) -> None:
    """One Anthropic call through the meter's proxy, attributed to `project` by the proxy credentials
    (what `halton-meter run --project` sends)."""
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(
        input_tokens=input_tokens, output_tokens=output_tokens, cache_read=300)))
    proxy = f"http://project:{project}@127.0.0.1:{meter.edge_port}"
    with httpx.Client(proxy=proxy, verify=meter.ssl_context(fake.ca_pem), trust_env=False, timeout=15) as client:
        reply = client.post("https://api.anthropic.com/v1/messages",
                            headers={"x-api-key": "sk-ant-api03-CANARYKEY-dashboard", "anthropic-version": "2023-06-01"},
                            json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text


def history() -> list[Any]:
    """Four weeks of earlier calls (as the meter's writer commits them), so the charts have days to stack."""
    now = dt.datetime.now(dt.UTC)
    models = (("claude-sonnet-4-5-20250929", 3, 15), ("claude-haiku-4-5-20251001", 1, 5), ("gpt-5", 1.25, 10))
    records = []
    for day in range(1, 29):
        for n in range(2 + day % 2):
            model, price_in, price_out = models[(day + n) % 3]
            inp, out = 2000 + 700 * ((day * 7 + n) % 9), 300 + 90 * ((day + n * 5) % 7)
            started = now - dt.timedelta(days=day, hours=3 * n + day % 5)
            records.append(past_call(
                started_at=utc_stamp(started), ended_at=utc_stamp(started + dt.timedelta(seconds=2 + n)),
                model=model, model_requested=model, provider="openai" if model == "gpt-5" else "anthropic",
                project=(*PROJECTS, "data-pipeline")[(day + n) % 3], client=("claude-code", "codex", "aider")[n % 3],
                branch=("main", "feature/invoices")[day % 2], input_tokens=inp, output_tokens=out,
                cost_nanos=int((inp * price_in + out * price_out) * 1000), latency_ms=900.0 + 250 * n + 40 * day))
    # what the notes are for: a call on a subscription (list price, never added to the cost) and an unpriced one
    started = now - dt.timedelta(hours=30)
    records.append(past_call(started_at=utc_stamp(started), ended_at=utc_stamp(started + dt.timedelta(seconds=3)),
                             billing="subscription", client="claude-code", project=PROJECTS[0],
                             cost_nanos=41_000_000))
    records.append(past_call(started_at=utc_stamp(started + dt.timedelta(minutes=5)), model="mystery-model-9",
                             model_requested="mystery-model-9", priced=False, cost_nanos=None, project=PROJECTS[1]))
    return records


@pytest.fixture(scope="module")
def meter(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    """A real `serve` over a database that already holds four weeks of calls."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    home.mkdir(parents=True, mode=0o700)
    write(Paths(home).db, history())
    with MeterProcess.start(home, fake_provider) as running:
        yield running


@pytest.fixture(scope="module")
def seeded(meter: MeterProcess, fake_provider: FakeProvider) -> MeterProcess:
    calls = [(PROJECTS[0], "claude-sonnet-4-5", 1200, 340), (PROJECTS[0], "claude-haiku-4-5", 800, 90),
             (PROJECTS[1], "claude-sonnet-4-5", 5000, 1000), (PROJECTS[1], "claude-opus-4-1", 300, 40)]
    for project, model, inp, out in calls:
        metered_call(meter, fake_provider, project, model=model, input_tokens=inp, output_tokens=out)
    meter.wait_for_calls(len(calls), timeout=20)
    return meter


def cli_json(meter: MeterProcess, *args: str, tz: str) -> Any:
    return json.loads(meter.cli(*args, "--json", TZ=tz).stdout)


def login_url(meter: MeterProcess) -> str:
    """A one-time sign-in URL: asked from the running API with the bearer token (what `halton-meter
    dashboard` does); falls back to parsing `halton-meter dashboard --no-open`."""
    token = read_token(Paths(meter.home))
    reply = httpx.post(f"http://127.0.0.1:{meter.api_port}/v1/login-codes", headers={"authorization": f"Bearer {token}"},
                       trust_env=False, timeout=10)
    if reply.status_code < 300:
        data = reply.json()
        url = data.get("url") or next((v for v in data.values() if isinstance(v, str) and v.startswith("http")), None)
        if url:
            return str(url)
    found = re.search(r"http://\S+", meter.cli("dashboard", "--no-open").stdout)
    assert found, "neither POST /v1/login-codes nor `dashboard --no-open` gave a sign-in URL"
    return found.group(0)


# ---- the browser ------------------------------------------------------------------------------------


class Watch:
    """Console errors, page errors and requests that would leave the machine, for every page of a context."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.errors: list[str] = []
        self.outside: list[str] = []

    def attach(self, context: Any) -> Any:
        context.add_init_script(CSP_PROBE)
        context.route("**/*", self._route)
        context.on("page", self._page)
        return context

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/") or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _page(self, page: Any) -> None:
        page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def check(self) -> None:
        assert self.outside == [], f"requests left for other origins: {self.outside}"
        assert self.errors == [], "\n".join(self.errors)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the browser tests, but {missing}", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def origin(seeded: MeterProcess) -> str:
    return f"http://127.0.0.1:{seeded.api_port}"


@pytest.fixture(scope="module")
def session(browser: Any, seeded: MeterProcess, origin: str) -> dict[str, Any]:
    """A signed-in session (the cookie), made once through a one-time link; contexts below reuse it."""
    watch = Watch(origin)
    context = watch.attach(browser.new_context(locale="en-US", timezone_id=ZONES[0], viewport=DESKTOP))
    page = context.new_page()
    url = login_url(seeded)
    first = page.goto(url)
    assert first is not None and first.ok, f"sign-in link refused: {first and first.status}"
    assert page.url == origin + "/", page.url
    page.wait_for_selector("html[data-app=ready]", state="attached")
    state = context.storage_state()
    context.close()
    watch.check()
    return {"state": state, "url": url}


@pytest.fixture
def open_page(browser: Any, session: dict[str, Any], origin: str) -> Iterator[Any]:
    """open_page(zone=…, viewport=…, path=…) → a signed-in page; each context is checked when the test ends."""
    watches: list[tuple[Watch, Any]] = []

    def make(zone: str = ZONES[0], viewport: dict[str, int] = DESKTOP, path: str = "/", scheme: str = "light") -> Any:
        watch = Watch(origin)
        context = watch.attach(browser.new_context(storage_state=session["state"], locale="en-US", timezone_id=zone,
                                                   viewport=viewport, color_scheme=scheme))
        watches.append((watch, context))
        page = context.new_page()
        page.goto(origin + path)
        page.wait_for_selector("#periods .card[data-period=today]", state="attached")
        return page

    yield make
    for watch, context in watches:
        context.close()
        watch.check()


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top of a full-page shot
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page: Any) -> None:
    """Every panel has answered (no 'Loading…' left and the charts are drawn)."""
    page.wait_for_selector("#daily-chart svg, #daily-chart .error", timeout=10_000)
    page.wait_for_selector("#hourly-chart svg, #hourly-chart .error", timeout=10_000)
    page.wait_for_selector("#top-table tbody, #top-table caption", timeout=10_000)


def calls_ids_in_table(page: Any) -> list[str]:
    return page.eval_on_selector_all("#calls-table tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")


def wait_rows(page: Any, ids: list[str]) -> None:
    """Until the explorer shows exactly these calls, in this order (what it showed before may match a count)."""
    try:
        page.wait_for_function("ids => JSON.stringify([...document.querySelectorAll('#calls-table tbody tr[data-id]')]"
                               ".map(r => r.dataset.id)) === JSON.stringify(ids)", arg=ids, timeout=10_000)
    except Exception:  # say what it shows instead
        assert calls_ids_in_table(page) == ids
        raise


# ---- tests --------------------------------------------------------------------------------------------


def test_sign_in_link_works_once_and_only_once(browser: Any, session: dict[str, Any], origin: str) -> None:
    watch = Watch(origin)
    context = browser.new_context(locale="en-US")
    context.route("**/*", watch._route)
    try:
        page = context.new_page()
        again = page.goto(session["url"])
        assert again is not None and again.status >= 400, "a used sign-in link must be refused"
        assert not [c for c in context.cookies() if c["domain"] in ("127.0.0.1", "localhost")], \
            "a refused link must not set a session cookie"
        # without the cookie, the data endpoints refuse too
        assert page.request.get(origin + "/v1/overview").status in (401, 403)
    finally:
        context.close()
    assert watch.outside == []


def test_overview_totals_equal_report_json(open_page: Any, seeded: MeterProcess) -> None:
    zone = ZONES[0]
    page = open_page(zone=zone)
    wait_idle(page)
    today = dt.datetime.now(ZoneInfo(zone)).date()
    first = today.replace(day=1)
    last_month = (first - dt.timedelta(days=1)).replace(day=1)
    windows = {"today": ["--today"], "week": ["--week"], "month": ["--month"],
               "last_month": ["--since", last_month.isoformat(), "--until", first.isoformat()],
               "top": ["--since", "30d", "--by", "project"]}
    with ThreadPoolExecutor(len(windows)) as pool:  # each CLI run is a Python start-up: run them side by side
        reports = dict(zip(windows, pool.map(lambda args: cli_json(seeded, "report", *args, tz=zone),
                                             windows.values()), strict=True))
    top = reports.pop("top")
    for period, report in reports.items():
        totals = report["totals"]
        card = page.locator(f"#periods .card[data-period={period}]")
        assert card.locator(".cost").get_attribute("data-usd") == totals["cost_usd"], period
        assert card.locator(".calls").get_attribute("data-value") == str(totals["calls"]), period
        assert card.locator(".savings").get_attribute("data-usd") == totals["cache_savings_usd"], period
        notes = card.locator(".notes li").all_inner_texts()
        assert notes == [n["text"] for n in report["notes"]], period
    page.wait_for_selector("#verdict-badge:not([hidden])", timeout=15_000)
    path = shot(page, "overview")
    if os.environ.get("HALTON_METER_UPDATE_SCREENSHOTS") == "1":
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SHOT)
    # the top table for the default window (last 30 days) adds up to the report's totals
    assert page.locator("#top-table tfoot [data-usd]").get_attribute("data-usd") == top["totals"]["cost_usd"]
    names = page.eval_on_selector_all("#top-table tbody tr[data-name]", "rows => rows.map(r => r.dataset.name)")
    assert sorted(names) == sorted(g["project"] for g in top["groups"])
    # sortable by keyboard: Enter on the "calls" header sorts by calls, again reverses
    header = page.locator("#top-table button[data-key=calls]")
    header.focus()
    page.keyboard.press("Enter")
    assert page.locator("#top-table th:has(button[data-key=calls])").get_attribute("aria-sort") == "descending"
    page.keyboard.press("Enter")
    assert page.locator("#top-table th:has(button[data-key=calls])").get_attribute("aria-sort") == "ascending"


@pytest.mark.parametrize("zone", ZONES)
def test_days_and_hours_follow_the_browser_zone(open_page: Any, seeded: MeterProcess, zone: str) -> None:
    page = open_page(zone=zone)
    wait_idle(page)
    # Chromium names a zone by its ICU canonical id (Asia/Kolkata is Asia/Calcutta there): same rules
    label = page.locator("#tz-label").inner_text()
    now = dt.datetime.now(dt.UTC)
    assert now.astimezone(ZoneInfo(label)).utcoffset() == now.astimezone(ZoneInfo(zone)).utcoffset(), label
    today = dt.datetime.now(ZoneInfo(zone)).date()
    # the daily chart's last day is today where the browser is, labelled as that day
    last = page.locator("#daily-chart g.col").last
    assert last.get_attribute("data-date") == today.isoformat()
    title = last.locator("title").text_content() or ""
    assert title.startswith(f"{today:%a}, {today:%b} {today.day}, {today.year}"), title
    daily = cli_json(seeded, "report", "--since", "30d", "--by", "day", tz=zone)["daily"]
    dates = page.eval_on_selector_all("#daily-chart g.col", "cols => cols.map(c => c.dataset.date)")
    assert dates == [d["date"] for d in daily]
    # today's calls sit in the hours they were made in, local to the browser
    hours = set()
    for call in cli_json(seeded, "calls", "--limit", "0", tz=zone):
        started = dt.datetime.fromisoformat(call["started_at"].replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
        if started.date() == today and call["cost_usd"] not in (None, "0.000000000"):
            hours.add(f"{started.hour:02d}")
    drawn = page.eval_on_selector_all("#hourly-chart g.col",
                                      "cols => cols.filter(c => Number(c.dataset.total) > 0).map(c => c.dataset.label)")
    assert set(drawn) == hours
    # and each call's time is shown in the browser's zone
    page.click("nav a[data-view=calls]")
    page.wait_for_selector("#calls-table tbody tr[data-id]")
    newest = cli_json(seeded, "calls", "--limit", "1", tz=zone)[-1]
    first = page.locator("#calls-table tbody tr[data-id]").first
    assert first.get_attribute("data-id") == newest["id"]
    local = dt.datetime.fromisoformat(newest["started_at"].replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    assert f"{local:%b} {local.day}, {local:%I:%M:%S}" in first.locator("td").first.inner_text()


def test_filters_give_the_rows_calls_json_gives(open_page: Any, seeded: MeterProcess) -> None:
    zone = ZONES[0]
    page = open_page(zone=zone, path="/#/calls")
    page.wait_for_selector("#calls-table tbody tr[data-id]")
    everything = cli_json(seeded, "calls", "--limit", "0", tz=zone)
    newest_first = [c["id"] for c in reversed(everything)]
    assert len(newest_first) > 50
    assert calls_ids_in_table(page) == newest_first[:50]
    page.click("#load-more")
    wait_rows(page, newest_first[:100])
    page.fill("#filters input[name=project]", PROJECTS[1])
    page.click("#filters button[type=submit]")
    expected = cli_json(seeded, "calls", "--limit", "0", "--project", PROJECTS[1], tz=zone)
    want = [c["id"] for c in reversed(expected)]
    wait_rows(page, want)
    shot(page, "explorer")
    # a status: the unpriced call (billable, no known price), and only it
    page.select_option("#filters select[name=status]", "unpriced")
    page.click("#filters button[type=submit]")
    unpriced = [c["id"] for c in reversed(expected) if c["billable"] and not c["priced"] and c["billing"] != "subscription"]
    assert unpriced
    wait_rows(page, unpriced)
    assert "project=web-shop" in (page.locator("#export-csv").get_attribute("href") or "")
    assert "status=unpriced" in (page.locator("#export-csv").get_attribute("href") or "")
    page.select_option("#filters select[name=status]", "")
    # search by id: exactly that call
    page.fill("#filters input[name=q]", want[-1])
    page.click("#filters button[type=submit]")
    wait_rows(page, [want[-1]])
    page.fill("#filters input[name=q]", "")
    page.click("#filters button[type=submit]")
    wait_rows(page, want)


def test_export_links_give_the_rows_calls_json_gives(open_page: Any, seeded: MeterProcess, origin: str) -> None:
    zone = ZONES[0]
    page = open_page(zone=zone, path="/#/calls")
    page.wait_for_selector("#calls-table tbody tr[data-id]")
    page.fill("#filters input[name=project]", PROJECTS[1])
    page.click("#filters button[type=submit]")
    expected = cli_json(seeded, "calls", "--limit", "0", "--project", PROJECTS[1], tz=zone)
    want = [c["id"] for c in reversed(expected)]
    wait_rows(page, want)
    # the export links carry the same filters and give the same records
    href_json = page.locator("#export-json").get_attribute("href") or ""
    assert f"project={PROJECTS[1]}" in href_json
    exported = page.request.get(origin + href_json)
    assert exported.ok, exported.status
    data = exported.json()
    records = data["calls"] if isinstance(data, dict) else data
    assert sorted(r["id"] for r in records) == sorted(want)
    by_id = {c["id"]: c for c in expected}
    for record in records:
        assert {k: record.get(k) for k in PUBLIC_FIELDS} == by_id[record["id"]]
    # the CSV link, clicked: a download of the same rows
    with page.expect_download(timeout=10_000) as download:
        page.click("#export-csv")
    assert download.value.failure() is None, download.value.failure()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["id"] for r in rows) == sorted(want)


def test_call_detail_shows_every_field(open_page: Any, seeded: MeterProcess) -> None:
    page = open_page(path="/#/calls")
    page.wait_for_selector("#calls-table tbody tr[data-id]")
    first = page.locator("#calls-table tbody tr[data-id]").first
    call_id = first.get_attribute("data-id")
    first.locator("a").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#call-detail .field[data-field=id]")
    assert page.locator("#call-detail .field[data-field=id] dd").inner_text() == call_id
    fields = page.eval_on_selector_all("#call-detail .field", "els => els.map(e => e.dataset.field)")
    assert set(PUBLIC_FIELDS) <= set(fields)
    shot(page, "call-detail")
    page.click("#back-to-calls")
    page.wait_for_selector("#view-calls:not([hidden])")


def test_a_new_call_appears_in_the_live_tail_within_2s(open_page: Any, seeded: MeterProcess,
                                                       fake_provider: FakeProvider) -> None:
    page = open_page(path="/#/calls")
    page.wait_for_selector("#calls-table tbody tr[data-id]")
    switch = page.locator("#live-switch")
    if switch.get_attribute("aria-checked") != "true":
        switch.click()
    page.wait_for_selector("#live-switch[data-state=open]", timeout=5000)
    before = len(seeded.rows())
    shown = calls_ids_in_table(page)
    metered_call(seeded, fake_provider, "live-tail", input_tokens=50, output_tokens=5)
    done = time.monotonic()
    page.wait_for_function("ids => [...document.querySelectorAll('#calls-table tbody tr[data-id]')]"
                           ".some(r => !ids.includes(r.dataset.id))", arg=shown, timeout=2000)
    assert time.monotonic() - done < 2.0
    [row] = seeded.wait_for_calls(before + 1, timeout=5)[before:]
    first = page.locator("#calls-table tbody tr[data-id]").first
    assert first.get_attribute("data-id") == row["id"]
    assert "live-tail" in first.inner_text()
    # off means off: the switch closes the stream
    switch.click()
    assert (switch.get_attribute("aria-checked"), switch.get_attribute("data-state")) == ("false", "off")


def test_health_shows_the_status_verdict(open_page: Any, seeded: MeterProcess) -> None:
    page = open_page(path="/#/health")
    page.wait_for_selector("#health-rows li")
    status = json.loads(seeded.cli("status", "--json", check=False).stdout)
    rows = page.eval_on_selector_all("#health-rows li", "els => els.map(e => e.dataset.id)")
    assert rows == [r["id"] for r in status["rows"]]
    assert page.locator("#health-verdict strong").inner_text() == status["verdict"]
    gaps = [d for d in status["gaps_daily"] if d["calls_at_least"]] if "gaps_daily" in status else []
    if not gaps:  # this meter never lost a call
        assert page.locator("#gaps-chart .empty").is_visible()
    shot(page, "health")


def test_plan_gauges_show_what_plan_json_shows(open_page: Any, seeded: MeterProcess,
                                                fake_provider: FakeProvider) -> None:
    reset = int(time.time()) + 3 * 3600
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=10, output_tokens=2),
                                                    headers={"anthropic-ratelimit-unified-5h-utilization": "0.93",
                                                             "anthropic-ratelimit-unified-5h-reset": str(reset),
                                                             "anthropic-ratelimit-unified-5h-status": "allowed_warning",
                                                             "anthropic-ratelimit-unified-7d-utilization": "0.4",
                                                             "anthropic-ratelimit-unified-7d-reset": str(reset + 86400)}))
    before = len(seeded.rows())
    with seeded.client(extra_ca=fake_provider.ca_pem, timeout=15) as client:
        reply = client.post("https://api.anthropic.com/v1/messages", json={"model": "claude-sonnet-4-5", "max_tokens": 5,
                                                                            "messages": []},
                            headers={"authorization": "Bearer sk-ant-oat01-CANARY-dashboard", "anthropic-version": "2023-06-01"})
        assert reply.status_code == 200
    seeded.wait_for_calls(before + 1, timeout=15)
    plan = json.loads(seeded.cli("plan", "--json").stdout)
    want = {w["window"]: w["utilization"] for w in plan["windows"] if w["window"] in ("5h", "7d")}
    assert want == {"5h": 0.93, "7d": 0.4}
    page = open_page()
    page.wait_for_selector("#plan-gauges .gauge[data-window='7d']")
    shown = page.eval_on_selector_all("#plan-gauges .gauge", "els => els.map(e => [e.dataset.window, e.dataset.utilization])")
    assert {w: float(u) for w, u in shown} == want
    assert "rejected" in (page.locator("#plan-gauges .gauge[data-window='5h']").get_attribute("class") or "")
    assert page.locator("#plan-gauges .gauge[data-window='5h'] .big").inner_text() == "93%"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#plan-panel").screenshot(path=str(SHOTS / "plan-gauges.png"))


def test_budgets_show_what_budgets_json_shows(open_page: Any, seeded: MeterProcess) -> None:
    config = seeded.home / "config.toml"
    original = config.read_text()
    config.write_text(original + textwrap.dedent(f"""
        [[budgets]]
        name = "docs-cap"
        scope = {{ project = "{PROJECTS[0]}" }}
        period = "month"
        limit_usd = "0.01"
        warn_at = [0.5]

        [[budgets]]
        name = "everything"
        period = "7d"
        limit_usd = "500"
        action = "block"
    """))
    try:
        seeded.cli("reload", timeout=30)
        want = {b["name"]: b for b in json.loads(seeded.cli("budgets", "--json").stdout)["budgets"]}
        page = open_page()
        page.wait_for_selector("#budgets-list li[data-name='everything']")
        shown = page.eval_on_selector_all("#budgets-list li", "els => els.map(e => [e.dataset.name, e.dataset.spent, "
                                          "e.dataset.limit, e.dataset.state])")
        assert shown == [[name, b["spent_usd"], b["limit_usd"], b["state"]] for name, b in want.items()]
        assert want["docs-cap"]["state"] in ("warned", "ok") and want["everything"]["state"] == "ok"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#budgets-panel").screenshot(path=str(SHOTS / "budgets.png"))
    finally:
        config.write_text(original)
        seeded.cli("reload", timeout=30)


def test_phone_width_dark_scheme_and_keyboard(open_page: Any) -> None:
    page = open_page(viewport=PHONE, scheme="dark")
    wait_idle(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways at {PHONE['width']} px: {width}"
    page.wait_for_selector("#verdict-badge:not([hidden])", timeout=15_000)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 20, 24)", f"prefers-color-scheme: dark is not followed: {background}"
    shot(page, "overview-phone-dark")
    # keyboard: the first Tab reaches the skip link, and the nav links are real links
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    # the charts read out by keyboard: End is the last day
    page.focus("#daily-chart svg")
    page.keyboard.press("End")
    last = page.locator("#daily-chart g.col").last.locator("title").text_content() or ""
    assert page.locator("#daily-readout").inner_text().startswith(last.split(":")[0])
    page.focus("nav a[data-view=calls]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#view-calls:not([hidden])")
    assert page.locator("nav a[data-view=calls]").get_attribute("aria-current") == "page"


def test_sign_out_ends_the_session(browser: Any, seeded: MeterProcess, origin: str) -> None:
    """Its own session (a fresh link), so the module's shared one stays signed in."""
    watch = Watch(origin)
    context = watch.attach(browser.new_context(locale="en-US", viewport=DESKTOP))
    try:
        page = context.new_page()
        page.goto(login_url(seeded))
        page.wait_for_selector("#periods .card[data-period=today]")
        assert page.request.get(origin + "/v1/overview").ok
        page.click("#sign-out")
        page.wait_for_selector("#signed-out:not([hidden])")
        assert page.request.get(origin + "/v1/overview").status == 401
    finally:
        context.close()
    watch.check()
