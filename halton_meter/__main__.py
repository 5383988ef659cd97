"""`python -m halton_meter` and, through `halton_meter.entry`, the `halton-meter` script.

`halton-meter statusline` runs on a fast path (`halton_meter.statusline`, standard library only) before
click or anything else of the command line is imported: Claude Code starts it after every message, and a
cold start must stay within tens of milliseconds. Its `--help` goes through click like every other
command. This module is the one place that imports `halton_meter.cli` (tests/test_layout.py).
"""

from __future__ import annotations

import sys

HELP = ("-h", "--help")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["statusline"] and not any(arg in HELP for arg in args[1:]):
        from halton_meter.statusline import main as statusline

        sys.exit(statusline(args[1:]))
    from halton_meter.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
