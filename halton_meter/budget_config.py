"""A budget as config.toml declares it, validated strictly (a mistake is one `ConfigError` line, exit 2,
never a silent block):

```toml
[[budgets]]
name = "acme-monthly"          # unique; letters, digits, `.`, `_`, `-`
scope = { project = "acme" }   # any of project, key, branch, client, provider, model; {} = everything
period = "month"               # day | week | month (local calendar, as `report`) | rolling "5h", "7d", "90m"
limit_usd = "200"              # a decimal string (or a number)
warn_at = [0.5, 0.8]           # fractions of the limit; default [0.8]
action = "warn"                # warn | block
on_alert = ["/path/to/script"] # optional: run with the event as JSON on stdin
```

A scope value is a string or a list of strings (any of them); globs work as in `report`'s filters
(`claude-sonnet-*`); `key` takes a fingerprint prefix or a `[keys]` name. Only calls billed per token
(`billing = "api"`) spend a budget: calls covered by a subscription cost nothing more.

A plan window can be a budget too: instead of `period` and `limit_usd`, `plan_window = "5h"` (any window
`halton-meter plan` shows: `5h`, `7d`, `7d_opus`, …) and `limit_plan = 0.9` (a fraction of the window).
Its scope may name only `key` (the account) and `provider`: a plan window belongs to an account, not to a
project. It is measured by the provider's own utilization figure, not by money.
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from halton_meter.errors import ConfigError
from halton_meter.timewindow import local, local_midnight

SCOPE_DIMENSIONS = ("project", "key", "branch", "client", "provider", "model")
PERIODS = ("day", "week", "month")
ACTIONS = ("warn", "block")
DEFAULT_WARN_AT = (0.8,)
NANOS_PER_USD = 1_000_000_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ROLLING = re.compile(r"^(\d+)([mhd])$")
_KEYS = {"name", "scope", "period", "limit_usd", "warn_at", "action", "on_alert", "plan_window", "limit_plan"}
PLAN_SCOPE = ("key", "provider")
_WINDOW = re.compile(r"^[a-z0-9_]{1,32}$")


@dataclass(frozen=True)
class Budget:
    name: str
    scope: tuple[tuple[str, tuple[str, ...]], ...]
    """(dimension, accepted values) pairs, all of which a call must match; empty: every call."""
    period: str
    """`day`, `week`, `month`, or `rolling` (then `rolling_seconds`)."""
    limit_nanos: int
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT
    action: str = "warn"
    on_alert: tuple[str, ...] = ()
    rolling_seconds: int | None = None
    plan_window: str | None = None
    """A plan budget's window (`5h`, `7d`, …); None for a money budget."""
    limit_plan: float | None = None
    """A plan budget's limit: the window's utilization (0..1) at which it is reached."""

    @property
    def is_plan(self) -> bool:
        return self.plan_window is not None

    @property
    def blocks(self) -> bool:
        return self.action == "block"

    @property
    def period_label(self) -> str:
        if self.plan_window is not None:
            return f"plan {self.plan_window}"
        return self.period if self.rolling_seconds is None else f"rolling {_span(self.rolling_seconds)}"

    def scope_dict(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self.scope}

    def matches(self, call: Mapping[str, str | None]) -> bool:
        """Whether a call with these dimension values (`key` = its fingerprint) is in scope."""
        for name, values in self.scope:
            have = call.get(name) or ""
            if name == "key":
                if not any(have.startswith(v) for v in values):
                    return False
            elif not any(fnmatch.fnmatchcase(have, v) for v in values):
                return False
        return True

    def bounds(self, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
        """[start, end) of the period holding `now` (aware UTC), in the local calendar; a rolling period
        is the span up to `now` (its end is `now`), as is a plan budget's (its window is the provider's)."""
        if self.plan_window is not None:
            return now, now
        if self.rolling_seconds is not None:
            return now - datetime.timedelta(seconds=self.rolling_seconds), now
        today = local(now).date()
        if self.period == "day":
            return local_midnight(today), local_midnight(today + datetime.timedelta(days=1))
        if self.period == "week":
            monday = today - datetime.timedelta(days=today.weekday())
            return local_midnight(monday), local_midnight(monday + datetime.timedelta(days=7))
        first = today.replace(day=1)
        following = (first + datetime.timedelta(days=32)).replace(day=1)
        return local_midnight(first), local_midnight(following)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scope": self.scope_dict(), "period": self.period_label,
                "limit_usd": None if self.is_plan else usd(self.limit_nanos), "warn_at": list(self.warn_at),
                "action": self.action, "plan_window": self.plan_window, "limit_plan": self.limit_plan}


def usd(nanos: int) -> str:
    return f"{Decimal(nanos).scaleb(-9):.2f}"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


def parse_budgets(body: Any, key_names: Mapping[str, str]) -> tuple[Budget, ...]:
    """`[[budgets]]` tables → budgets, or ConfigError naming the budget and what is wrong with it."""
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ConfigError('config.toml: budgets are [[budgets]] tables with name, period and limit_usd '
                          '(see docs/budgets.md)')
    budgets: list[Budget] = []
    for index, item in enumerate(body, 1):
        budget = _parse_one(item, index, key_names)
        if any(b.name == budget.name for b in budgets):
            raise ConfigError(f"config.toml: two [[budgets]] are named {budget.name!r}; names must be unique")
        budgets.append(budget)
    return tuple(budgets)


def _parse_one(item: dict[str, Any], index: int, key_names: Mapping[str, str]) -> Budget:
    name = item.get("name")
    where = f"config.toml: budget {name!r}" if isinstance(name, str) else f"config.toml: [[budgets]] #{index}"
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-' (like name = \"acme-monthly\")")
    window, limit_plan = _plan(item, where)
    if window is not None:
        period, rolling, limit = "plan", None, 0
    else:
        period, rolling = _period(item.get("period"), where)
        limit = _limit(item.get("limit_usd"), where)
    warn_at = _warn_at(item.get("warn_at", list(DEFAULT_WARN_AT)), where)
    action = item.get("action", "warn")
    if action not in ACTIONS:
        raise ConfigError(f"{where}: action must be \"warn\" or \"block\", not {action!r}")
    on_alert = item.get("on_alert", [])
    if isinstance(on_alert, str):
        on_alert = [on_alert]
    if not isinstance(on_alert, list) or not all(isinstance(a, str) and a for a in on_alert):
        raise ConfigError(f"{where}: on_alert must be a command as a list of strings, like [\"/path/to/script\"]")
    scope = _scope(item.get("scope", {}), where, key_names)
    if window is not None and any(dim not in PLAN_SCOPE for dim, _ in scope):
        raise ConfigError(f"{where}: a plan budget's scope may name only {' and '.join(PLAN_SCOPE)} (a plan window "
                          "belongs to an account, not to a project)")
    return Budget(name=name, scope=scope, period=period, limit_nanos=limit, warn_at=warn_at, action=action,
                  on_alert=tuple(on_alert), rolling_seconds=rolling, plan_window=window, limit_plan=limit_plan)


def _plan(item: dict[str, Any], where: str) -> tuple[str | None, float | None]:
    """(window, limit) of a plan budget; (None, None) for a money budget."""
    if "plan_window" not in item and "limit_plan" not in item:
        return None, None
    window, limit = item.get("plan_window"), item.get("limit_plan")
    if "period" in item or "limit_usd" in item:
        raise ConfigError(f"{where}: a budget has either period and limit_usd, or plan_window and limit_plan")
    if not isinstance(window, str) or not _WINDOW.match(window):
        raise ConfigError(f"{where}: plan_window must name a plan window, like \"5h\" or \"7d\"")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit <= 1:
        raise ConfigError(f"{where}: limit_plan must be a fraction of the window, more than 0 and at most 1 "
                          "(like 0.9)")
    return window, float(limit)


def _period(value: Any, where: str) -> tuple[str, int | None]:
    if value in PERIODS:
        return str(value), None
    match = _ROLLING.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{where}: period must be day, week, month or a rolling span like \"5h\", \"7d\" or "
                          f"\"90m\", not {value!r}")
    seconds = int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds > 366 * 86400:
        raise ConfigError(f"{where}: a rolling period can be at most 366 days, not {value!r}")
    return "rolling", seconds


def _limit(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: limit_usd must be a dollar amount like \"200\" or \"12.50\"")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(f"{where}: limit_usd {value!r} is not a dollar amount; write it like \"200\"") from None
    if not amount.is_finite() or amount <= 0 or amount > Decimal(10) ** 9:
        raise ConfigError(f"{where}: limit_usd must be more than 0 and at most 1000000000, not {value!r}")
    nanos = amount.scaleb(9)
    if nanos != nanos.to_integral_value():
        raise ConfigError(f"{where}: limit_usd {value!r} has more than nine decimal places")
    return int(nanos)


def _warn_at(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: warn_at must be a list of fractions of the limit, like [0.5, 0.8]")
    if not all(0 < v < 1 for v in value):
        raise ConfigError(f"{where}: warn_at fractions must be between 0 and 1 (the limit itself always alerts)")
    return tuple(sorted({float(v) for v in value}))


def _scope(value: Any, where: str, key_names: Mapping[str, str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: scope must be a table like {{ project = \"acme\" }} ({{}} for every call)")
    scope = []
    for name in SCOPE_DIMENSIONS:
        if name not in value:
            continue
        raw = value[name]
        values: Sequence[Any] = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{where}: scope.{name} must be a name or a list of names")
        if name == "key":
            values = [_key(v, where, key_names) for v in values]
        scope.append((name, tuple(values)))
    unknown = sorted(set(value) - set(SCOPE_DIMENSIONS))
    if unknown:
        raise ConfigError(f"{where}: scope.{unknown[0]} is not a dimension (use {', '.join(SCOPE_DIMENSIONS)})")
    return tuple(scope)


def _key(value: str, where: str, key_names: Mapping[str, str]) -> str:
    """A fingerprint prefix, or the fingerprint a `[keys]` name stands for."""
    named = [fp for fp, label in key_names.items() if label == value]
    if len(named) == 1:
        return named[0]
    if re.fullmatch(r"[0-9a-f]{4,64}", value):
        return value
    raise ConfigError(f"{where}: scope.key {value!r} is neither a [keys] name nor a key fingerprint "
                      "(`halton-meter key-fingerprint` prints one)")
