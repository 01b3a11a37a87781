"""Chaos: thousands of signed callbacks through real processes while things break.

gunicorn, the RQ worker and redis-server run as real processes; the stand-in
Memory API answers 429, 500, 400 (for marked events) and hangs, and the test
kills the worker and its work horse (SIGKILL), restarts it Heroku-style
(SIGTERM, SIGKILL 10 s later, while the API hangs), kills a gunicorn worker, and
stops Redis for 5 s (SIGKILL, restarted from its append-only file). Then it
counts events sent, received, duplicated and dead-lettered. Zero lost is the bar.

The short version runs in CI. CHAOS_LONG=1 runs the long one (about 10 minutes):
``CHAOS_LONG=1 .venv/bin/pytest tests/test_chaos.py -m chaos -s``.
"""

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.embedded import EmbeddedRedis
from conftest import Bridge, message

pytestmark = pytest.mark.chaos

LONG = os.environ.get("CHAOS_LONG") == "1"
CALLBACKS = int(os.environ.get("CHAOS_CALLBACKS", 20_000 if LONG else 1500))
CYCLES = int(os.environ.get("CHAOS_CYCLES", 8 if LONG else 1))
REFUSED_CODE = "31337"  # the stand-in answers 400 to events with this errorCode


def children(pid: int) -> list[int]:
    """Return the child PIDs of a process we started (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send a signal to one PID we started; it may be gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Sender:
    """Posts each callback until the bridge answers 2xx, like a patient Twilio."""

    def __init__(self, bridge: Bridge, total: int, seconds: float) -> None:
        self.bridge, self.total, self.seconds = bridge, total, seconds
        self.codes: Counter[str] = Counter()
        self.slow_refusals: list[float] = []  # non-2xx answers slower than 2 s
        self.refused = 0
        self.lock = threading.Lock()

    def form(self, n: int) -> dict[str, str]:
        extra = {"ErrorCode": REFUSED_CODE} if n % 97 == 0 else {}
        return message(f"SM{n:032d}", "sent", to=f"+1500555{n % 200:04d}", **extra)

    def send(self, n: int) -> None:
        form = self.form(n)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                code = str(self.bridge.post("/twilio/messaging", form).status_code)
            except requests.RequestException as error:
                code = type(error).__name__
            took = time.monotonic() - started
            with self.lock:
                self.codes[code] += 1
                if code.isdigit() and not code.startswith("2") and took > 2.0:
                    self.slow_refusals.append(took)
            if code.startswith("2"):
                return
            time.sleep(0.2)
        raise AssertionError(f"callback {n} was never stored")

    def run(self) -> None:
        pace = self.seconds / self.total
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            futures = []
            for n in range(self.total):
                delay = started + n * pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.send, n))
            for future in futures:
                future.result()
        self.refused = sum(1 for n in range(self.total) if n % 97 == 0)


class Chaos:
    """The faults, injected on a schedule while the Sender runs."""

    def __init__(self, bridge: Bridge, redis_server: EmbeddedRedis, standin) -> None:
        self.bridge, self.redis_server, self.standin = bridge, redis_server, standin
        self.log: list[str] = []

    def note(self, line: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {line}")

    def cycle(self) -> None:
        self.standin.script(status=429, count=30, retry_after=1)
        self.note("api: 30 x 429")
        time.sleep(1.5)
        self.standin.script(status=500, count=30)
        self.note("api: 30 x 500")
        time.sleep(1.5)
        self.kill_worker()
        time.sleep(2)
        self.kill_gunicorn_worker()
        time.sleep(1.5)
        self.stop_redis(5.0)
        time.sleep(2)
        self.heroku_restart()
        time.sleep(1)

    def kill_worker(self) -> None:
        """SIGKILL the work horse and the worker, then start a new worker."""
        worker = self.bridge.worker
        assert worker is not None
        horses = children(worker.pid)
        for pid in horses:
            kill(pid)
        kill(worker.pid)
        worker.wait(10)
        self.note(f"SIGKILL worker {worker.pid} and horses {horses}")
        self.bridge.start_worker()

    def kill_gunicorn_worker(self) -> None:
        assert self.bridge.web is not None
        workers = children(self.bridge.web.pid)
        if workers:
            victim = random.choice(workers)
            kill(victim)
            self.note(f"SIGKILL gunicorn worker {victim}")

    def stop_redis(self, seconds: float) -> None:
        self.redis_server.stop(kill=True)
        self.note(f"redis: SIGKILL, down {seconds:g} s")
        time.sleep(seconds)
        self.redis_server.start()
        self.note("redis: restarted from its AOF")

    def heroku_restart(self) -> None:
        """The API hangs; SIGTERM the worker, SIGKILL it 10 s later if alive."""
        worker = self.bridge.worker
        assert worker is not None
        self.standin.script(hang=8.0, count=8)
        time.sleep(1.0)  # let a drain get stuck on the hanging API
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(10)
            how = "exited after SIGTERM"
        except Exception:
            worker.kill()
            worker.wait(10)
            how = "needed SIGKILL"
        self.note(f"worker {worker.pid} SIGTERM (API hanging): {how}")
        self.bridge.start_worker()

    def run(self) -> None:
        for _ in range(CYCLES):
            self.cycle()


def where_are(client, accounted: set[str]) -> str:
    """Describe where the events that were not accounted for are (diagnosis)."""
    from app.ids import communication_id

    lines = []
    lists = [k for k in client.keys("mb:*") if client.type(k) == b"list"]
    for n in range(CALLBACKS):
        sid = f"SM{n:032d}"
        cid = communication_id(sid)
        if cid in accounted:
            continue
        holders = [
            k.decode()
            for k in lists
            if any(cid.encode() in e for e in client.lrange(k, 0, -1))
        ]
        comm = client.hgetall(f"mb:comm:{sid}")
        lines.append(f"{sid} refused={n % 97 == 0} comm={comm} in={holders}")

    return "\n".join(lines)


def test_no_event_is_lost_under_chaos(standin, settings, tmp_path):
    """Every callback answered 2xx reaches the API or a dead letter; none is lost."""
    from redis import Redis

    from jobs import deadletters

    redis_server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    standin.refuse("errorCode", REFUSED_CODE, "errorCode 31337 is refused.")
    overrides = {
        "redis_url": redis_server.url,
        "linger_ms": 300,
        "http_timeout_s": 1.0,
        "drain_seconds": 3.0,
        "retry_max_attempts": 1000,
    }
    bridge = Bridge({**settings, **overrides}, tmp_path).start()
    seconds = 25.0 * CYCLES
    sender = Sender(bridge, CALLBACKS, seconds)
    chaos = Chaos(bridge, redis_server, standin)
    started = time.monotonic()
    try:
        faults = threading.Thread(target=chaos.run)
        faults.start()
        sender.run()
        faults.join()
        sent_done = time.monotonic() - started

        client = Redis.from_url(redis_server.url)
        from app import config

        s = config.load({**settings, **overrides})

        def accounted() -> tuple[set[str], set[str]]:
            received = {e.event["communicationId"] for e in standin.events()}
            dead = {
                e["communicationId"]
                for letter in deadletters.listing(client, s, limit=10**6)
                for e in letter["events"]
            }
            return received, dead

        deadline = time.monotonic() + 120
        received, dead = accounted()
        while len(received | dead) < CALLBACKS and time.monotonic() < deadline:
            time.sleep(1)
            received, dead = accounted()
        drained = time.monotonic() - started
        total_received = len(standin.events())
        figures = {
            "callbacks sent (stored)": CALLBACKS,
            "answers": dict(sender.codes),
            "events received": len(received),
            "duplicates": total_received - len(received),
            "dead-lettered": len(dead),
            "lost": CALLBACKS - len(received | dead),
            "stand-in rejected": standin.rejected(),
            "seconds to send": round(sent_done, 1),
            "seconds until all accounted": round(drained, 1),
        }
        print("\nchaos figures:", figures)
        print("\n".join(chaos.log))
        if figures["lost"]:
            print(where_are(client, received | dead))

        assert figures["lost"] == 0, figures
        assert len(dead) == sender.refused, figures  # only the refused events
        assert not received & dead
        assert sender.slow_refusals == [], "a refusal took over 2 s"
        leftovers = [k for k in client.keys("mb:*") if client.ttl(k) < 0]
        assert leftovers == [], f"keys with no TTL after draining: {leftovers}"
    finally:
        bridge.stop()
        redis_server.stop()


def send_many(bridge: Bridge, numbers: range) -> None:
    for n in numbers:
        form = message(f"SM{n:032d}", "sent", to=f"+1500555{n:04d}")
        assert bridge.post("/twilio/messaging", form).status_code == 204


def test_sigkilled_worker_redelivers_within_the_lease(start_bridge, standin, redis):
    """Worker and horse SIGKILLed mid-drain: all arrive within the lease of 14 s."""
    from jobs.drain import lease_s

    bridge = start_bridge(linger_ms=100, http_timeout_s=2.0)
    standin.script(hang=30.0, count=1000)
    send_many(bridge, range(20))
    deadline = time.monotonic() + 10
    while not redis.keys("mb:inflight:*") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis.keys("mb:inflight:*"), "no drain took the batches"
    worker = bridge.worker
    for pid in children(worker.pid):
        kill(pid)
    kill(worker.pid)
    worker.wait(10)
    killed = time.monotonic()
    standin.reset()
    bridge.start_worker()

    standin.wait_for_events(20, timeout=60)
    took = time.monotonic() - killed
    from app import config

    bound = lease_s(config.load({"http_timeout_s": 2.0, "rate_limit_rps": 0}))
    assert bound == 14.0
    assert took <= bound + 5, f"redelivery took {took:.1f} s"  # + a poll, start-up
    assert len({e.event["communicationId"] for e in standin.events()}) == 20


def test_sigterm_while_the_api_hangs_loses_nothing(start_bridge, standin, redis):
    """Heroku restart with the API hanging: no new work after SIGTERM, none lost."""
    bridge = start_bridge(linger_ms=100, http_timeout_s=5.0)
    standin.script(hang=30.0, count=1000)
    send_many(bridge, range(10))
    deadline = time.monotonic() + 10
    while not redis.keys("mb:inflight:*") and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = bridge.worker
    worker.send_signal(signal.SIGTERM)
    send_many(bridge, range(10, 20))  # after SIGTERM: for the next worker
    wait_for_exit(worker)
    later = [
        f"mb:buf:mem_store_{'0' * 26}/phone:+1500555{n:04d}" for n in range(10, 20)
    ]
    assert all(redis.exists(key) for key in later), "work taken after SIGTERM"

    standin.reset()
    bridge.start_worker()
    standin.wait_for_events(20, timeout=60)
    assert len({e.event["communicationId"] for e in standin.events()}) == 20


def test_sigterm_while_a_drain_idles_ends_it_at_once(start_bridge, standin, redis):
    """SIGTERM while a drain waits for a buffer due in 8 s: exits now, loses nothing.

    A drain that finds nothing due waits for the next buffer falling due within
    the linger; Heroku's SIGKILL follows SIGTERM after 10 s, so that wait must
    end at the SIGTERM, and the next worker delivers what was waited for.
    """
    bridge = start_bridge(linger_ms=10_000)
    send_many(bridge, range(5))  # due in 10 s
    time.sleep(8)
    send_many(bridge, range(5, 10))  # due 8 s after the first five
    standin.wait_for_events(5, timeout=30)
    deadline = time.monotonic() + 10
    while redis.keys("mb:inflight:*") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # settled: the drain now waits for the second five
    worker = bridge.worker
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    wait_for_exit(worker)
    took = time.monotonic() - stopped
    assert took < 5, f"the idle drain held the worker {took:.1f} s after SIGTERM"
    later = [f"mb:buf:mem_store_{'0' * 26}/phone:+1500555{n:04d}" for n in range(5, 10)]
    assert all(redis.exists(key) for key in later), "work taken after SIGTERM"

    standin.reset()
    bridge.start_worker()
    standin.wait_for_events(5, timeout=60)
    assert len({e.event["communicationId"] for e in standin.events()}) == 5


def wait_for_exit(worker: subprocess.Popen[bytes], seconds: float = 10) -> None:
    """Wait for a SIGTERMed worker, as Heroku does before its SIGKILL; fail if late."""
    try:
        worker.wait(seconds)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)
        pytest.fail(f"the worker was still running {seconds:g} s after SIGTERM")
