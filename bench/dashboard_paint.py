"""How soon does the dashboard show its numbers in a real browser?

Serves the real API (tornado, in this process) over a database built by bench/report_bench.py, signs a
headless Chromium in through a one-time link and measures, median of several loads of `/`:

* first contentful paint (the browser's own `first-contentful-paint` entry);
* the first meaningful paint: until the overview's four period cards show their costs (what the user came
  for), measured from the start of the navigation.

Target: first meaningful paint ≤ 1 s. Needs playwright (the test extra) and Debian's chromium.

    .venv/bin/python -m bench.dashboard_paint --home HOME   # HOME/db.sqlite built by report_bench.generate
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAINT_TARGET_MS = 1000.0
LOADS = 5
SETTLE_MS = 3000
"""Between loads: what a user does not do is navigate while the last page's requests still run."""
TOKEN = "b" * 43


def _serve(paths: Any) -> tuple[Any, asyncio.AbstractEventLoop, threading.Thread, socket.socket]:
    from halton_meter.serve.api import Api

    sock = socket.create_server(("127.0.0.1", 0))
    api = Api(sock.getsockname()[1], TOKEN, paths)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(lambda: (api.start(sock), ready.set()))
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the API did not start")
    return api, loop, thread, sock


def measure(home: Path, loads: int = LOADS) -> dict[str, Any]:
    import httpx
    from playwright.sync_api import sync_playwright

    from halton_meter.paths import Paths

    api, loop, thread, sock = _serve(Paths(home))
    base = f"http://127.0.0.1:{api.port}"
    fcp: list[float] = []
    meaningful: list[float] = []
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
            url = client.post("/v1/login-codes", headers={"authorization": f"Bearer {TOKEN}"}).json()["url"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Asia/Kolkata")
            page = context.new_page()
            page.goto(url)  # signs in (the cookie), lands on /
            page.wait_for_selector("#periods .card .cost", timeout=30_000)
            page.evaluate("localStorage.setItem('halton-meter.live', '0')")  # no tail: each load starts alike
            for _ in range(loads + 1):  # the first load warms the browser's and SQLite's caches
                page.wait_for_timeout(SETTLE_MS)  # the last load's other panels (and health) are done
                page.goto(base + "/")
                page.wait_for_selector("#periods .card:nth-child(4) .cost", timeout=30_000)
                shown = page.evaluate("performance.now()")
                painted = page.evaluate(
                    "(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
                if painted is not None:
                    fcp.append(float(painted))
                meaningful.append(float(shown))
            browser.close()
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()
    fcp, meaningful = fcp[1:], meaningful[1:]
    result = {"loads": len(meaningful), "fcp_ms": round(statistics.median(fcp), 1) if fcp else None,
              "meaningful_ms": round(statistics.median(meaningful), 1), "target_ms": PAINT_TARGET_MS}
    result["ok"] = result["meaningful_ms"] <= PAINT_TARGET_MS
    return result


def markdown(result: dict[str, Any]) -> str:
    verdict = "✓" if result["ok"] else "✗ over target"
    return (f"Dashboard in headless Chromium, median of {result['loads']} loads of `/`: first contentful paint "
            f"{result['fcp_ms']} ms; the four period cards filled in {result['meaningful_ms']} ms "
            f"(target ≤ {result['target_ms']:.0f} ms {verdict}).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_paint", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a home whose db.sqlite report_bench built")
    parser.add_argument("--loads", type=int, default=LOADS)
    args = parser.parse_args(argv)
    print(markdown(measure(args.home, args.loads)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
