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
