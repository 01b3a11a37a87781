"""Statuses and event types the bridge does not know: counted, logged once.

Twilio adds statuses and event types without notice. The bridge answers them
2xx and forwards nothing; each value is counted in the minute's stats hash as
``unknown:{kind}:{value}`` (for /metrics) and logged once per process.
"""

import logging
import re
import threading

from app.logs import log

# How many values one process remembers having logged; beyond it, values are
# still counted but no longer logged, so a flood of junk cannot grow memory.
MAX_LOGGED = 1000
_MAX_VALUE = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+-]")
_logged: set[str] = set()
_lock = threading.Lock()


def field(kind: str, value: str) -> str:
    """Return the stats field that counts ``value``: ``unknown:{kind}:{value}``."""
    return f"unknown:{kind}:{clean(value)}"


def clean(value: str) -> str:
    """Return ``value`` cut to 64 characters, anything unusual as ``_``."""
    return _UNSAFE.sub("_", value[:_MAX_VALUE]) or "_"


def log_once(logger: logging.Logger, kind: str, value: str) -> None:
    """Log an unknown value the first time this process sees it."""
    name = field(kind, value)
    with _lock:
        if name in _logged or len(_logged) >= MAX_LOGGED:
            return
        _logged.add(name)
    log(
        logger,
        "callback.unknown",
        logging.WARNING,
        kind=kind,
        value=clean(value),
        detail="answered 2xx and not forwarded; counted as " + name,
    )
