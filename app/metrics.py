"""Prometheus metrics at ``/metrics``, built per request from Redis.

Counters come from the per-minute stats hashes (``{p}:stats:{minute}``), which
every process writes. Minutes older than two are folded once, atomically, into
``{p}:totals``, so the totals only grow and every web process answers the same.
Gauges come from ``status.snapshot()``.

Per-minute fields read here, as their writers write them:

    callbacks:{kind}:{outcome}   one callback's answer (a refusal's by
                                 ``callback_counter``, here; a 2xx's as it is stored)
    events_{outcome}             admitted, duplicate, stale (admit, app/scripts.py);
                                 delivered, dead (settle)
    unknown:{kind}:{value}       an unknown status or event type (app/unknowns.py)
    shortened:{field}            a field cut to fit the contract (app/contract.py)
    batches:{status}             each settled try by the API's last answer (0: none)
    batches_delivered, batches_retried, dead_letters   settles by what they did
    latency_le:{ms}              delivered batches whose oldest event waited at
                                 most ``ms`` (and more than the bound below it;
                                 app/buffer.py LATENCY_BOUNDS_MS, then +Inf)
    latency_sum_ms, latency_count   that histogram's sum and count
    drains                       drain jobs run (jobs/drain.py)
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from redis import RedisError

from app import status
from app.buffer import LATENCY_BOUNDS_MS, STATS_TTL_S, text
from jobs.upstream import STATES

if TYPE_CHECKING:
    from app import Bridge

bp = Blueprint("metrics", __name__)

# Minutes this old are no longer written to (a write takes its minute from the
# clock just before it runs), so they can be folded into the totals.
SETTLED_MINUTES = 2
TOTALS_TTL_S = 90 * 24 * 3600
# The outcome label of each refusal; a stored callback counts itself as "stored"
# (app/callbacks.py).
ANSWERS = {
    400: "invalid",
    403: "bad_signature",
    405: "wrong_method",
    413: "too_large",
    415: "wrong_content_type",
}

# KEYS: totals, folded-through marker. ARGV: prefix, through minute, first minute
# to look at when nothing was folded yet, ttl, current minute. Adds each settled
# minute once, then returns the totals and each later minute's counters, read in
# the same step so that no concurrent fold can count a minute twice.
_FOLD = """
local p, through = ARGV[1], tonumber(ARGV[2])
local last = tonumber(redis.call('GET', KEYS[2]) or ARGV[3])
for m = last + 1, through do
  local flat = redis.call('HGETALL', p .. ':stats:' .. m)
  for i = 1, #flat, 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], flat[i], flat[i + 1])
  end
end
if through > last then redis.call('SET', KEYS[2], through) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local out = {redis.call('HGETALL', KEYS[1])}
for m = math.max(last, through) + 1, tonumber(ARGV[5]) do
  out[#out + 1] = redis.call('HGETALL', p .. ':stats:' .. m)
end
return out
"""


def totals(bridge: "Bridge", now_ms: int | None = None) -> dict[str, float]:
    """Return every counter summed since the bridge began (or the totals expired)."""
    buffer = bridge.buffer
    minute = (now_ms or int(time.time() * 1000)) // 60000
    through = minute - SETTLED_MINUTES
    keys = [f"{buffer.prefix}:totals", f"{buffer.prefix}:totals:through"]
    first = through - STATS_TTL_S // 60
    args = [buffer.prefix, through, first, TOTALS_TTL_S, minute]
    hashes = buffer.redis.eval(_FOLD, 2, *keys, *args)

    summed: dict[str, float] = {}
    for flat in hashes:
        for name, value in zip(flat[0::2], flat[1::2], strict=True):
            summed[text(name)] = summed.get(text(name), 0.0) + float(value)

    return summed


def families(bridge: "Bridge") -> Iterator[Metric]:
    """Yield every metric family, counters from the totals, gauges from Redis."""
    counts = totals(bridge)
    yield _labelled(
        counts,
        "callbacks",
        "Callbacks by endpoint and answer (503s, when Redis is away, are not counted).",
        ["kind", "outcome"],
    )
    events = CounterMetricFamily(
        "memory_bridge_events", "Events by what became of them.", labels=["outcome"]
    )
    for outcome in ("admitted", "duplicate", "stale", "delivered", "dead"):
        events.add_metric([outcome], counts.get(f"events_{outcome}", 0.0))
    yield events
    yield _labelled(
        counts,
        "batches",
        "Batch tries settled, by the Memory API's last answer (0: no answer).",
        ["status"],
    )
    yield from _settles(counts)
    yield _latency(counts)
    yield _labelled(
        counts,
        "unknown_values",
        "Statuses and event types the bridge does not know, by kind and value.",
        ["kind", "value"],
        prefix="unknown",
    )
    yield _labelled(
        counts,
        "shortened_fields",
        "Events with a field cut to fit the API, by field.",
        ["field"],
        prefix="shortened",
    )

    s = status.snapshot(bridge, letters=0)
    gauges = [
        ("buffered_events", "Events waiting in buffers.", s["buffer"]["events"]),
        ("due_profiles", "Profiles due or soon due.", s["buffer"]["due_profiles"]),
        ("batches_in_flight", "Batches being posted or to retry.", _flying(s)),
        ("parked_events", "Events with no profile.", s["buffer"]["parked_events"]),
        ("dead_letters", "Dead letters kept.", s["dead_letters"]["count"]),
        ("oldest_waiting_seconds", "Oldest undelivered event's age.", _age(s)),
    ]
    for name, doc, value in gauges:
        yield GaugeMetricFamily(f"memory_bridge_{name}", doc, value=value)
    yield from _upstream(s["upstream"])


def _flying(snapshot: dict[str, Any]) -> int:
    return int(snapshot["in_flight"]["batches"])


def _age(snapshot: dict[str, Any]) -> float:
    return float(snapshot["oldest_waiting"]["age_s"] or 0.0)


def _labelled(
    counts: dict[str, float], name: str, doc: str, labels: list[str], prefix: str = ""
) -> Metric:
    """Return a counter of the ``{prefix}:{label}:…`` fields, one series per field.

    ``prefix`` is the metric's ``name`` unless given; the last label takes the
    rest of the field, colons and all (an unknown value may hold one).
    """
    family = CounterMetricFamily(f"memory_bridge_{name}", doc, labels=labels)
    for field, value in sorted(counts.items()):
        head, _, rest = field.partition(":")
        values = rest.split(":", len(labels) - 1)
        if head == (prefix or name) and rest and len(values) == len(labels):
            family.add_metric(values, value)

    return family


def _settles(counts: dict[str, float]) -> Iterator[Metric]:
    """Yield the counters of what settles did: delivered, retried, dead letters."""
    for name, field, doc in (
        ("batches_delivered", "batches_delivered", "Batches the API took (202)."),
        ("batches_retried", "batches_retried", "Batch tries kept for a retry."),
        ("dead_letters_written", "dead_letters", "Dead letters written."),
        ("drains", "drains", "Drain jobs run."),
    ):
        family = CounterMetricFamily(f"memory_bridge_{name}", doc)
        family.add_metric([], counts.get(field, 0.0))
        yield family


def _latency(counts: dict[str, float]) -> Metric:
    """Return the delivery latency histogram, its buckets made cumulative."""
    buckets, running = [], 0.0
    for bound_ms in LATENCY_BOUNDS_MS:
        running += counts.get(f"latency_le:{bound_ms}", 0.0)
        buckets.append((floatToGoString(bound_ms / 1000), running))
    buckets.append(("+Inf", running + counts.get("latency_le:+Inf", 0.0)))

    return HistogramMetricFamily(
        "memory_bridge_delivery_latency_seconds",
        "Time from storing a batch's oldest event to the Memory API's 202.",
        buckets=buckets,
        sum_value=counts.get("latency_sum_ms", 0.0) / 1000,
    )


def _upstream(upstream: dict[str, Any]) -> Iterator[Metric]:
    """Yield the Memory API's state, overall and per store: 1 for the current one."""
    overall = GaugeMetricFamily(
        "memory_bridge_upstream_state",
        "The Memory API's worst state over the stores: 1 for the current one.",
        labels=["state"],
    )
    for state in STATES:
        overall.add_metric([state], 1 if upstream["state"] == state else 0)
    yield overall
    per_store = GaugeMetricFamily(
        "memory_bridge_upstream_store_state",
        "The Memory API's state for each store: 1 for the current one.",
        labels=["store", "state"],
    )
    for one in upstream["stores"]:
        for state in STATES:
            per_store.add_metric(
                [one["store"], state], 1 if one["state"] == state else 0
            )
    yield per_store


class _Collector:
    def __init__(self, bridge: "Bridge") -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        return families(self.bridge)


@bp.get("/metrics")
def metrics() -> Response:
    """Answer in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(current_app.extensions["memory_bridge"]))  # type: ignore[arg-type]

    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


def callback_counter(kinds: set[str]) -> Callable[[Response], Response]:
    """Return an after-request hook that counts callbacks to ``/twilio/{kind}``.

    Only known kinds are counted, so stray paths cannot add label values.
    """

    def count(response: Response) -> Response:
        parts = request.path.split("/")
        if len(parts) != 3 or parts[1] != "twilio" or parts[2] not in kinds:
            return response
        if response.status_code < 300:
            return response  # a stored callback counted itself, as it was stored
        if response.status_code == 503:
            return response  # Redis is away: counting would wait out its timeout
        outcome = ANSWERS.get(response.status_code, f"http_{response.status_code}")
        buffer = current_app.extensions["memory_bridge"].buffer
        key = buffer.stats_key(int(time.time() * 1000))
        pipe = buffer.redis.pipeline(transaction=False)
        pipe.hincrby(key, f"callbacks:{parts[2]}:{outcome}", 1)
        pipe.expire(key, STATS_TTL_S)
        with contextlib.suppress(RedisError):  # the answer stands; a count may go
            pipe.execute()

        return response

    return count


def init_app(app: Flask) -> None:
    """Register /metrics and count every callback's answer (after the callbacks)."""
    app.register_blueprint(bp)
    rules = (r.rule.split("/") for r in app.url_map.iter_rules())
    kinds = {p[2] for p in rules if len(p) == 3 and p[1] == "twilio"}
    app.after_request(callback_counter(kinds))
