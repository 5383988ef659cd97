"""Structured logging for the meter's processes: key=value lines on stderr, never a secret or a prompt.

Nothing logged by Halton Meter carries header values, query strings or bodies; records and paths are
redacted before they are built.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _StderrProxy:
    """Writes to whatever sys.stderr is now; drops the line if it is closed (logging never raises)."""

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except (ValueError, OSError):
            return 0

    def flush(self) -> None:
        try:
            sys.stderr.flush()
        except (ValueError, OSError):
            pass


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
        # Resolve sys.stderr when a logger is made, not once at configure time: a replaced stderr (a test
        # harness, a closed terminal) must never make logging, and with it the writer thread, fail.
        logger_factory=lambda *args: structlog.PrintLogger(_StderrProxy()),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
