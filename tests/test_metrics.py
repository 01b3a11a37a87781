"""Prometheus metrics: counters folded from the per-minute stats, gauges from Redis."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, metrics
from conftest import message, post

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
    assert m[("memory_bridge_upstream_state", (("state", "unknown"),))] == 1


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


def test_batches_and_latency_come_from_the_worker_fields(ops, redis):
    """batches:{outcome}:{status} and latency_bucket:{le} become labelled series."""
    key = f"mb:stats:{int(time.time() * 1000) // 60000}"
    redis.hset(
        key,
        mapping={
            "batches:delivered:202": 4,
            "batches:retry:429": 2,
            "batches:retry:503": 1,
            "latency_bucket:0.5": 3,
            "latency_bucket:2": 2,
            "latency_bucket:10": 1,
            "latency_count": 7,
            "latency_sum_s": 12.5,
        },
    )
    m = scrape(ops)
    batches = {
        tuple(dict(k[1]).values()): v
        for k, v in m.items()
        if k[0] == "memory_bridge_batches_total"
    }
    assert batches == {
        ("delivered", "202"): 4,
        ("retry", "429"): 2,
        ("retry", "503"): 1,
    }
    h = "memory_bridge_delivery_latency_seconds"
    assert m[(f"{h}_bucket", (("le", "0.5"),))] == 3
    assert m[(f"{h}_bucket", (("le", "2.0"),))] == 5
    assert m[(f"{h}_bucket", (("le", "10.0"),))] == 6
    assert m[(f"{h}_bucket", (("le", "+Inf"),))] == 7
    assert m[(f"{h}_count", ())] == 7
    assert m[(f"{h}_sum", ())] == 12.5


def test_batches_fall_back_to_the_existing_counters(ops, redis):
    """Without per-status fields, delivered and retried batches are still shown."""
    key = f"mb:stats:{int(time.time() * 1000) // 60000}"
    redis.hset(key, mapping={"batches_delivered": 3, "batches_retried": 2})
    m = scrape(ops)
    assert (
        m[
            (
                "memory_bridge_batches_total",
                (("outcome", "delivered"), ("status", "202")),
            )
        ]
        == 3
    )
    assert (
        m[("memory_bridge_batches_total", (("outcome", "retried"), ("status", "")))]
        == 2
    )


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
