"""Time windows for `report`, `calls`, `projects` and `retag`, in the user's local time zone.

Moments: relative (`7d`, `24h`, `90m`, `2w`), dates (`2026-11-01`: local midnight) and ISO times (a time
without an offset is local). Calendar windows: `today`, `yesterday`, `week` (since Monday 00:00) and `month`
(since the 1st), with day boundaries at local midnight. The local zone is the process's (`TZ` when set),
unless a caller names another for the current context with `in_zone` (the API's `tz` parameter: each request
runs in its own context, so concurrent requests in different zones never mix).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import re
import time
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass

from halton_meter.clock import utc_stamp
from halton_meter.errors import UsageError

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
UTC = datetime.UTC
DEFAULT_SINCE = "30d"
iso = utc_stamp
"""A moment in the form records are stored in (`clock.utc_stamp`), under the name window code uses."""
_ZONE: contextvars.ContextVar[zoneinfo.ZoneInfo | None] = contextvars.ContextVar("halton_meter_zone", default=None)


def parse_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA zone (`Asia/Kolkata`); UsageError naming the value otherwise."""
    try:
        if not name or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise UsageError(f"tz {name!r} is not a time zone; use an IANA name like Europe/Paris or "
                         "Asia/Kolkata") from None


@contextlib.contextmanager
def in_zone(zone: zoneinfo.ZoneInfo | None) -> Iterator[None]:
    """Within this block (this context only), "local" means `zone`; None keeps the process's zone."""
    token = _ZONE.set(zone)
    try:
        yield
    finally:
        _ZONE.reset(token)


def parse_moment(text: str, now: datetime.datetime, option: str) -> datetime.datetime:
    """An aware UTC datetime for `text`; UsageError (exit 2) with the accepted forms otherwise."""
    value = text.strip()
    match = re.fullmatch(r"(\d+)([mhdw])", value)
    if match:
        delta_kwargs = {_UNITS[match.group(2)]: int(match.group(1))}
        try:
            delta = datetime.timedelta(**delta_kwargs)
        except OverflowError:
            delta = datetime.timedelta.max
        if delta > datetime.timedelta(days=100 * 365):
            raise UsageError(f"{option} {text} is too far back (more than 100 years); use a date like 2026-01-01")
        return now - delta
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return local_midnight(datetime.date.fromisoformat(value))
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise UsageError(
            f"{option} {text!r} is not a time; use 7d, 24h, 90m, a date like 2026-11-01 or an ISO time"
        )
    if moment.tzinfo is None:
        zone = _ZONE.get()
        moment = moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()
    return moment.astimezone(UTC)


def local_midnight(day: datetime.date) -> datetime.datetime:
    """00:00 local on `day`, as an aware UTC datetime (the first moment of the day where midnight is skipped)."""
    zone = _ZONE.get()
    if zone is not None:  # a skipped midnight (fold 0) lands on the transition: the day's first moment
        return datetime.datetime.combine(day, datetime.time(), tzinfo=zone).astimezone(UTC)
    return datetime.datetime.combine(day, datetime.time()).astimezone().astimezone(UTC)


def local(moment: datetime.datetime) -> datetime.datetime:
    zone = _ZONE.get()
    return moment.astimezone(zone) if zone is not None else moment.astimezone()


def utc_offset(epoch: int) -> int:
    """The local zone's offset from UTC at `epoch`, in seconds."""
    zone = _ZONE.get()
    if zone is not None:
        offset = datetime.datetime.fromtimestamp(epoch, zone).utcoffset()
        return int(offset.total_seconds()) if offset is not None else 0
    return time.localtime(epoch).tm_gmtoff


def offset_segments(start: int, end: int) -> list[tuple[int, int]]:
    """[(from_epoch, offset_seconds), ...] covering [start, end): where the local offset changes (DST)."""
    step = 6 * 3600  # no zone changes its offset twice within 6 hours
    last = max(start, end - 1)
    points = [*range(start, last, step), last]
    offsets = [utc_offset(p) for p in points]
    segments = [(start, offsets[0])]
    for (a, b), (off_a, off_b) in zip(zip(points, points[1:], strict=False), zip(offsets, offsets[1:], strict=False), strict=True):
        if off_a == off_b:
            continue
        lo, hi = a, b
        while hi - lo > 1:  # the first second with the new offset
            mid = (lo + hi) // 2
            if utc_offset(mid) == off_a:
                lo = mid
            else:
                hi = mid
        segments.append((hi, off_b))
    return segments


@dataclass(frozen=True)
class Window:
    since: datetime.datetime
    """Aware UTC, inclusive."""
    until: datetime.datetime
    """Aware UTC, exclusive."""
    kind: str
    """`today`, `yesterday`, `week`, `month`, `last_month` (the API's only) or `range` (--since/--until)."""
    label: str

    @property
    def since_iso(self) -> str:
        return utc_stamp(self.since)

    @property
    def until_iso(self) -> str:
        return utc_stamp(self.until)

    def previous(self) -> Window:
        """The window to compare with (`--vs-previous`), of the same length:

        * `today`, `week`, `month`: the previous day, week or month from its start, for as long as this one
          has run so far (today until 14:05 against yesterday until 14:05), never past this window's start;
        * `yesterday`: the whole day before (23 or 25 hours long across a DST change, like the days are);
        * `last_month`: the whole calendar month before it;
        * `--since/--until`: the same length immediately before.
        """
        length = self.until - self.since
        start_local = local(self.since).date()
        if self.kind in ("today", "week", "month"):
            if self.kind == "today":
                start = local_midnight(start_local - datetime.timedelta(days=1))
            elif self.kind == "week":
                start = local_midnight(start_local - datetime.timedelta(days=7))
            else:
                start = local_midnight((start_local - datetime.timedelta(days=1)).replace(day=1))
            label = {"today": "yesterday, same hours", "week": "last week, same stretch",
                     "month": "last month, same stretch"}[self.kind]
            return Window(start, min(start + length, self.since), self.kind, label)
        if self.kind == "yesterday":
            start = local_midnight(start_local - datetime.timedelta(days=1))
            return Window(start, self.since, "range", "the day before")
        if self.kind == "last_month":
            start = local_midnight((start_local - datetime.timedelta(days=1)).replace(day=1))
            return Window(start, self.since, "range", "the month before")
        return Window(self.since - length, self.since, "range", "previous period")

    def local_days(self) -> list[datetime.date]:
        """Every local date the window touches, in order."""
        first = local(self.since).date()
        last = local(self.until - datetime.timedelta(microseconds=1)).date()
        return [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]


def resolve_window(
    *,
    today: bool = False,
    yesterday: bool = False,
    week: bool = False,
    month: bool = False,
    last_month: bool = False,
    since: str | None = None,
    until: str | None = None,
    default_since: str | None = DEFAULT_SINCE,
    now: datetime.datetime | None = None,
    prefix: str = "--",
) -> Window:
    """The window the options ask for. At most one of today/yesterday/week/month/since; `until` goes with
    `since` (or the default) only. UsageError (exit 2) names the clash or the bad value."""
    now = (now or datetime.datetime.now(UTC)).astimezone(UTC)
    chosen = [name for name, on in (("today", today), ("yesterday", yesterday), ("week", week), ("month", month),
                                    ("last_month", last_month), ("since", since is not None)) if on]
    if len(chosen) > 1:
        given = " and ".join(f"{prefix}{name}" for name in chosen)
        raise UsageError(f"{given} cannot be combined: choose one window (or {prefix}since … {prefix}until …)")
    if until is not None and chosen and chosen[0] != "since":
        raise UsageError(f"{prefix}until goes with {prefix}since, not {prefix}{chosen[0]}: use "
                         f"{prefix}since … {prefix}until …")
    today_local = local(now).date()
    if today:
        return Window(local_midnight(today_local), now, "today", "today")
    if yesterday:
        return Window(local_midnight(today_local - datetime.timedelta(days=1)), local_midnight(today_local),
                      "yesterday", "yesterday")
    if week:
        monday = today_local - datetime.timedelta(days=today_local.weekday())
        return Window(local_midnight(monday), now, "week", "this week")
    if month:
        return Window(local_midnight(today_local.replace(day=1)), now, "month", "this month")
    if last_month:
        first = today_local.replace(day=1)
        return Window(local_midnight((first - datetime.timedelta(days=1)).replace(day=1)), local_midnight(first),
                      "last_month", "last month")
    start_text = since if since is not None else default_since
    start = parse_moment(start_text, now, f"{prefix}since") if start_text is not None else None
    end = parse_moment(until, now, f"{prefix}until") if until is not None else now
    if start is None:
        start = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    if start >= end:
        raise UsageError(f"{prefix}since ({start_text}) must be before {prefix}until ({until or 'now'})")
    if since is None and start_text is not None:
        label = f"last {describe(start_text)}"
    elif since is None:
        label = "all time"
    else:
        label = f"since {since}" + (f" until {until}" if until else "")
    return Window(start, end, "range", label)


def describe(relative: str) -> str:
    """`30d` → `30 days`."""
    match = re.fullmatch(r"(\d+)([mhdw])", relative)
    if not match:
        return relative
    n, unit = int(match.group(1)), {"m": "minute", "h": "hour", "d": "day", "w": "week"}[match.group(2)]
    return f"{n} {unit}{'s' if n != 1 else ''}"
