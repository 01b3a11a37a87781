"""End to end: signed callbacks into gunicorn, events out of a real RQ worker."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ACCOUNT_SID, CUSTOMER, STORE, message

pytestmark = pytest.mark.e2e


def drains(redis):
    """Count the drain jobs the worker ran, from the per-minute counters."""
    return sum(int(redis.hget(k, "drains") or 0) for k in redis.keys("mb:stats:*"))


def test_callbacks_arrive_as_events_for_the_right_profiles(start_bridge, standin):
    """Messages and a call for three customers arrive as one batch per customer."""
    bridge = start_bridge(linger_ms=1500)
    customers = ["+15005550006", "+15005550007", "+15005550008"]
    for n, customer in enumerate(customers):
        sid = f"SM{n:032d}"
        assert bridge.post("/twilio/messaging", message(sid, "sent", to=customer)).ok
        assert bridge.post(
            "/twilio/messaging", message(sid, "delivered", to=customer)
        ).ok
    call = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "0" * 32,
        "CallStatus": "completed",
        "Direction": "inbound",
        "From": customers[0],
        "To": "+15005550001",
    }
    assert bridge.post("/twilio/voice", call).status_code == 204

    received = standin.wait_for_events(7, timeout=20)
    by_profile = {}
    for item in received:
        by_profile.setdefault(item.profile, []).append(item.event["lifecycle"])
    assert sorted(map(sorted, by_profile.values())) == sorted(
        [
            [
                "COMMUNICATION_COMPLETED",
                "COMMUNICATION_DELIVERED",
                "COMMUNICATION_SENT",
            ],
            ["COMMUNICATION_DELIVERED", "COMMUNICATION_SENT"],
            ["COMMUNICATION_DELIVERED", "COMMUNICATION_SENT"],
        ]
    )
    assert len(standin.batches()) == 3
    first = next(b for b in standin.batches() if len(b.events) == 3)
    assert {e["recipient"]["address"] for e in first.events[:2]} == {customers[0]}
    assert first.events[2]["sender"]["address"] == customers[0]


def test_1500_events_for_one_profile_are_two_posts(start_bridge, standin):
    """1,500 callbacks for one customer within the linger go out as 1000 and 500."""
    bridge = start_bridge(linger_ms=15000)
    forms = [message(f"SM{n:032d}", "sent") for n in range(1500)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda f: bridge.post("/twilio/messaging", f).status_code, forms)
        )
    assert codes == [204] * 1500
    standin.wait_for_events(1500, timeout=40)
    assert [len(b.events) for b in standin.batches()] == [1000, 500]


def test_300_profiles_take_far_fewer_jobs_than_profiles(start_bridge, standin, redis):
    """300 customers with 2 events each: 300 POSTs of 2, from a handful of drains."""
    bridge = start_bridge(linger_ms=4000)

    def send(n):
        """Send one message's sent, then delivered (in order: a late sent is stale)."""
        forms = [
            message(f"SM{n:032d}", s, to=f"+1500555{n:04d}")
            for s in ("sent", "delivered")
        ]
        return [bridge.post("/twilio/messaging", f).status_code for f in forms]

    with ThreadPoolExecutor(8) as pool:
        codes = [code for pair in pool.map(send, range(300)) for code in pair]
    assert codes == [204] * 600
    standin.wait_for_events(600, timeout=40)
    assert sorted(len(b.events) for b in standin.batches()) == [2] * 300
    assert len({b.profile for b in standin.batches()}) == 300
    assert drains(redis) <= 30


def test_racing_copies_across_gunicorn_workers_are_one_event(start_bridge, standin):
    """The same callback sent 16 times at once, over two workers, is one event."""
    bridge = start_bridge(linger_ms=500)
    form = message("SM" + "f" * 32, "delivered")
    with ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(
                lambda _: bridge.post("/twilio/messaging", form).status_code, range(16)
            )
        )
    assert codes == [204] * 16
    standin.wait_for_events(1, timeout=20)
    time.sleep(1.5)
    assert len(standin.events()) == 1


def test_logs_mask_the_customer_and_hide_the_token(start_bridge, standin):
    """The processes' logs are JSON lines with no whole phone number or token."""
    bridge = start_bridge(linger_ms=200)
    bridge.post("/twilio/messaging", message("SM" + "e" * 32, "sent"))
    standin.wait_for_events(1, timeout=20)
    time.sleep(0.5)
    logs = bridge.logs()
    assert "callback.accepted" in logs and "batch.delivered" in logs
    assert CUSTOMER not in logs
    assert "12345" not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line["event"] == "batch.delivered" for line in lines)
    assert STORE in logs


def test_worker_carries_on_when_redis_restarts_mid_drain(
    start_bridge, standin, tmp_path
):
    """Redis killed while a drain waits on the API: the same worker carries on."""
    from app.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "aof", appendonly=True).start()
    try:
        bridge = start_bridge(redis_url=server.url, linger_ms=100, http_timeout_s=5)
        standin.latency_ms = 2500

        def send(numbers):
            for n in numbers:
                form = message(f"SM{n:032d}", "sent", to=f"+1500555{n:04d}")
                assert bridge.post("/twilio/messaging", form).status_code == 204

        send(range(5))
        time.sleep(1.5)  # the drain is now waiting on the stand-in
        server.stop(kill=True)
        time.sleep(3)
        server.start()
        deadline = time.monotonic() + 30
        while "worker.restarting" not in bridge.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "worker.restarting" in bridge.logs()
        standin.latency_ms = 0
        send(range(5, 10))  # the same worker process takes new work

        standin.wait_for_events(10, timeout=60)
        delivered = {e.event["communicationId"] for e in standin.events()}
        assert len(delivered) == 10
        assert bridge.worker.poll() is None, "the worker process had to be restarted"
    finally:
        server.stop()


def test_chunked_body_over_the_limit_is_413(start_bridge):
    """A chunked body larger than BRIDGE_MAX_BODY_BYTES gets 413, not a 403."""
    import requests

    bridge = start_bridge()

    def chunks():
        for _ in range(70):
            yield b"a" * 1024

    response = requests.post(
        bridge.url + "/twilio/messaging",
        data=chunks(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": "x",
        },
        timeout=10,
    )
    assert response.status_code == 413


def test_malformed_chunked_body_is_a_400(start_bridge):
    """A chunked body with a bad chunk size gets 400 and a log line, not a 500."""
    import socket

    bridge = start_bridge()
    raw = (
        b"POST /twilio/messaging HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=5) as conn:
        conn.sendall(raw)
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    time.sleep(0.3)
    assert "unreadable_body" in bridge.logs()
