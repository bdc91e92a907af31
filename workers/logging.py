"""Structured logs of the workers: one JSON object per line (structlog).

Workers log through ``get_logger``; the worker command calls
``configure_logging`` once so that every line is JSON with a UTC timestamp,
the level and the event name, e.g.::

    {"expired": 500, "conflicts": 0, "duration_ms": 84.2, "event": "expiry.batch", ...}
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog


def configure_logging(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Render every log line as JSON on ``stream`` (default: stderr): structlog's
    own, and the standard library's (APScheduler, SQLAlchemy) as well."""
    out = stream or sys.stderr
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                stamp,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # APScheduler logs every job start and end at INFO; our jobs log their own line.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger with ``component=name`` (and any extra context). Lazy:
    it follows the configuration in force when it logs, not when it was made."""
    return structlog.get_logger(name, component=name, **bound)
