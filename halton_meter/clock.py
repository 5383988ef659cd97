"""Record timestamps: the one text form every stored moment is written in."""

from __future__ import annotations

import datetime
import time

RECORD_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_stamp(moment: datetime.datetime | float | None = None) -> str:
    """`moment` (an aware datetime, a `time.time()` value, or now) in the form `started_at`, `ended_at`,
    `recorded_at` and the gap log's `at` are stored in: UTC, microseconds, `Z`, so it sorts as text."""
    if moment is None:
        moment = time.time()
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime(RECORD_FORMAT)


def parse_stamp(text: object) -> datetime.datetime | None:
    """An ISO 8601 time as stored (`…Z`) or as providers send it (with an offset, or none: then UTC), as an
    aware UTC datetime; None for anything else."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)
