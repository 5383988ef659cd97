"""Parsing the time arguments of `report`: relative (7d, 24h, 90m), dates (local midnight), ISO times."""

from __future__ import annotations

import datetime
import re

from halton_meter.errors import UsageError

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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
            day = datetime.date.fromisoformat(value)
            local_midnight = datetime.datetime.combine(day, datetime.time()).astimezone()
            return local_midnight.astimezone(datetime.UTC)
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None:
        raise UsageError(
            f"{option} {text!r} is not a time; use 7d, 24h, 90m, a date like 2026-11-01 or an ISO time"
        )
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(datetime.UTC)
