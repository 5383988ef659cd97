"""Structured logging for the meter's processes: key=value lines, never a secret or a prompt.

Nothing logged by Halton Meter carries header values, query strings or bodies; records and paths are
redacted before they are built. In the foreground (`serve`) lines go to stderr. Under a service manager
or the built-in supervisor, `HALTON_METER_LOG_DIR` is set and each process writes its own size-rotated
file there (`serve.log`, `core.log`, `edge.log`; 10 MiB, 3 kept, mode 0600), which `halton-meter logs`
reads.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import structlog

LOG_DIR_ENV = "HALTON_METER_LOG_DIR"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3


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


class _RotatingFile:
    """A file-like sink that rotates by size, for structlog's PrintLogger."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        os.chmod(path, 0o600)
        self._partial = ""

    def write(self, text: str) -> int:
        # print() writes the message and its newline separately: emit whole lines only.
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            try:
                self._handler.emit(logging.LogRecord("halton_meter", logging.INFO, "", 0, line, None, None))
            except Exception:
                pass
        return len(text)

    def flush(self) -> None:
        pass


def log_dir() -> Path | None:
    value = os.environ.get(LOG_DIR_ENV)
    return Path(value) if value else None


def configure_logging(process: str, level: str | None = None) -> None:
    os.umask(0o077)  # everything the meter creates is private to the user
    level_name = (level or os.environ.get("HALTON_METER_LOG_LEVEL") or "INFO").upper()
    numeric = getattr(logging, level_name, logging.INFO)
    directory = log_dir()
    sink: object = _RotatingFile(directory / f"{process}.log") if directory else _StderrProxy()
    stdlib_stream = sink if directory else sys.stderr
    # our sinks have write() and flush(), all logging uses; typeshed wants a whole TextIO
    logging.basicConfig(stream=stdlib_stream, level=numeric,  # type: ignore[arg-type]
                        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "process", "level", "event"],
                                                  drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Resolve the sink when a logger is made, not once at import: a replaced stderr (a test harness, a
        # closed terminal) must never make logging, and with it the writer thread, fail.
        logger_factory=lambda *args: structlog.PrintLogger(sink),  # type: ignore[arg-type]  # as above: a file-like sink
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
