"""The container's HEALTHCHECK: ``python -m app.healthcheck [web|worker]``.

One image runs either process, so the check finds out which from PID 1's command
line (or takes it as an argument): the web must answer ``/healthz`` on ``PORT``;
the worker must have sent RQ a heartbeat from this host within 90 s. Exit 0 for
healthy, 1 otherwise, with one line saying why.
"""

import os
import socket
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from app import config
from app.buffer import connect
from app.health import HEARTBEAT_MAX_AGE


def role() -> str:
    """Return "worker" when PID 1 runs the worker, else "web"."""
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "web"

    return "worker" if b"worker" in argv else "web"


def web(port: str) -> str:
    """Return "" when /healthz answers 200 on ``port``, else the reason."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return "" if response.status == 200 else f"{url} answered {response.status}"
    except OSError as error:
        return f"{url} did not answer: {error}"


def worker() -> str:
    """Return "" when an RQ worker on this host sent a heartbeat lately."""
    from redis import RedisError
    from rq import Worker

    settings = config.load()
    try:
        workers = Worker.all(connection=connect(settings.redis_url, timeout=2))
    except RedisError as error:
        return f"Redis did not answer: {error}"
    here, now = socket.gethostname(), datetime.now(UTC)
    for w in workers:
        beat = w.last_heartbeat
        if w.hostname != here or not beat:
            continue
        if now - beat.replace(tzinfo=UTC) < HEARTBEAT_MAX_AGE:
            return ""

    return f"no worker on {here} sent a heartbeat in the last 90 s"


def main(argv: list[str]) -> int:
    """Check the web or the worker; print the reason and return 1 when unhealthy."""
    which = argv[0] if argv else role()
    problem = worker() if which == "worker" else web(os.environ.get("PORT", "8000"))
    if problem:
        print(f"unhealthy {which}: {problem}", file=sys.stderr)
        return 1

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
