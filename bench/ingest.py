"""Figure 1: signed callbacks stored per second, against a bare Flask endpoint.

Both run under the same gunicorn configuration (``app/gunicorn_conf.py``) on the
same Redis, loaded by the same wrk; they take turns, so a busy moment of a shared
machine falls on both. Then the bridge alone takes a steady load at half its peak,
open loop, for its latency. No worker runs: this is the web's own cost, and what
it stores is what "Redis memory per buffered event" is measured on.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from redis import Redis

from bench import traffic
from bench.procs import Processes, children_cpu_s, redis_cpu_s, session_cpu_s

PROFILES = 1000  # customers the callbacks go to, routed by phone


@dataclass(frozen=True)
class Ingest:
    """The ingest figures of one run."""

    bridge: traffic.Peak
    bare: traffic.Peak
    half: traffic.Steady
    events_buffered: int
    memory_per_event: float  # bytes of Redis memory per buffered event

    @property
    def ratio(self) -> float:
        """The bridge's peak as a share of the bare endpoint's."""
        return self.bridge.rps / self.bare.rps


def run(
    scratch: Path,
    redis_url: str,
    env: dict[str, str],
    seconds: float = 10,
    rounds: int = 2,
    connections: int = 32,
) -> Ingest:
    """Measure the bridge's and the bare endpoint's peaks, then the bridge at half."""
    redis = Redis.from_url(redis_url)
    redis.flushall()
    used_before = int(redis.info("memory")["used_memory"])
    with Processes(scratch) as procs:
        bare_url = procs.gunicorn("bare", "bench.bare:create_app()", env)
        bridge_url = procs.gunicorn("web", "app:create_app()", env)
        sessions = {"bare": procs.running[-2].pid, "bridge": procs.running[-1].pid}
        # Each round posts callbacks never sent before, so each one stores an
        # event (sent again, it would be a duplicate: cheaper to answer).
        count = int(seconds * 4000)  # more than either will take in a round
        peaks: dict[str, list[traffic.Peak]] = {"bare": [], "bridge": []}
        for r in range(rounds):
            for name, url in (("bare", bare_url), ("bridge", bridge_url)):
                path = scratch / f"{name}.requests"
                items = traffic.callbacks(url, count, PROFILES, first=r * count)
                traffic.write_requests(items, path)
                before = _cpu(sessions[name], redis)
                peak = traffic.wrk(url, path, seconds, connections)
                after = _cpu(sessions[name], redis)
                used = [b - a for a, b in zip(before, after, strict=True)]
                cpu_us = {
                    part: spent / peak.requests * 1e6
                    for part, spent in zip(("web", "redis", "wrk"), used, strict=True)
                }
                peaks[name].append(replace(peak, cpu_us=cpu_us))
                path.unlink()  # tens of MB, and never read again

        buffered = _buffered(redis)
        used_after = int(redis.info("memory")["used_memory"])

        best = {name: max(runs, key=lambda p: p.rps) for name, runs in peaks.items()}
        rate = best["bridge"].rps / 2
        fresh = traffic.callbacks(
            bridge_url, int(rate * seconds), PROFILES, first=rounds * count
        )
        planned = traffic.evenly(list(fresh), rate)
        port = int(bridge_url.rsplit(":", 1)[1])
        half = traffic.steady("127.0.0.1", port, planned)

    return Ingest(
        bridge=best["bridge"],
        bare=best["bare"],
        half=half,
        events_buffered=buffered,
        memory_per_event=(used_after - used_before) / buffered if buffered else 0.0,
    )


def _cpu(session: int, redis: Redis) -> tuple[float, float, float]:
    """Return CPU seconds so far: a gunicorn's processes, Redis, reaped children."""
    return session_cpu_s(session), redis_cpu_s(redis), children_cpu_s()


def _buffered(redis: Redis) -> int:
    """Count the events waiting in every profile buffer."""
    pipe = redis.pipeline(transaction=False)
    keys = list(redis.scan_iter("mb:buf:*", count=1000))
    for key in keys:
        pipe.llen(key)

    return sum(pipe.execute()) if keys else 0
