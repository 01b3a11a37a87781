"""Helpers for the callback tests: post any kind of callback, read what was stored."""

import hashlib
import json
from typing import Any
from urllib.parse import urlencode

from redis import Redis

from app.standin_schema import EVENTS_VALIDATOR
from conftest import STORE, sign

PUBLIC = "https://bridge.example.test"


def post_form(client: Any, path: str, form: dict[str, str]) -> Any:
    """Post a form callback signed for the public URL, as Twilio does."""
    return client.post(
        path,
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sign(PUBLIC + path, form)},
    )


def post_json(client: Any, path: str, payload: Any, body: bytes | None = None) -> Any:
    """Post JSON as an Event Streams sink does: bodySHA256 in the signed URL."""
    body = json.dumps(payload).encode() if body is None else body
    digest = hashlib.sha256(body).hexdigest()
    path += ("&" if "?" in path else "?") + f"bodySHA256={digest}"
    return client.post(
        path,
        data=body,
        content_type="application/json",
        headers={"X-Twilio-Signature": sign(PUBLIC + path, {})},
    )


def stored(redis: Redis) -> dict[str, list[dict[str, Any]]]:
    """Return the buffered events by member (without the store), parked under ''."""
    found = {}
    for key in sorted(redis.scan_iter("mb:buf:*")):
        member = key.decode().removeprefix(f"mb:buf:{STORE}/")
        found[member] = [json.loads(e) for e in redis.lrange(key, 0, -1)]
    parked = [json.loads(e) for e in redis.lrange("mb:unroutable", 0, -1)]
    if parked:
        found[""] = parked
    return found


def counters(redis: Redis) -> dict[str, int]:
    """Sum the per-minute counters."""
    total: dict[str, int] = {}
    for key in redis.scan_iter("mb:stats:*"):
        for name, value in redis.hgetall(key).items():
            total[name.decode()] = total.get(name.decode(), 0) + int(value)
    return total


def schema_problems(events: list[dict[str, Any]]) -> list[str]:
    """Return what the stand-in's own JSON Schema finds wrong with these events."""
    batch = {"type": "twilio-comms-lifecycle", "events": events}
    return [e.message for e in EVENTS_VALIDATOR.iter_errors(batch)]
