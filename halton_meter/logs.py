"""Structured logging for the meter's processes: key=value lines on stderr, never a secret or a prompt.

Nothing logged by Halton Meter carries header values, query strings or bodies; records and paths are
redacted before they are built.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(process: str, level: str | None = None) -> None:
    level_name = (level or os.environ.get("HALTON_METER_LOG_LEVEL") or "INFO").upper()
    numeric = getattr(logging, level_name, logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "process", "level", "event"], drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
