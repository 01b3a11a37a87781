"""What the bridge holds right now, read from Redis: one ``snapshot()`` for all.

The status page (HTML and JSON) and the Prometheus metrics are both drawn from
``snapshot()``, so every web process answers the same. Dead letters and the
Memory API's state are the worker side's: they are read (and a dead letter
replayed) only through ``jobs.deadletters`` and ``jobs.upstream``.
"""

import itertools
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis import Redis

from app.buffer import text
from app.logs import mask, redact
from app.routing import parse_member
from jobs import deadletters, upstream

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


def snapshot(
    bridge: "Bridge", now_ms: int | None = None, letters: int = DEAD_LETTERS_SHOWN
) -> dict[str, Any]:
    """Return buffers, due profiles, batches in flight, dead letters and rates.

    ``letters`` is how many of the newest dead letters to read (0: count only).
    """
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
    count, recent = dead_letters(bridge, letters)

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
        "dead_letters": {"count": count, "recent": recent},
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


def dead_letters(
    bridge: "Bridge", limit: int = DEAD_LETTERS_SHOWN
) -> tuple[int, list[dict[str, Any]]]:
    """Return how many dead letters there are, and the newest few, for people.

    The events themselves are not shown (they hold numbers), only their count;
    the member's phone is masked to its last four digits.
    """
    redis, settings = bridge.buffer.redis, bridge.settings
    count = deadletters.count(redis, settings)
    newest = deadletters.listing(redis, settings, limit=limit, newest_first=True)

    return count, [_shown(letter) for letter in newest]


def _shown(letter: dict[str, Any]) -> dict[str, Any]:
    """Return what the page shows of one dead letter: no events, a masked phone."""
    store, kind, value = parse_member(str(letter.get("member", "")))
    dead_at_ms = letter.get("dead_at_ms")

    return {
        "id": letter["id"],
        "reason": letter.get("reason", ""),
        "error": redact(str(letter.get("error", ""))),
        "status": letter.get("status"),
        "attempts": letter.get("attempts", 0),
        "store": store,
        "member": f"{store}/{kind}:{mask(value) if kind == 'phone' else value}",
        "events": len(letter.get("events", [])),
        "dead_at": _iso(dead_at_ms) if dead_at_ms else None,
    }


def replay_dead_letter(bridge: "Bridge", letter_id: str) -> int | None:
    """Put a dead letter's events back in its profile's buffer, due now.

    Returns how many events went back, or None when no dead letter has that id
    (already replayed, or expired). ``jobs.deadletters.replay`` is one script,
    so a letter replayed twice at once goes back once.
    """
    redis, settings = bridge.buffer.redis, bridge.settings
    letter = deadletters.find(redis, settings, letter_id)
    if letter is None:
        return None
    if not deadletters.replay(redis, settings, letter_id=letter_id):
        return None

    return len(letter.get("events", []))


def upstream_state(bridge: "Bridge") -> dict[str, Any]:
    """Return the Memory API's state as the drains last saw it, per store.

    ``state`` is the worst of the stores' (ok, backing_off, paused); ``stores``
    lists each store the worker has a state for, and MEMORY_STORE_ID.
    """
    found = upstream.states(bridge.buffer.redis, bridge.settings)
    stores = [
        {
            "store": store,
            "state": one.state,
            "since": _iso(int(one.since * 1000)) if one.since else None,
            "until": _iso(int(one.until * 1000)) if one.until else None,
            "reason": redact(one.reason),
        }
        for store, one in sorted(found.items())
    ]
    worst = max((one.state for one in found.values()), key=_severity, default="ok")
    paused = sum(1 for one in found.values() if one.state == "paused")
    backing_off = sum(1 for one in found.values() if one.state == "backing_off")
    if paused or backing_off:
        detail = f"stores paused: {paused}, backing off: {backing_off}"
    else:
        detail = "no store is backing off or paused"

    return {"state": worst, "detail": detail, "stores": stores}


def _severity(state: str) -> int:
    """Rank a state, best first; a state this page does not know ranks worst."""
    known = upstream.STATES

    return known.index(state) if state in known else len(known)


def _iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC)

    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
