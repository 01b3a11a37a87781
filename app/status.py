"""What the bridge holds right now, read from Redis: one ``snapshot()`` for all.

The status page (HTML and JSON) and the Prometheus metrics are both drawn from
``snapshot()``, so every web process answers the same. Two parts plug into the
worker side's modules once they exist, each behind one small function here:
dead letters (``dead_letters`` and ``replay_dead_letter``) and the upstream
state (``upstream_state``).
"""

import hashlib
import itertools
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis import Redis

from app.buffer import text
from app.logs import mask
from app.routing import parse_member

if TYPE_CHECKING:
    from app import Bridge

# Rates are shown for this many minutes, the current (partial) one included.
RATE_MINUTES = 15
# At most this many in-flight batches are read one by one for their age.
INFLIGHT_SAMPLE = 1000
# At most this many buffers are counted per snapshot: about 2 s of Redis work,
# well inside the web's 10 s request timeout even during a long upstream outage.
BUFFER_SCAN_MAX = 100_000
DEAD_LETTERS_SHOWN = 50

# ZADD LT: due now, even when the member already waits out its linger.
_REPLAY = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
redis.call('RPUSH', KEYS[3], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], 'LT', ARGV[2], ARGV[3])
return #ARGV - 3
"""


def snapshot(bridge: "Bridge", now_ms: int | None = None) -> dict[str, Any]:
    """Return buffers, due profiles, batches in flight, dead letters and rates."""
    now_ms = now_ms or int(time.time() * 1000)
    buffer = bridge.buffer
    redis, prefix = buffer.redis, buffer.prefix

    pipe = redis.pipeline(transaction=False)
    pipe.zcard(buffer.due_key)
    pipe.zcount(buffer.due_key, "-inf", now_ms)
    pipe.zrange(buffer.due_key, 0, 0, withscores=True)
    pipe.llen(f"{prefix}:unroutable")
    due, due_now, earliest_due, parked = pipe.execute()

    buffered = _buffered(redis, prefix)
    in_flight = _in_flight(redis, prefix, buffer.leases_key, now_ms)
    waiting_since = [ms for ms in (in_flight.pop("oldest_first_ms"),) if ms]
    if earliest_due:  # a member's due time is its first event's arrival + linger
        waiting_since.append(int(earliest_due[0][1]) - bridge.settings.linger_ms)
    oldest = min(waiting_since) if waiting_since else None
    count, letters = dead_letters(bridge)

    return {
        "at": _iso(now_ms),
        "buffer": {
            "events": buffered["events"],
            "profiles": buffered["profiles"],
            "due_profiles": int(due),
            "due_now": int(due_now),
            "parked_events": int(parked),
            # False when there were more buffers than one snapshot counts.
            "complete": buffered["complete"],
        },
        "in_flight": in_flight,
        "oldest_waiting": {
            "since": _iso(oldest) if oldest else None,
            "age_s": round(max(0, now_ms - oldest) / 1000, 1) if oldest else None,
        },
        "dead_letters": {"count": count, "recent": letters},
        "rates": rates(bridge, now_ms),
        "upstream": upstream_state(bridge),
    }


def _buffered(redis: Redis, prefix: str) -> dict[str, Any]:
    """Count the buffers and the events waiting in them, up to BUFFER_SCAN_MAX."""
    keys = list(
        itertools.islice(
            redis.scan_iter(match=f"{prefix}:buf:*", count=1000), BUFFER_SCAN_MAX
        )
    )
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    lengths = pipe.execute() if keys else []

    return {
        "profiles": len(keys),
        "events": sum(int(n) for n in lengths),
        "complete": len(keys) < BUFFER_SCAN_MAX,
    }


def _in_flight(
    redis: Redis, prefix: str, leases_key: str, now_ms: int
) -> dict[str, Any]:
    """Count the batches in flight, those waiting to retry, and their events."""
    members = [text(m) for m in redis.zrange(leases_key, 0, INFLIGHT_SAMPLE - 1)]
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(leases_key)
    for member in members:
        pipe.llen(f"{prefix}:inflight:{member}")
        pipe.hmget(f"{prefix}:batch:{member}", "first_ms", "retry_at_ms")
    total, *rows = pipe.execute()
    lengths, batches = rows[0::2], rows[1::2]
    firsts = [int(first) for first, _ in batches if first]
    retrying = sum(1 for _, retry in batches if retry and int(retry) > now_ms)

    return {
        "batches": int(total),
        "events": sum(int(n) for n in lengths),
        "retrying": retrying,
        "oldest_first_ms": min(firsts) if firsts else None,
    }


def rates(bridge: "Bridge", now_ms: int) -> dict[str, Any]:
    """Return the per-minute counters of the last minutes, newest first."""
    buffer = bridge.buffer
    minute = now_ms // 60000
    pipe = buffer.redis.pipeline(transaction=False)
    for n in range(RATE_MINUTES):
        pipe.hgetall(buffer.stats_key((minute - n) * 60000))
    rows = [{text(k): int(float(v)) for k, v in raw.items()} for raw in pipe.execute()]
    minutes = [
        {"minute": _iso((minute - n) * 60000), **row} for n, row in enumerate(rows)
    ]
    # The last whole minutes: the current one is still counting.
    whole = rows[1:6]
    delivered = sum(m.get("events_delivered", 0) for m in whole)
    ok = sum(m.get("batches_delivered", 0) for m in whole)
    failed = sum(m.get("batches_retried", 0) for m in whole)

    return {
        "events_delivered_per_s": round(delivered / (60 * len(whole)), 2),
        "batch_error_ratio": round(failed / (ok + failed), 3) if ok + failed else 0.0,
        "minutes": minutes,
    }


def letter_id(letter: str) -> str:
    """Return a dead letter's id: a digest of its stored JSON."""
    return hashlib.sha256(letter.encode()).hexdigest()[:16]


def dead_letters(
    bridge: "Bridge", limit: int = DEAD_LETTERS_SHOWN
) -> tuple[int, list[dict[str, Any]]]:
    """Return how many dead letters there are, and the newest few, for people.

    Reads ``{prefix}:dead`` directly until the worker side's dead-letter module
    offers a listing; the events themselves are not shown (they hold numbers).
    """
    buffer = bridge.buffer
    pipe = buffer.redis.pipeline(transaction=False)
    pipe.llen(buffer.dead_key)
    pipe.lrange(buffer.dead_key, 0, limit - 1)
    count, raw = pipe.execute()
    shown = []
    for item in raw:
        letter = text(item)
        body = _parse(letter)
        _, kind, value = parse_member(str(body.get("member", "")))
        shown.append(
            {
                "id": letter_id(letter),
                "reason": body.get("reason", ""),
                "error": body.get("error", ""),
                "store": body.get("store", ""),
                "profile": mask(value) if kind == "phone" else value,
                "events": len(body.get("events", [])),
                "attempts": body.get("attempts", 0),
                "dead_at": _iso(body["dead_at_ms"]) if "dead_at_ms" in body else None,
            }
        )

    return int(count), shown


def replay_dead_letter(bridge: "Bridge", wanted: str) -> int | None:
    """Put a dead letter's events back in its profile's buffer, due now.

    Returns how many events went back, or None when no dead letter has that id
    (already replayed, or expired). One Lua script, so a letter replayed twice
    at once goes back once.
    """
    buffer = bridge.buffer
    for item in buffer.redis.lrange(buffer.dead_key, 0, -1):
        letter = text(item)
        if letter_id(letter) != wanted:
            continue
        body = _parse(letter)
        member, events = str(body.get("member", "")), body.get("events", [])
        if not member or not events:
            return None
        stored = [
            json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events
        ]
        keys = [buffer.dead_key, buffer.due_key, f"{buffer.prefix}:buf:{member}"]
        now_ms = int(time.time() * 1000)
        moved = int(
            buffer.redis.eval(_REPLAY, 3, *keys, letter, now_ms, member, *stored)
        )
        return moved if moved >= 0 else None

    return None


def upstream_state(bridge: "Bridge") -> dict[str, Any]:
    """Return the Memory API's state as the worker sees it: ok, backing off, paused.

    Unknown until the worker side records it; the page and metrics show its
    ``state`` and ``detail`` as given.
    """
    return {"state": "unknown", "detail": "the worker does not report it yet"}


def _parse(letter: str) -> dict[str, Any]:
    try:
        body = json.loads(letter)
    except ValueError:
        return {}

    return body if isinstance(body, dict) else {}


def _iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC)

    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
