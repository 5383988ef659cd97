"""Run a module so that its threads can be told apart from outside, optionally under cProfile.

    python -m bench._threadprof OUT_DIR [--profile] MODULE [ARGS...]

Every thread that starts writes its native id and name to OUT_DIR/threads.json, so /proc/<pid>/task/<tid>
CPU figures can be grouped by thread (the core's event loop, SQLite writer, attribution pool, stats
publisher). With `--profile`, one cProfile covers the run and is written to OUT_DIR/profile.prof at exit
(on Python 3.12+ cProfile sees every thread through sys.monitoring, merged into one profile; only one
profiler may be active per process).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import runpy
import sys
import threading
from pathlib import Path

_names: dict[int, str] = {}
_lock = threading.Lock()


def _record(out: Path) -> None:
    with _lock:
        _names[threading.get_native_id()] = threading.current_thread().name
        tmp = out / "threads.json.tmp"
        tmp.write_text(json.dumps({str(k): v for k, v in _names.items()}))
        os.replace(tmp, out / "threads.json")


def _install(out: Path) -> None:
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        try:
            _record(out)
        except OSError:
            pass
        original_run(self)

    threading.Thread.run = run  # type: ignore[method-assign]


def main() -> None:
    args = sys.argv[1:]
    out = Path(args.pop(0))
    profile = args[:1] == ["--profile"]
    if profile:
        args.pop(0)
    module, *rest = args
    out.mkdir(parents=True, exist_ok=True)
    sys.argv = [module, *rest]
    _install(out)
    _record(out)
    if not profile:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    profiler = cProfile.Profile()
    atexit.register(lambda: profiler.dump_stats(str(out / "profile.prof")))
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()


if __name__ == "__main__":
    main()
