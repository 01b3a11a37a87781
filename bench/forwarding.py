"""Forwarding figures: events a second one worker delivers, and the plain alternative.

- ``many_profiles``: 20,000 profiles with 3 events each (batches of 3).
- ``hot_profiles``: 20 profiles with 5,000 events each (batches of 1000).
- ``alternative``: one RQ job per event, each posting its one event, run by one
  stock ``rq worker``; a time-boxed sample, since it is too slow to run whole.

The buffers are filled with the bridge's own code (``app.translate.translate`` of
Messaging status callbacks, ``app.contract``'s check, ``Buffer.admit``), each
callback routed by an explicit profile id (member ``store/id:mem_profile_…``, as
with ``?profileId=``), so no Lookup is involved. Every buffer falls due at one
instant T0 while ONE worker process waits, already running and idle; the figure
is events / (when the stand-in accepted the last event - T0), and every event is
checked to have arrived exactly once, at its profile.

Each function needs a Redis and a stand-in Memory API of its own for the time it
runs (``start_standin``: ``--latency-ms 20 --max-concurrency 64 --check shape``);
it resets the stand-in's recordings and uses its own key prefix and queue.
Run ``python -m bench.forwarding`` to measure all of them and print a table.
"""

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from rq import Queue, Worker

from app import contract, routing
from app.buffer import Buffer
from app.embedded import EmbeddedRedis, free_port
from app.lifecycle import in_order
from app.standin_schema import DEFAULT_CREDENTIALS
from app.translate import translate
from bench.plain import post_event
from bench.procs import Processes, redis_cpu_s, session_cpu_s, wait_http
from bench.traffic import (
    ACCOUNT_SID,
    BUSINESS,
    STATUSES,
    STORE,
    customer,
    message_sid,
    profile_id,
    scratch,
)

# The worker's settings for these figures. The stand-in's concurrency limit (64)
# plays the API's: the worker is given as many places, the most the API allows
# (the default, 16, is sized for the default rate limit of 100 requests a
# second). The rate limit is high, not off, so that its cost (its Redis round
# trips) is in the figure without it being the bound; an API's real limit is
# whatever its owner grants. INFO logs one line per batch, as deployed.
STANDIN_CONCURRENCY = 64
WORKER_ENV = {
    "BRIDGE_DELIVERY_CONCURRENCY": str(STANDIN_CONCURRENCY),
    "BRIDGE_RATE_LIMIT_RPS": "20000",
    "LOG_LEVEL": "INFO",
}
# A buffer admitted before T0 waits this long at most: far past any fill.
FAR_MS = 3_600_000


@dataclass(frozen=True)
class Forwarded:
    """What one worker did with buffers that all fell due at T0."""

    name: str
    profiles: int
    events: int
    seconds: float  # T0 to the stand-in's acceptance of the last event
    events_per_s: float
    posts: int
    events_per_post: float
    refused: int  # requests the stand-in answered with an error (429s: too many)
    unsettled: int  # members still due or in flight once the worker stopped
    missing: int  # events that never arrived
    duplicates: int  # arrivals past the first of an event
    fill_s: float  # how long admitting the events took (not in the figure)
    # CPU seconds each process used from T0 until the last event was accepted.
    worker_cpu_s: float  # the worker, its work horses and its scheduler
    standin_cpu_s: float
    redis_cpu_s: float

    @property
    def exactly_once(self) -> bool:
        """Tell whether every event arrived, once."""
        return self.missing == 0 and self.duplicates == 0 and self.unsettled == 0


@dataclass(frozen=True)
class Plain:
    """What the plain alternative did in its time-boxed sample."""

    worker: str  # RQ's worker class
    enqueued: int
    sampled: int  # events accepted inside the sample
    seconds: float
    events_per_s: float
    failed: int  # jobs RQ counts as failed when the sample ended


@dataclass(frozen=True)
class Item:
    """One event to forward: its member, profile, stored row and arrival key."""

    member: str
    profile: str
    row: tuple[str, str, int, str, str]  # (communication, status, rank, json, id)
    key: str  # "profile communicationId/lifecycle", as the stand-in reports it


def start_standin(
    procs: Processes,
    latency_ms: float = 20,
    max_concurrency: int = STANDIN_CONCURRENCY,
    check: str = "shape",
    credentials: tuple[str, str] = DEFAULT_CREDENTIALS,
) -> str:
    """Run the stand-in Memory API as its own process; return its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "app.standin", "--port", str(port)]
    command += ["--user", credentials[0], "--password", credentials[1]]
    command += ["--latency-ms", str(latency_ms)]
    command += ["--max-concurrency", str(max_concurrency), "--check", check]
    procs.spawn("standin", [*command, "--quiet"], {})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_standin/stats", "standin", procs.scratch)

    return url


def callbacks(profiles: int, per_profile: int) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (profile number, form) for Messaging status callbacks, round robin.

    Profile p's k-th event is message ``p + (k // 3) * profiles`` at status
    queued, sent, delivered in turn, so every callback admits one event.
    """
    for k in range(per_profile):
        for p in range(profiles):
            message = message_sid(p + (k // len(STATUSES)) * profiles)
            status = STATUSES[k % len(STATUSES)]
            yield (
                p,
                {
                    "AccountSid": ACCOUNT_SID,
                    "MessageSid": message,
                    "MessageStatus": status,
                    "From": BUSINESS,
                    "To": customer(p),
                },
            )


def items(profiles: int, per_profile: int, limit: int | None = None) -> list[Item]:
    """Translate and check the callbacks as the web does; return their events.

    ``limit`` stops after that many callbacks.
    """
    received = datetime.now(UTC)
    made = []
    for p, form in itertools.islice(callbacks(profiles, per_profile), limit):
        profile = profile_id(p)
        member = routing.member_for({"profileId": profile}, STORE, customer(p))
        for event in in_order(translate("messaging", form, received).events):
            body, _ = contract.conform(event.body)
            if contract.problems(body):
                raise ValueError(f"bench made an event the API would refuse: {body}")
            stored = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            row = (event.communication, event.status, event.rank, stored, "")
            key = f"{profile} {body['communicationId']}/{body['lifecycle']}"
            made.append(Item(member, profile, row, key))

    return made


def fill(buffer: Buffer, made: list[Item]) -> float:
    """Admit every event, one callback a round trip, due far ahead; return seconds."""
    started = time.perf_counter()
    for item in made:
        buffer.admit(item.member, [item.row], linger_ms=FAR_MS, comm_ttl_s=3600)

    return time.perf_counter() - started


def many_profiles(
    scratch: Path,
    redis_url: str,
    api_url: str,
    profiles: int = 20_000,
    env: dict[str, str] | None = None,
) -> Forwarded:
    """Figure 2: ``profiles`` profiles with 3 events each, one worker."""
    return forward("many profiles", scratch, redis_url, api_url, profiles, 3, env)


def hot_profiles(
    scratch: Path,
    redis_url: str,
    api_url: str,
    per_profile: int = 5_000,
    env: dict[str, str] | None = None,
) -> Forwarded:
    """Figure 3: 20 profiles with ``per_profile`` events each, one worker."""
    return forward("hot profiles", scratch, redis_url, api_url, 20, per_profile, env)


def forward(
    name: str,
    scratch: Path,
    redis_url: str,
    api_url: str,
    profiles: int,
    per_profile: int,
    env: dict[str, str] | None = None,
) -> Forwarded:
    """Fill buffers due at T0, let one idle worker deliver them, and measure it."""
    prefix = f"bench{os.getpid()}{int(time.time() * 1000)}"
    redis = Redis.from_url(redis_url)
    buffer = Buffer(redis, prefix)
    made = items(profiles, per_profile)
    _reset(api_url)
    worker_env = {
        **WORKER_ENV,
        **(env or {}),
        "REDIS_URL": redis_url,
        "MEMORY_BASE_URL": api_url,
        "TWILIO_ACCOUNT_SID": DEFAULT_CREDENTIALS[0],
        "TWILIO_AUTH_TOKEN": DEFAULT_CREDENTIALS[1],
        "BRIDGE_KEY_PREFIX": prefix,
        "BRIDGE_QUEUE_NAME": prefix,
    }
    with Processes(scratch) as procs:
        worker = procs.worker(worker_env)
        _wait_for_worker(redis, prefix, scratch)
        fill_s = fill(buffer, made)
        members = {item.member for item in made}
        before = (
            session_cpu_s(worker.pid),
            _accepted(api_url)["cpu_s"],
            redis_cpu_s(redis),
        )
        t0 = time.time() + 1.0
        redis.zadd(buffer.due_key, dict.fromkeys(members, t0 * 1000), xx=True)
        _wait_for_events(api_url, len(made), scratch)
        accepted = _accepted(api_url)
        refused = sum(_stats(api_url)["rejected"].values())
        worker_s = session_cpu_s(worker.pid) - before[0]
        redis_s = redis_cpu_s(redis) - before[2]
    unsettled = redis.zcard(buffer.due_key) + redis.zcard(buffer.leases_key)
    arrived = Counter(
        f"{profile} {key}" for profile, _, keys in accepted["batches"] for key in keys
    )
    expected = Counter(item.key for item in made)
    seconds = accepted["last_wall"] - t0
    posts = len(accepted["batches"])

    return Forwarded(
        name=name,
        profiles=profiles,
        events=len(made),
        seconds=seconds,
        events_per_s=len(made) / seconds,
        posts=posts,
        events_per_post=accepted["events"] / max(posts, 1),
        refused=refused,
        unsettled=unsettled,
        missing=sum((expected - arrived).values()),
        duplicates=sum((arrived - expected).values()),
        fill_s=fill_s,
        worker_cpu_s=worker_s,
        standin_cpu_s=accepted["cpu_s"] - before[1],
        redis_cpu_s=redis_s,
    )


def alternative(
    scratch: Path,
    redis_url: str,
    api_url: str,
    jobs: int = 3_000,
    sample_s: float = 15.0,
    worker_class: str = "rq.worker.Worker",
) -> Plain:
    """The plain alternative: one RQ job per event, one stock ``rq worker``.

    Enqueues the first ``jobs`` events of the many-profiles figure (one job
    each, ``bench.plain.post_event``), starts the worker, and measures events a
    second over the first ``sample_s`` seconds after its first POST arrives (a
    sample: 60,000 jobs would take tens of minutes at this rate).
    """
    queue_name = f"plain{os.getpid()}{int(time.time() * 1000)}"
    redis = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=redis)
    made = items(20_000, 3, limit=jobs)
    _reset(api_url)
    queue.enqueue_many(
        [
            Queue.prepare_data(post_event, (STORE, item.profile, item.row[3]))
            for item in made
        ]
    )
    env = {
        "MEMORY_BASE_URL": api_url,
        "TWILIO_ACCOUNT_SID": DEFAULT_CREDENTIALS[0],
        "TWILIO_AUTH_TOKEN": DEFAULT_CREDENTIALS[1],
    }
    rq = str(Path(sys.executable).parent / "rq")
    command = [rq, "worker", "-u", redis_url, "-w", worker_class, queue_name]
    with Processes(scratch) as procs:
        procs.spawn(f"plain-{worker_class.rsplit('.', 1)[-1]}", command, env)
        first = _wait_for_events(api_url, 1, scratch)
        deadline = first + sample_s
        while time.time() < deadline and _stats(api_url)["events"] < len(made):
            time.sleep(0.2)
    accepted = _accepted(api_url)
    failed = queue.failed_job_registry.count
    queue.empty()
    walls = sorted(wall for _, wall, _ in accepted["batches"])
    inside = [w for w in walls if w <= walls[0] + sample_s]
    seconds = inside[-1] - inside[0]

    return Plain(
        worker=worker_class.rsplit(".", 1)[-1],
        enqueued=len(made),
        sampled=len(inside),
        seconds=seconds,
        events_per_s=(len(inside) - 1) / seconds if seconds > 0 else 0.0,
        failed=failed,
    )


def _wait_for_worker(redis: Redis, queue_name: str, scratch: Path) -> None:
    """Wait until a worker listens on the queue (and so is idle)."""
    queue = Queue(queue_name, connection=redis)
    deadline = time.monotonic() + 30
    while Worker.count(queue=queue) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start: see {scratch}/worker.log")
        time.sleep(0.1)


def _wait_for_events(api_url: str, count: int, scratch: Path) -> float:
    """Wait until the stand-in accepted ``count`` events; return when that was.

    Gives up when no event arrives for 60 s, naming the logs to read.
    """
    seen, progress = -1, time.monotonic()
    while True:
        events = _stats(api_url)["events"]
        if events >= count:
            return time.time()
        if events != seen:
            seen, progress = events, time.monotonic()
        elif time.monotonic() - progress > 60:
            raise RuntimeError(
                f"the stand-in accepted {events} of {count} events and no more "
                f"for 60 s: see the logs in {scratch}"
            )
        time.sleep(0.05)


def _stats(api_url: str) -> dict[str, Any]:
    answer = requests.get(f"{api_url}/_standin/stats", timeout=10)
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()

    return found


def _accepted(api_url: str) -> dict[str, Any]:
    answer = requests.get(f"{api_url}/_standin/accepted", timeout=60)
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()

    return found


def _reset(api_url: str) -> None:
    requests.post(f"{api_url}/_standin/reset", json={}, timeout=10).raise_for_status()


def table(figures: list[Forwarded], plains: list[Plain]) -> str:
    """Return the figures and their ratios to the alternative as a text table."""
    lines = [
        f"{'figure':<16}{'events':>8}{'s':>8}{'events/s':>10}{'POSTs':>8}"
        f"{'ev/POST':>9}  once",
    ]
    for f in figures:
        once = "yes" if f.exactly_once else f"NO ({f.missing} lost, {f.duplicates} dup"
        once += "" if f.exactly_once else f", {f.unsettled} unsettled)"
        lines.append(
            f"{f.name:<16}{f.events:>8}{f.seconds:>8.2f}{f.events_per_s:>10.0f}"
            f"{f.posts:>8}{f.events_per_post:>9.1f}  {once}"
        )
        cpu = [("worker", f.worker_cpu_s), ("stand-in", f.standin_cpu_s)]
        cpu.append(("redis", f.redis_cpu_s))
        lines.append(
            "    CPU s (ms a POST): "
            + ", ".join(f"{n} {c:.1f} ({c / f.posts * 1000:.2f})" for n, c in cpu)
            + f"; {f.refused} POSTs refused"
        )
    for p in plains:
        lines.append(
            f"{'plain ' + p.worker:<16}{p.sampled:>8}{p.seconds:>8.2f}"
            f"{p.events_per_s:>10.0f}{p.sampled:>8}{1:>9.1f}  sample, {p.failed} failed"
        )
    many = next((f for f in figures if f.name == "many profiles"), None)
    for p in plains:
        if many is not None and p.events_per_s > 0:
            ratio = many.events_per_s / p.events_per_s
            lines.append(f"many profiles / plain {p.worker}: {ratio:.1f}x")

    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure the forwarding figures and the alternative; print a table."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.forwarding", description=main.__doc__
    )
    parser.add_argument("--only", choices=("many", "hot", "plain"), action="append")
    parser.add_argument("--profiles", type=int, default=20_000, help="many: profiles")
    parser.add_argument("--per-profile", type=int, default=5_000, help="hot: events")
    parser.add_argument("--sample-s", type=float, default=15.0, help="plain: sample")
    parser.add_argument("--simple", action="store_true", help="plain: SimpleWorker too")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the bridge's worker, e.g. BRIDGE_DELIVERY_CONCURRENCY=32",
    )
    args = parser.parse_args(argv)
    only = set(args.only or ("many", "hot", "plain"))
    env = dict(item.split("=", 1) for item in args.set)

    folder = scratch()
    print(f"bench.forwarding: logs in {folder}", flush=True)
    redis = EmbeddedRedis(folder / "redis", appendonly=False).start()
    figures: list[Forwarded] = []
    plains: list[Plain] = []
    try:
        with Processes(folder) as procs:
            api = start_standin(procs)
            if "many" in only:
                figures.append(
                    many_profiles(folder, redis.url, api, args.profiles, env)
                )
            if "hot" in only:
                figures.append(
                    hot_profiles(folder, redis.url, api, args.per_profile, env)
                )
            if "plain" in only:
                classes = ["rq.worker.Worker"]
                if args.simple:
                    classes.append("rq.worker.SimpleWorker")
                for worker_class in classes:
                    plains.append(
                        alternative(
                            folder,
                            redis.url,
                            api,
                            sample_s=args.sample_s,
                            worker_class=worker_class,
                        )
                    )
    finally:
        redis.stop()
    print(table(figures, plains))

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
