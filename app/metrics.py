"""Prometheus metrics at ``/metrics``, built per request from Redis.

Counters come from the per-minute stats hashes (``{p}:stats:{minute}``), which
every process writes. Minutes older than two are folded once, atomically, into
``{p}:totals``, so the totals only grow and every web process answers the same.
Gauges come from ``status.snapshot()``.

Per-minute fields read here, beyond the ones buffer.py writes:

    callbacks:{kind}:{outcome}   one callback's answer (written by ``count_callback``)
    batches:{outcome}:{status}   a batch's answer by HTTP status (the worker side)
    latency_bucket:{le}          deliveries whose callback-to-202 time was at most
                                 ``le`` seconds and above the next smaller bound
    latency_sum_s, latency_count that histogram's sum and count
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
from app.buffer import STATS_TTL_S, text

if TYPE_CHECKING:
    from app import Bridge

bp = Blueprint("metrics", __name__)

# Minutes this old are no longer written to (a write takes its minute from the
# clock just before it runs), so they can be folded into the totals.
SETTLED_MINUTES = 2
TOTALS_TTL_S = 90 * 24 * 3600
ANSWERS = {
    200: "stored",
    204: "stored",
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
    yield from _callbacks(counts)
    events = CounterMetricFamily(
        "memory_bridge_events", "Events by what became of them.", labels=["outcome"]
    )
    for outcome in ("admitted", "duplicate", "stale", "delivered", "dead"):
        events.add_metric([outcome], counts.get(f"events_{outcome}", 0.0))
    yield events
    yield from _batches(counts)
    yield _latency(counts)
    drains = CounterMetricFamily("memory_bridge_drains", "Drain jobs run.")
    drains.add_metric([], counts.get("drains", 0.0))
    yield drains

    s = status.snapshot(bridge)
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
    upstream = GaugeMetricFamily(
        "memory_bridge_upstream_state",
        "1 for the Memory API's state.",
        labels=["state"],
    )
    upstream.add_metric([s["upstream"]["state"]], 1)
    yield upstream


def _flying(snapshot: dict[str, Any]) -> int:
    return int(snapshot["in_flight"]["batches"])


def _age(snapshot: dict[str, Any]) -> float:
    return float(snapshot["oldest_waiting"]["age_s"] or 0.0)


def _callbacks(counts: dict[str, float]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "memory_bridge_callbacks",
        "Callbacks by endpoint and answer (503s, when Redis is away, are not counted).",
        labels=["kind", "outcome"],
    )
    for name, value in sorted(counts.items()):
        if name.startswith("callbacks:") and name.count(":") == 2:
            _, kind, outcome = name.split(":")
            family.add_metric([kind, outcome], value)
    yield family


def _batches(counts: dict[str, float]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "memory_bridge_batches",
        "Batches posted, by what became of them and the API's HTTP status.",
        labels=["outcome", "status"],
    )
    by_status = {n: v for n, v in counts.items() if n.startswith("batches:")}
    for name, value in sorted(by_status.items()):
        _, outcome, code = (name.split(":") + ["", ""])[:3]
        family.add_metric([outcome, code], value)
    if not by_status:  # until the worker counts by status: what buffer.py counts
        family.add_metric(["delivered", "202"], counts.get("batches_delivered", 0.0))
        family.add_metric(["retried", ""], counts.get("batches_retried", 0.0))
    yield family


def _latency(counts: dict[str, float]) -> Metric:
    buckets = sorted(
        (float(n.split(":", 1)[1]), v)
        for n, v in counts.items()
        if n.startswith("latency_bucket:") and n.split(":", 1)[1] != "+Inf"
    )
    cumulative, running = [], 0.0
    for bound, value in buckets:
        running += value
        cumulative.append((floatToGoString(bound), running))
    cumulative.append(("+Inf", counts.get("latency_count", running)))

    return HistogramMetricFamily(
        "memory_bridge_delivery_latency_seconds",
        "Time from receiving a callback to the Memory API's 202 for its event.",
        buckets=cumulative,
        sum_value=counts.get("latency_sum_s", 0.0),
    )


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
