"""One structlog setup for every stage: key-value events with the stage and trace id bound.

On a terminal the lines are readable; anywhere else (CI, docker, files) they are JSON lines, so
logs of four processes can be merged and filtered by ``trace_id``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    stage: str, level: str = "info", fmt: str = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog process-wide and bind ``stage`` to every event of this process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(stage=stage, trace_id=None)


@contextmanager
def trace(trace_id: str, **extra: object) -> Iterator[None]:
    """Bind the trace id (and e.g. the message id) to every event logged inside the block."""
    tokens = structlog.contextvars.bind_contextvars(trace_id=trace_id, **extra)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """The project's logger; events are key-value (``log.info("snapshot_closed", step=t)``)."""
    return structlog.get_logger(name)
