"""Logging: an event name plus key=value fields, JSON in production.

Call ``log(logger, "batch.delivered", events=3)``. Phone numbers go through
``mask()`` before they become a field; secrets registered with ``configure()``
are replaced wherever they would appear in a line, and so is any phone number
that slipped through in a message (``redact()``), as a second line of defence.
"""

import json
import logging
import re
import sys
import time
from typing import Any

# An E.164 number as Twilio writes it (+ and up to 15 digits), also URL-encoded.
_PHONE = re.compile(r"(\+|%2[Bb])(\d{3,11})(\d{4})(?!\d)")


def mask(address: str | None) -> str:
    """Return ``address`` with all but its last 4 characters hidden."""
    if not address:
        return ""
    keep = address[-4:] if len(address) > 4 else ""

    return "*" * min(len(address) - len(keep), 8) + keep


def redact(text: str) -> str:
    """Return ``text`` with every phone number in it masked to its last 4 digits."""
    return _PHONE.sub(lambda m: "*" * min(len(m[1] + m[2]), 8) + m[3], text)


def log(
    logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any
) -> None:
    """Write one line: the event name and its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class Formatter(logging.Formatter):
    """Render a record as JSON or as ``event key=value``, with secrets scrubbed."""

    def __init__(self, as_json: bool = True, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.as_json = as_json
        self.secrets = tuple(s for s in secrets if len(s) >= 4)

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            k: v for k, v in getattr(record, "fields", {}).items() if v is not None
        }
        event = record.getMessage()
        if record.exc_info:
            fields = {**fields, "error": self.formatException(record.exc_info)}
        if self.as_json:
            line = json.dumps(
                {
                    "ts": round(record.created, 3),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "event": event,
                    **fields,
                },
                default=str,
            )
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            pairs = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{stamp} {record.levelname.lower():7} {event} {pairs}".rstrip()

        return self._scrub(line)

    def _scrub(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "***")

        return redact(line)


def configure(fmt: str, level: str, secrets: tuple[str, ...] = ()) -> None:
    """Send every logger's lines to stderr in ``fmt`` ("json" or "text")."""
    # A line holds the event and its fields only. Not gathering the caller's
    # file and line, thread and process for each record (the "Optimization"
    # part of Python's logging HOWTO) takes a third off every line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(fmt == "json", secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def json_formatter() -> Formatter:
    """Return the JSON formatter, scrubbing the configured secrets (for gunicorn)."""
    from app import config

    return Formatter(True, config.load().secrets)


def text_formatter() -> Formatter:
    """Return the text formatter, scrubbing the configured secrets (for gunicorn)."""
    from app import config

    return Formatter(False, config.load().secrets)
