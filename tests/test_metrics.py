"""Prometheus metrics: counters folded from the per-minute stats, gauges from Redis."""

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_drain import event

from app import config, create_app, metrics
from app.buffer import Buffer, connect
from conftest import STORE, message, post
from jobs.drain import Drainer

TOKEN = "metrics-token-123"

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def ops(settings, redis):
    """A test client of a bridge with the operator pages on (token only)."""
    return create_app({**settings, "dashboard_token": TOKEN}).test_client()


def scrape(client):
    """Return {(name, labels): value} from /metrics."""
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_callbacks_and_events_are_counted_by_outcome(ops, redis):
    """Two stored, one duplicate, one stale, one bad signature: each in its series."""
    assert (
        post(
            ops, "/twilio/messaging", message("SM" + "1" * 32, "delivered")
        ).status_code
        == 204
    )
    assert (
        post(
            ops, "/twilio/messaging", message("SM" + "1" * 32, "delivered")
        ).status_code
        == 204
    )
    assert (
        post(ops, "/twilio/messaging", message("SM" + "1" * 32, "sent")).status_code
        == 204
    )
    assert (
        post(ops, "/twilio/messaging", message("SM" + "2" * 32, "sent")).status_code
        == 204
    )
    forged = ops.post(
        "/twilio/voice",
        data={"CallSid": "CA" + "0" * 32},
        headers={"X-Twilio-Signature": "forged"},
    )
    assert forged.status_code == 403
    ops.get("/twilio/nowhere")  # not an endpoint: no label for it

    m = scrape(ops)
    assert (
        m[
            (
                "memory_bridge_callbacks_total",
                (("kind", "messaging"), ("outcome", "stored")),
            )
        ]
        == 4
    )
    assert (
        m[
            (
                "memory_bridge_callbacks_total",
                (("kind", "voice"), ("outcome", "bad_signature")),
            )
        ]
        == 1
    )
    assert not any(
        k[0] == "memory_bridge_callbacks_total" and ("kind", "nowhere") in k[1]
        for k in m
    )
    events = {
        dict(k[1])["outcome"]: v
        for k, v in m.items()
        if k[0] == "memory_bridge_events_total"
    }
    assert events == {
        "admitted": 2,
        "duplicate": 1,
        "stale": 1,
        "delivered": 0,
        "dead": 0,
    }
    assert m[("memory_bridge_buffered_events", ())] == 2
    assert m[("memory_bridge_due_profiles", ())] == 1
    upstream = {
        dict(k[1])["state"]: v
        for k, v in m.items()
        if k[0] == "memory_bridge_upstream_state"
    }
    assert upstream == {"ok": 1, "backing_off": 0, "paused": 0}


def test_totals_fold_old_minutes_once_and_never_go_down(ops, redis):
    """Counts of minutes long past are folded into the totals once, across scrapes."""
    bridge = ops.application.extensions["memory_bridge"]
    now_ms = int(time.time() * 1000)
    minute = now_ms // 60000
    for back, n in ((10, 5), (3, 7), (1, 11), (0, 13)):
        redis.hset(f"mb:stats:{minute - back}", "events_admitted", n)

    first = metrics.totals(bridge, now_ms)
    second = metrics.totals(bridge, now_ms)
    assert first["events_admitted"] == second["events_admitted"] == 36
    assert float(redis.hget("mb:totals", "events_admitted")) == 12  # 5 + 7 folded

    # The folded minutes expire (as their TTL makes them): the total stays.
    redis.delete(f"mb:stats:{minute - 10}", f"mb:stats:{minute - 3}")
    later = metrics.totals(bridge, now_ms + 120_000)  # two minutes on
    assert later["events_admitted"] == 36
    assert redis.ttl("mb:totals") > 0 and redis.ttl("mb:totals:through") > 0


def test_a_process_behind_another_does_not_count_folded_minutes_twice(ops, redis):
    """After a fold by a clock ahead, a scrape behind it counts no minute twice."""
    bridge = ops.application.extensions["memory_bridge"]
    now_ms = int(time.time() * 1000)
    minute = now_ms // 60000
    for back, n in ((2, 5), (1, 7), (0, 11)):
        redis.hset(f"mb:stats:{minute - back}", "events_admitted", n)
    ahead = metrics.totals(bridge, now_ms + 5 * 60_000)
    behind = metrics.totals(bridge, now_ms)
    assert ahead["events_admitted"] == behind["events_admitted"] == 23


def series(samples, name):
    """Return {label values: value} of one metric's samples."""
    return {
        tuple(v for _, v in labels): value
        for (sample, labels), value in samples.items()
        if sample == name
    }


def drain_until_settled(settings, redis, timeout=30.0):
    """Run drains, as the Pump would, until nothing is due or leased; count them."""
    s = config.load(settings).check()
    drainer = Drainer(s, connect(s.redis_url))
    deadline = time.monotonic() + timeout
    runs = 0
    while time.monotonic() < deadline:
        drainer.run()
        runs += 1
        if not redis.zcard("mb:leases") and not redis.zcard("mb:due"):
            return runs
        time.sleep(0.05)
    raise AssertionError("the drains did not settle every batch in time")


def test_a_real_drain_is_counted_exactly(ops, redis, settings, standin):
    """Three profiles' batches meet a 429, a 500 and a refused event, then 202s:
    /metrics counts each settled try by status, and the events, batches, dead
    letters, drains and latencies the worker recorded."""
    for n, (to, status) in enumerate(
        [
            ("+15005550010", "sent"),
            ("+15005550010", "sent"),
            ("+15005550011", "sent"),
            ("+15005550012", "sent"),
            ("+15005550012", "sent"),
            ("+15005550012", "failed"),
        ]
    ):
        form = message(f"SM{n:032d}", status, to=to)
        if status == "failed":
            form["ErrorCode"] = "30003"
        assert post(ops, "/twilio/messaging", form).status_code == 204
    standin.refuse("errorCode", "30003")
    standin.script(status=429, count=1, retry_after=0)
    standin.script(status=500, count=1)

    runs = drain_until_settled(settings, redis)

    # Two of the three first POSTs meet the 429 and the 500 and are retried. The
    # batch of three holding the refused event is split (400, then [1] 202,
    # [2] 400, then 202 and 400) whether or not it met a fault first.
    assert standin.rejected() == {429: 1, 500: 1, 400: 3}
    assert len(standin.events()) == 5
    m = scrape(ops)
    assert series(m, "memory_bridge_batches_total") == {
        ("202",): 2,
        ("400",): 1,
        ("429",): 1,
        ("500",): 1,
    }
    assert m[("memory_bridge_batches_delivered_total", ())] == 3
    assert m[("memory_bridge_batches_retried_total", ())] == 2
    assert m[("memory_bridge_dead_letters_written_total", ())] == 1
    assert m[("memory_bridge_dead_letters", ())] == 1
    assert m[("memory_bridge_drains_total", ())] == runs
    events = series(m, "memory_bridge_events_total")
    assert events == {
        ("admitted",): 6,
        ("duplicate",): 0,
        ("stale",): 0,
        ("delivered",): 5,
        ("dead",): 1,
    }
    h = "memory_bridge_delivery_latency_seconds"
    assert m[(f"{h}_count", ())] == 3
    assert m[(f"{h}_bucket", (("le", "+Inf"),))] == 3
    assert m[(f"{h}_bucket", (("le", "300.0"),))] == 3
    assert 0 < m[(f"{h}_sum", ())] < 3 * 30
    assert m[("memory_bridge_buffered_events", ())] == 0
    assert m[("memory_bridge_batches_in_flight", ())] == 0


def test_delivery_latency_is_a_cumulative_histogram_in_seconds(
    ops, redis, settings, standin
):
    """Batches whose events were stored 15, 40 and 200 s ago land in the 30, 60 and
    300 s buckets; each bucket counts those below it too, the sum is in seconds."""
    buffer = Buffer(redis)
    now_ms = int(time.time() * 1000)
    for n, ago_s in enumerate((15, 40, 200)):
        row = (f"SM{n:032d}", "sent", 4, json.dumps(event(n)))
        member = f"{STORE}/id:mem_profile_{n:026d}"
        buffer.admit(
            member, [row], linger_ms=0, comm_ttl_s=60, now_ms=now_ms - ago_s * 1000
        )

    drain_until_settled(settings, redis)

    m = scrape(ops)
    h = "memory_bridge_delivery_latency_seconds"
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in m.items()
        if name == f"{h}_bucket"
    }
    assert buckets == {
        "0.1": 0,
        "0.25": 0,
        "0.5": 0,
        "1.0": 0,
        "2.5": 0,
        "5.0": 0,
        "10.0": 0,
        "30.0": 1,
        "60.0": 2,
        "300.0": 3,
        "+Inf": 3,
    }
    assert m[(f"{h}_count", ())] == 3
    assert 255 <= m[(f"{h}_sum", ())] < 255 + 3 * 10
    fields = {k.decode() for k in redis.hkeys(f"mb:stats:{now_ms // 60000}")}
    fields |= {k.decode() for k in redis.hkeys(f"mb:stats:{now_ms // 60000 + 1}")}
    assert {"latency_le:30000", "latency_le:60000", "latency_le:300000"} <= fields


def test_worker_fields_become_series_as_written(ops, redis):
    """The fields the worker and the web write, set by hand, read back one to one:
    latency_le:{ms} made cumulative, batches:{status}, unknown and shortened."""
    key = f"mb:stats:{int(time.time() * 1000) // 60000}"
    redis.hset(
        key,
        mapping={
            "batches:202": 4,
            "batches:0": 2,
            "latency_le:100": 2,
            "latency_le:2500": 1,
            "latency_le:+Inf": 1,
            "latency_count": 4,
            "latency_sum_ms": 402_650,
            "unknown:voice:on-hold": 3,
            "unknown:event-type:com.example:odd": 1,
            "shortened:errorMessage": 5,
        },
    )
    m = scrape(ops)
    assert series(m, "memory_bridge_batches_total") == {("202",): 4, ("0",): 2}
    h = "memory_bridge_delivery_latency_seconds"
    assert m[(f"{h}_bucket", (("le", "0.1"),))] == 2
    assert m[(f"{h}_bucket", (("le", "1.0"),))] == 2
    assert m[(f"{h}_bucket", (("le", "2.5"),))] == 3
    assert m[(f"{h}_bucket", (("le", "300.0"),))] == 3
    assert m[(f"{h}_bucket", (("le", "+Inf"),))] == 4
    assert m[(f"{h}_count", ())] == 4
    assert m[(f"{h}_sum", ())] == 402.65
    assert series(m, "memory_bridge_unknown_values_total") == {
        ("event-type", "com.example:odd"): 1,
        ("voice", "on-hold"): 3,
    }
    assert series(m, "memory_bridge_shortened_fields_total") == {("errorMessage",): 5}


def test_unknown_statuses_and_shortened_fields_are_counted(ops, redis):
    """Callbacks with unknown statuses and an over-long ErrorMessage are counted
    per value and per field in /metrics."""
    for n, status in enumerate(("on-fire", "on-fire", "teleported")):
        form = message(f"SM{n:032d}", status)
        assert post(ops, "/twilio/messaging", form).status_code == 204
    long = message("SM" + "9" * 32, "failed", ErrorCode="30008", ErrorMessage="x" * 600)
    assert post(ops, "/twilio/messaging", long).status_code == 204

    m = scrape(ops)
    assert series(m, "memory_bridge_unknown_values_total") == {
        ("messaging", "on-fire"): 2,
        ("messaging", "teleported"): 1,
    }
    assert series(m, "memory_bridge_shortened_fields_total") == {("errorMessage",): 1}
    assert series(m, "memory_bridge_events_total")[("admitted",)] == 1


def test_every_web_process_answers_the_same(settings, redis):
    """Two apps (two web processes) on one Redis scrape the same numbers."""
    first = create_app({**settings, "dashboard_token": TOKEN}).test_client()
    second = create_app({**settings, "dashboard_token": TOKEN}).test_client()
    post(first, "/twilio/messaging", message("SM" + "3" * 32, "sent"))
    post(second, "/twilio/messaging", message("SM" + "4" * 32, "sent"))
    one, other = scrape(first), scrape(second)
    age = ("memory_bridge_oldest_waiting_seconds", ())
    # The oldest event's age grows between the two scrapes; nothing else changes.
    assert 0 <= other.pop(age) - one.pop(age) < 5
    assert one == other
    assert one[("memory_bridge_buffered_events", ())] == 2
