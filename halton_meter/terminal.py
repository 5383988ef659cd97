"""Display helpers every command's output is built from: the console, one-line errors and warnings, wrapped
lines, tables, and number, money and time formatting. Each command draws its own output with them, in its
`halton_meter/cli/<command>.py`.

Honours NO_COLOR and COLUMNS; output written to a pipe has no colour. Errors go to stderr as one line.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from halton_meter.types import nanos_to_usd


def console(stderr: bool = False, width: int | None = None) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False, no_color="NO_COLOR" in os.environ or None,
                   width=width)


def error(message: str) -> None:
    console(stderr=True).print(Text.assemble(("halton-meter: ", "bold red"), ("error: ", "red"), message),
                               soft_wrap=True)


def warn(message: str) -> None:
    console(stderr=True).print(Text.assemble(("halton-meter: ", "bold yellow"), ("warning: ", "yellow"), message),
                               soft_wrap=True)


def line(message: str = "", style: str | None = None) -> None:
    console().print(Text(message, style=style or ""), soft_wrap=True)


HANGING_MIN = 20
"""Narrower than this beside its lead, a line is printed whole instead (the terminal wraps it)."""


def hanging(console: Console, lead: Text, body: Text) -> None:
    """`lead` then `body`, wrapped between words to the console's width, later lines starting under the
    body's first character (a word longer than the room is folded, never cut)."""
    room = console.width - lead.cell_len
    if room < HANGING_MIN:
        console.print(Text.assemble(lead, body), soft_wrap=True)
        return
    for i, part in enumerate(body.wrap(console, room, overflow="fold")):
        part.rstrip()
        console.print(Text.assemble(lead if i == 0 else " " * lead.cell_len, part), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def money(nanos: int | None) -> str:
    if nanos is None:
        return "unpriced"
    usd = nanos_to_usd(nanos) or "0"
    whole, _, frac = usd.partition(".")
    frac = frac[:6] if abs(nanos) >= 10_000 else frac  # show sub-cent amounts in full
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def tokens(n: int) -> str:
    return f"{n:,}"


def local_time(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def table(columns: Sequence[tuple[str, str]], title: str | None = None, wrap: Sequence[str] = ()) -> Table:
    """Columns never wrap (numbers and names stay whole) except those in `wrap`, which fold."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in columns:
        if name in wrap:
            table.add_column(name, justify=justify, overflow="fold", ratio=1)  # type: ignore[arg-type]
        else:
            table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    return table


def compact(n: int | None) -> str:
    """A token or call count in at most 6 characters: 9,999 · 123.4k · 12.3M · 1.2B."""
    if n is None:
        return "—"
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 10_000:
        return f"{sign}{n:,}"
    for limit, divisor, suffix in ((999_950, 1_000, "k"), (999_950_000, 1_000_000, "M")):
        if n < limit:
            return f"{sign}{n / divisor:.1f}{suffix}"
    return f"{sign}{n / 1_000_000_000:.1f}B"


def usd_short(value: str | None) -> str:
    """A decimal USD string for a table cell: $1,234.56 (cents), or two significant digits under a cent
    ($0.0014), so a small cost never reads as $0.00."""
    if value is None:
        return "—"
    from decimal import ROUND_HALF_EVEN, Decimal

    amount = Decimal(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount == 0:
        return "$0.00"
    places = 2 if amount >= Decimal("0.01") else min(9, -amount.adjusted() + 1)
    return f"{sign}${amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN):,}"


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def cost_cell(row: dict[str, Any]) -> str:
    """The charged cost; `*` when unpriced calls are left out, `†` when subscription calls are not in it."""
    marks = ("*" if row["unpriced_calls"] else "") + ("†" if row["subscription_calls"] else "")
    if row["unpriced_calls"] and usd_nanos(row["cost_usd"]) == 0:
        return "unpriced" + marks[1:]
    return usd_short(row["cost_usd"]) + marks


def usd_nanos(value: str) -> int:
    from decimal import Decimal

    return int(Decimal(value).scaleb(9))


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return "·" * len(values)
    return "".join("·" if v <= 0 else _SPARKS[min(len(_SPARKS) - 1, (v * len(_SPARKS) - 1) // top)] for v in values)


def zone(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Z")


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def usd_text(value: str | None) -> str:
    if value is None:
        return "unpriced"
    from decimal import Decimal

    return money(int(Decimal(value).scaleb(9)))
