"""Dead letters: batches (or the events of one) the bridge gave up on, kept to replay.

``{p}:dead:{id}`` holds one letter as JSON, ``{p}:dead`` indexes the ids by when
they died; both expire after BRIDGE_DEAD_LETTER_TTL_S. A letter keeps its events,
the member they were buffered under, why it died (``reason``), the API's last
answer (``status``, ``error``) and how many tries it had (``attempts``).

Reasons: ``retries_exhausted`` (429/5xx/no answer past BRIDGE_RETRY_MAX_ATTEMPTS
or BRIDGE_RETRY_MAX_AGE_S), ``refused`` (the API answered 400 to these events),
``profile_gone`` (404 for the profile, and again after a fresh Lookup), and
``profile_not_found`` (the Lookup found no profile and BRIDGE_UNKNOWN_PROFILE is
``park``): parked events, a kind of their own.

Replaying puts a letter's events back at the head of their member's buffer and
makes it due now, in one script; the drain then takes them like any others.
``memory-bridge dead-letters`` uses ``summary``, ``listing`` and ``replay``; the
status page ``count``, ``listing`` (newest first), ``find`` and ``replay``.
"""

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis

from app import config
from app.buffer import Batch, text
from app.routing import parse_member

REASONS = ("retries_exhausted", "refused", "profile_gone", "profile_not_found")

# KEYS: index, letter, due, buffer. ARGV: id, now_ms, member, then the events.
# Returns how many events went back, or -1 if the letter was gone (replayed or
# expired): a letter is replayed at most once. ZADD LT: due now, even when the
# member waits out its linger (a replay is an operator's request), never later.
_REPLAY = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -1
end
for i = #ARGV, 4, -1 do redis.call('LPUSH', KEYS[4], ARGV[i]) end
redis.call('ZADD', KEYS[3], 'LT', ARGV[2], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return #ARGV - 3
"""


def letter(
    batch: Batch,
    events: list[str],
    *,
    reason: str,
    error: str,
    status: int,
    errors: list[str] | None = None,
) -> tuple[str, str]:
    """Return a new dead letter's id and JSON, for ``events`` of ``batch``."""
    now_ms = int(time.time() * 1000)
    letter_id = f"{now_ms}-{uuid.uuid4().hex[:12]}"
    body = {
        "id": letter_id,
        "reason": reason,
        "error": error,
        "status": status,
        "store": parse_member(batch.member)[0],
        "member": batch.member,
        "attempts": batch.attempt,
        "first_ms": batch.first_ms,
        "dead_at_ms": now_ms,
        "events": [json.loads(e) for e in events],
        "errors": errors or [error] * len(events),  # the API's message per event
    }

    return letter_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def summary(redis: Redis, settings: config.Settings) -> dict[str, Any]:
    """Return how many letters and events are dead, by reason and by store."""
    letters = events = 0
    by_reason: Counter[str] = Counter()
    by_store: Counter[str] = Counter()
    oldest = 0.0
    for found in _letters(redis, settings.key_prefix):
        letters += 1
        events += len(found["events"])
        by_reason[found["reason"]] += len(found["events"])
        by_store[found["store"]] += len(found["events"])
        oldest = min(oldest or found["dead_at_ms"], found["dead_at_ms"])

    return {
        "letters": letters,
        "events": events,
        "events_by_reason": dict(by_reason),
        "events_by_store": dict(by_store),
        "oldest": oldest / 1000,
    }


def count(redis: Redis, settings: config.Settings) -> int:
    """Return how many letters have not expired (one read, whatever their size).

    The index is scored by when each letter died and trimmed only when the next
    one is written, so ids older than BRIDGE_DEAD_LETTER_TTL_S are left out here:
    their letters have expired.
    """
    since_ms = int(time.time() * 1000) - settings.dead_letter_ttl_s * 1000

    return int(redis.zcount(f"{settings.key_prefix}:dead", f"({since_ms}", "+inf"))


def listing(
    redis: Redis,
    settings: config.Settings,
    *,
    store: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` letters, oldest (or newest) first, with their events."""
    found: list[dict[str, Any]] = []
    if limit <= 0:
        return found
    page = min(limit, 200)
    letters = _letters(redis, settings.key_prefix, page, newest_first=newest_first)
    for one in letters:
        if (store and one["store"] != store) or (reason and one["reason"] != reason):
            continue
        found.append(one)
        if len(found) >= limit:
            break

    return found


def find(
    redis: Redis, settings: config.Settings, letter_id: str
) -> dict[str, Any] | None:
    """Return one letter, or None when it was replayed or has expired."""
    raw = redis.get(f"{settings.key_prefix}:dead:{letter_id}")

    return None if raw is None else dict(json.loads(raw))


def replay(
    redis: Redis,
    settings: config.Settings,
    *,
    letter_id: str | None = None,
    store: str | None = None,
    everything: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Put letters' events back into their buffers; return how many letters.

    Choose one: ``letter_id``, every letter of ``store``, or ``everything``.
    ``progress(done, total)`` is called after each letter.
    """
    if sum((bool(letter_id), bool(store), everything)) != 1:
        raise ValueError("replay() takes one of letter_id=, store= or everything=.")
    prefix = settings.key_prefix
    if letter_id:
        ids = [letter_id]
    else:
        ids = [
            one["id"]
            for one in _letters(redis, prefix)
            if everything or one["store"] == store
        ]
    script = redis.register_script(_REPLAY)
    replayed = 0
    for done, one_id in enumerate(ids, 1):
        replayed += _replay_one(redis, script, prefix, one_id)
        if progress is not None:
            progress(done, len(ids))

    return replayed


def _replay_one(redis: Redis, script: Any, prefix: str, letter_id: str) -> int:
    """Replay one letter; return 1, or 0 if it was gone."""
    raw = redis.get(f"{prefix}:dead:{letter_id}")
    if raw is None:
        return 0
    found = json.loads(raw)
    member = found["member"]
    events = [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False)
        for e in found["events"]
    ]
    keys = [f"{prefix}:dead", f"{prefix}:dead:{letter_id}", f"{prefix}:due"]
    keys.append(f"{prefix}:buf:{member}")
    now_ms = int(time.time() * 1000)
    back = script(keys=keys, args=[letter_id, now_ms, member, *events])

    return 1 if int(back) >= 0 else 0


def _letters(
    redis: Redis, prefix: str, chunk: int = 200, *, newest_first: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield every letter that has not expired, oldest (or newest) first.

    The index is read a page at a time, so a caller that stops early (a listing
    with a limit) reads only the letters it needs; a letter that moves between
    pages (another letter written or replayed meanwhile) is yielded once.
    """
    index = f"{prefix}:dead"
    seen: set[str] = set()
    start = 0
    while True:
        page = redis.zrange(index, start, start + chunk - 1, desc=newest_first)
        if not page:
            return
        part = [i for i in (text(i) for i in page) if i not in seen]
        seen.update(part)
        raws = redis.mget([f"{index}:{i}" for i in part]) if part else []
        gone = [i for i, raw in zip(part, raws, strict=True) if raw is None]
        if gone:
            redis.zrem(index, *gone)
        start += len(page) - len(gone)
        for raw in raws:
            if raw is not None:
                yield json.loads(raw)
