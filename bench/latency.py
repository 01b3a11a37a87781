"""Figures 4 and 5: end-to-end latency at a steady rate, and the cost per event.

The whole bridge runs: gunicorn, one worker, Redis, and the stand-in Memory API
(20 ms per request, a concurrency limit). Twilio-like traffic arrives at a steady
rate: each message's queued, sent and delivered within 0.4 s, to 1,000 customers.
An event's latency runs from its callback's arrival (the event's ``timestamp``,
which the bridge sets on receipt for a status callback) to the stand-in's
acceptance (after its fixed latency). Redis's INFO commandstats, reset
before the load, gives commands per event; the worker's resident memory is
sampled through the run.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from redis import Redis

from bench import traffic
from bench.forwarding import start_standin
from bench.procs import Processes

PROFILES = 1000


@dataclass(frozen=True)
class Latency:
    """The end-to-end figures of one run."""

    rate: float  # callbacks sent per second
    answered_2xx: int
    events: int  # events the stand-in accepted
    p50_ms: float
    p99_ms: float
    max_ms: float
    linger_ms: int
    posts_per_window: float  # POSTs per profile per linger window; 1 is ideal
    events_per_post: float
    commands_per_event: float  # Redis commands, those inside scripts included
    scripts_per_event: float  # the bridge's own steps (EVALSHA): admit, claim, …
    worker_rss_mb: float  # the worker and its work horse, at most, together
    commands: dict[str, int]


def run(
    scratch: Path,
    redis_url: str,
    env: dict[str, str],
    rate: float = 500,
    seconds: float = 20,
) -> Latency:
    """Send Twilio-like traffic at ``rate`` through the whole bridge; measure it."""
    redis = Redis.from_url(redis_url)
    redis.flushall()
    linger_ms = int(env.get("BRIDGE_LINGER_MS", "1000"))
    with Processes(scratch) as procs:
        # The whole schema is checked here, as the API would: batches are small.
        credentials = (env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"])
        api = start_standin(procs, check="schema", credentials=credentials)
        env = {**env, "MEMORY_BASE_URL": api}
        bridge_url = procs.gunicorn("web", "app:create_app()", env)
        worker = procs.worker(env)
        planned = traffic.sends(bridge_url, rate, seconds, PROFILES)
        expected = len(planned)
        redis.config_resetstat()
        rss = _Sampler(worker.pid)
        rss.start()
        port = int(bridge_url.rsplit(":", 1)[1])
        sent = traffic.steady("127.0.0.1", port, planned)
        batches = _wait_for(api, expected, timeout=linger_ms / 1000 + 30)
        rss.stop()
        stats = redis.info("commandstats")

    latencies: list[float] = []
    for batch in batches:
        accepted = batch["accepted_at"]
        for event in batch["events"]:
            received = datetime.fromisoformat(event["timestamp"]).timestamp()
            latencies.append((accepted - received) * 1000)
    commands = {name[len("cmdstat_") :]: int(s["calls"]) for name, s in stats.items()}
    events = len(latencies)
    # A message's three callbacks arrive within 0.4 s, well inside one linger
    # window, and a customer's next message comes seconds later: so POSTs per
    # message are POSTs per profile per linger window.
    messages = expected // len(traffic.STATUSES)
    scripts = sum(commands.get(c, 0) for c in ("evalsha", "eval"))

    return Latency(
        rate=sent.rate,
        answered_2xx=sent.answered_2xx,
        events=events,
        p50_ms=traffic.percentile(latencies, 50),
        p99_ms=traffic.percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
        linger_ms=linger_ms,
        posts_per_window=len(batches) / messages if messages else 0.0,
        events_per_post=events / len(batches) if batches else 0.0,
        commands_per_event=sum(commands.values()) / events if events else 0.0,
        scripts_per_event=scripts / events if events else 0.0,
        worker_rss_mb=rss.peak_kb / 1024,
        commands=commands,
    )


def _wait_for(api: str, events: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until the stand-in has accepted ``events``; return its batches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = requests.get(api + "/_standin/stats", timeout=5).json()
        if stats["events"] >= events:
            break
        time.sleep(0.5)
    received: list[dict[str, Any]] = requests.get(
        api + "/_standin/received", timeout=60
    ).json()

    return received


class _Sampler(threading.Thread):
    """Samples the resident memory of a process and its children, at most."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            pids = [self.pid, *_children(self.pid)]
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass

    return 0
