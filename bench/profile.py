"""Where Halton Meter's CPU goes: per thread from /proc, then per function under cProfile.

    .venv/bin/python -m bench.profile                   # 2,000 keep-alive JSON calls at concurrency 8
    .venv/bin/python -m bench.profile --mode sse0 --calls 300
    .venv/bin/python -m bench.profile --keep /tmp/prof  # keep the .prof files (pstats, snakeviz)

It starts the bench's fake provider, then `halton_meter.core` and `halton_meter.edge --port 0` on a
temporary home (the config `serve` would write, without the supervisor) through `bench._threadprof`, and
drives the calls through the edge twice:

1. unprofiled: CPU per call of every thread of both processes, from /proc/<pid>/task/<tid>/schedstat,
   named (the core's event loop, SQLite writer, attribution pool, stats publisher): exact figures;
2. under cProfile (Python 3.12+ profiles every thread, merged): busy time by package and the top
   functions. cProfile slows Python down (roughly 1.5-2x): read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import procs
from bench.client import Conn, Route, client_context
from bench.fake import HOST


def _start_profiled(name: str, module: str, args: list[str], home: Path, out: Path, wd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HALTON_METER_HOME": str(home), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("HALTON_METER_PARENT_PID", None)
    log = wd / f"{name}.log"
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "bench._threadprof", str(out), module, *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


WAITS = ("<method 'poll' of 'select.epoll' objects>", "<method 'acquire' of '_thread.lock' objects>",
         "<built-in method time.sleep>", "<method 'select' of 'select.epoll' objects>",
         "<built-in method select.select>", "<method 'acquire' of '_thread.RLock' objects>")


def _group(file: str, fn: str) -> str:
    if file == "~":
        if "sqlite3" in fn:
            return "sqlite3 (C)"
        if "_openssl" in fn or "SSL" in fn or "BIO_" in fn:
            return "OpenSSL (C)"
        if "socket" in fn:
            return "socket I/O (C)"
        return "other built-ins"
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0]
    for marker in ("/halton_meter/", "/halton_meter_plugins/", "/halton_meter_checks/"):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return marker.strip("/") + "/" + tail.split("/", 1)[0]
    m = re.search(r"python3\.\d+/([^/]+)", file)
    return f"stdlib {m.group(1)}" if m else "other"


def summarize(prof_dir: Path, top: int) -> str:
    """Per thread: busy time (own time minus waits) by package, and the top functions by own time."""
    out = io.StringIO()
    files = sorted(prof_dir.glob("profile.prof"))
    if not files:
        return f"(no profiles written in {prof_dir})\n"
    for path in files:
        stats = pstats.Stats(str(path))
        groups: dict[str, float] = {}
        rows = []
        busy = 0.0
        for (file, line, fn), (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if fn in WAITS:
                continue
            busy += tt
            key = _group(file, fn)
            groups[key] = groups.get(key, 0.0) + tt
            rows.append((tt, nc, f"{re.sub(r'^.*site-packages/', '', file)}:{line}({fn})"))
        if busy < 0.01:
            continue
        out.write(f"--- {busy:.2f} s busy (profiled, waits excluded, start-up included) ---\n")
        for key, value in sorted(groups.items(), key=lambda kv: -kv[1])[:12]:
            out.write(f"  {value:7.2f} s {100 * value / busy:5.1f}%  {key}\n")
        out.write("  top functions by own time:\n")
        for tt, nc, name in sorted(rows, reverse=True)[:top]:
            out.write(f"  {tt:7.3f} s {nc:9d}  {name.replace(str(Path.cwd()) + '/', '')}\n")
    return out.getvalue()


async def _drive(route: Route, mode: str, calls: int, concurrency: int) -> tuple[int, float]:
    conns = [await Conn.open(route) for _ in range(concurrency)]
    done = 0
    t0 = time.perf_counter()

    async def worker(conn: Conn) -> None:
        nonlocal done
        while done < calls:
            done += 1
            if mode == "json":
                await conn.json_call()
            else:
                await conn.sse_call(int(mode[3:]))

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.aclose()
    return done, elapsed


def _threads(pid: int, names_file: Path) -> dict[str, float]:
    """CPU seconds per thread name (pool workers merged) of a running process."""
    try:
        names = {int(k): v for k, v in json.loads(names_file.read_text()).items()}
    except (OSError, ValueError):
        names = {}
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError):
            continue
        name = "main (event loop)" if int(tid) == pid else re.sub(r"_\d+$", "", names.get(int(tid), "unnamed C thread"))
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def _pass(wd: Path, ca: str, fake_port: int, args: argparse.Namespace, profile: bool) -> dict[str, object]:
    from halton_meter.paths import Paths
    from halton_meter.testing.meter import write_config

    tag = "profiled" if profile else "clean"
    home = wd / f"home-{tag}"
    write_config(home, ca_bundle=Path(ca), resolve=[f"{HOST}:443:127.0.0.1:{fake_port}"])
    core = edge = None
    flags = ["--profile"] if profile else []
    try:
        core = _start(f"core-{tag}", ["halton_meter.core"], flags, home, wd)
        procs._wait_line(core, wd / f"core-{tag}.log", re.compile(rb"READY (\d+)"), "core")
        edge = _start(f"edge-{tag}", ["halton_meter.edge", "--port", "0"], flags, home, wd)
        port = procs._listening_port(edge, wd / f"edge-{tag}.log", "edge")
        procs._wait_line(edge, wd / f"edge-{tag}.log", re.compile(rb"READY"), "edge")
        route = Route("meter", client_context(str(Paths(home).ca_cert), ca), proxy=("127.0.0.1", port))
        asyncio.run(_drive(route, "json", 50, 2))  # warm-up
        time.sleep(0.5)
        before = {"edge": _threads(edge.pid, wd / f"edge-{tag}" / "threads.json"),
                  "core": _threads(core.pid, wd / f"core-{tag}" / "threads.json")}
        done, elapsed = asyncio.run(_drive(route, args.mode, args.calls, args.concurrency))
        time.sleep(1.0)  # the writer commits the last rows
        after = {"edge": _threads(edge.pid, wd / f"edge-{tag}" / "threads.json"),
                 "core": _threads(core.pid, wd / f"core-{tag}" / "threads.json")}
    finally:
        for proc in (edge, core):
            if proc is not None:
                _stop(proc)
    per_thread = {proc: {name: (after[proc][name] - before[proc].get(name, 0.0)) * 1000 / done
                         for name in after[proc]} for proc in after}
    return {"done": done, "elapsed": elapsed, "per_thread_ms": per_thread}


def _start(name: str, module_args: list[str], flags: list[str], home: Path, wd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HALTON_METER_HOME": str(home), "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("HALTON_METER_PARENT_PID", None)
    with open(wd / f"{name}.log", "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "bench._threadprof", str(wd / name), *flags, *module_args],
                                env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="json", help="json, sse0 or sse20")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-cprofile", action="store_true", help="only the per-thread CPU pass")
    parser.add_argument("--keep", type=Path, help="copy the .prof files here")
    args = parser.parse_args(argv)

    tmp = procs.workdir()
    wd = Path(tmp.name)
    ca, server = procs.make_ca(wd)
    fake = procs.start_module("fake", "bench.fake", "--cert", server, workdir=wd)
    try:
        clean = _pass(wd, ca, fake.port, args, profile=False)
        print(f"{clean['done']} {args.mode} calls at concurrency {args.concurrency}, "
              f"{clean['done'] / clean['elapsed']:.0f}/s. CPU ms per call by thread (unprofiled, /proc):")
        for proc, threads in clean["per_thread_ms"].items():  # type: ignore[union-attr]
            total = sum(threads.values())
            print(f"  {proc}: {total:.3f} ms")
            for name, ms in sorted(threads.items(), key=lambda kv: -kv[1]):
                if ms >= 0.0005:
                    print(f"    {ms:8.3f} ms  {name}")
        if not args.no_cprofile:
            _pass(wd, ca, fake.port, args, profile=True)
            for name in ("edge", "core"):
                print(f"\n===== {name} under cProfile (all threads merged) =====")
                print(summarize(wd / f"{name}-profiled", args.top))
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                for name in ("edge", "core"):
                    src = wd / f"{name}-profiled" / "profile.prof"
                    if src.exists():
                        shutil.copy(src, args.keep / f"{name}-{args.mode}.prof")
                print(f"profiles kept in {args.keep}")
    finally:
        fake.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
