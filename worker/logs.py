"""Structured logging: structlog to stderr, human lines or one JSON object per event.

Every event passes a redaction step: keys that name a secret are masked, and any
secret registered with `worker.redaction.register_secret` is replaced wherever it appears.
Patient data never reaches the log because events carry ids, lines and codes only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger

from worker.redaction import REDACTED, SECRET_KEYS, redact


def _redact_event(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(
    *, json_logs: bool = False, level: int = logging.INFO, file: TextIO | None = None
) -> None:
    """Send structlog events to stderr (or `file`), as JSON or readable key=value lines."""
    out = file or sys.stderr
    renderer: Any
    if json_logs:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger bound to a component name."""
    logger: FilteringBoundLogger = structlog.get_logger(component=name)
    return logger


def configure_for_people(*, json_logs: bool, verbose: bool, log_file: Path) -> Path | None:
    """On a terminal, log events would cut through the progress and the summary tables:
    there they go to a log file (its path returned) unless --verbose. Elsewhere (cron,
    systemd, a pipe) and with --json-logs they go to stderr as before."""
    if json_logs or verbose or not sys.stderr.isatty():
        configure_logging(json_logs=json_logs)
        return None
    path = log_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (process-long)
    except OSError:
        configure_logging(json_logs=False)
        return None
    configure_logging(json_logs=False, file=handle)
    return path


# Until a command chooses (import, verify, ...), events go to stderr: structlog's own
# default prints them to stdout, where `validate --online` mixed a log line into the
# counts a script reads.
configure_logging()
