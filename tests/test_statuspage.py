"""The status page and its sign-in: what the bridge holds, for people and machines."""

import base64
import json
import time

import pytest

from app import create_app, status
from conftest import CUSTOMER, STORE, message, post

MEMBER = f"{STORE}/phone:{CUSTOMER}"
USER, PASSWORD, TOKEN = "ops", "status-pw-123", "metrics-token-123"


def basic(user=USER, password=PASSWORD):
    """Return the Authorization header of HTTP Basic sign-in."""
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture
def ops(settings, redis):
    """A test client of a bridge with the operator pages on."""
    overrides = {
        **settings,
        "dashboard_username": USER,
        "dashboard_password": PASSWORD,
        "dashboard_token": TOKEN,
    }
    return create_app(overrides).test_client()


def dead_letter(redis, member=MEMBER, events=2, reason="profile_not_found"):
    """Push a dead letter shaped like the drain's onto mb:dead; return its JSON."""
    body = {
        "reason": reason,
        "error": "Lookup found no profile",
        "store": STORE,
        "member": member,
        "attempts": 1,
        "dead_at_ms": 1_700_000_000_000,
        "events": [{"lifecycle": "COMMUNICATION_SENT", "n": n} for n in range(events)],
    }
    letter = json.dumps(body)
    redis.lpush("mb:dead", letter)
    return letter


@pytest.mark.parametrize("path", ["/status", "/metrics", "/rq/"])
def test_pages_are_off_without_credentials(client, path, caplog):
    """With no DASHBOARD_* settings, /status, /metrics and /rq answer 404."""
    assert client.get(path).status_code == 404
    assert client.get(path, headers=basic()).status_code == 404


def test_start_up_says_the_pages_are_off(settings, redis, capsys):
    """A bridge without operator credentials logs operator.pages_off at start."""
    create_app(settings)
    assert "operator.pages_off" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/status", "/metrics", "/rq/"])
def test_pages_need_the_credentials(ops, path):
    """Wrong or missing credentials get 401 with a Basic challenge; right ones 200."""
    for headers in (
        {},
        basic(password="wrong"),
        basic(user="other"),
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic !!notbase64"},
    ):
        response = ops.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert ops.get(path, headers=basic()).status_code == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert ops.get(path, headers=bearer).status_code == 200


def test_username_without_password_stops_start_up(settings, redis):
    """DASHBOARD_USERNAME alone is a configuration error naming both settings."""
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD"):
        create_app({**settings, "dashboard_username": "ops"})


def test_snapshot_counts_buffers_flight_and_dead_letters(ops, redis, settings):
    """Two buffered profiles, one batch in flight, one dead letter: all counted."""
    assert (
        post(ops, "/twilio/messaging", message("SM" + "1" * 32, "sent")).status_code
        == 204
    )
    other = message("SM" + "2" * 32, "sent", to="+15005550007")
    assert post(ops, "/twilio/messaging", other).status_code == 204
    assert (
        post(
            ops, "/twilio/messaging", message("SM" + "1" * 32, "delivered")
        ).status_code
        == 204
    )
    now = int(time.time() * 1000)
    redis.rpush(f"mb:inflight:{STORE}/id:x", "{}", "{}", "{}")
    redis.hset(
        f"mb:batch:{STORE}/id:x",
        mapping={"first_ms": now - 30_000, "attempts": 2, "retry_at_ms": now + 60_000},
    )
    redis.zadd("mb:leases", {f"{STORE}/id:x": now + 60_000})
    dead_letter(redis)

    bridge = ops.application.extensions["memory_bridge"]
    s = status.snapshot(bridge, now_ms=now)

    assert s["buffer"] == {
        "events": 3,
        "profiles": 2,
        "due_profiles": 2,
        "due_now": 2,
        "parked_events": 0,
        "complete": True,
    }
    assert s["in_flight"] == {"batches": 1, "events": 3, "retrying": 1}
    assert 29 <= s["oldest_waiting"]["age_s"] <= 31
    assert s["dead_letters"]["count"] == 1
    [shown] = s["dead_letters"]["recent"]
    assert shown["profile"] == "********0006"
    assert shown["events"] == 2 and shown["reason"] == "profile_not_found"
    assert sum(m.get("events_admitted", 0) for m in s["rates"]["minutes"]) == 3
    assert s["upstream"]["state"] == "unknown"


def test_buffer_count_stops_at_its_cap(ops, redis, monkeypatch):
    """Past BUFFER_SCAN_MAX buffers the count says it is a lower bound."""
    for n in range(5):
        redis.rpush(f"mb:buf:{STORE}/id:x{n}", "{}", "{}")
    monkeypatch.setattr(status, "BUFFER_SCAN_MAX", 3)
    bridge = ops.application.extensions["memory_bridge"]
    counted = status.snapshot(bridge)["buffer"]
    assert (counted["profiles"], counted["events"], counted["complete"]) == (
        3,
        6,
        False,
    )
    html = ops.get("/status", headers=basic()).get_data(as_text=True)
    assert "≥ 6" in html


def test_status_json_and_html_show_the_same_numbers(ops, redis):
    """/status?format=json is the snapshot; the HTML shows its counts and buttons."""
    assert (
        post(ops, "/twilio/messaging", message("SM" + "1" * 32, "sent")).status_code
        == 204
    )
    letter = dead_letter(redis)
    data = ops.get("/status?format=json", headers=basic()).get_json()
    assert data["buffer"]["events"] == 1
    assert data["dead_letters"]["count"] == 1
    also = ops.get("/status", headers={**basic(), "Accept": "application/json"})
    assert also.get_json()["buffer"]["events"] == 1

    html = ops.get("/status", headers=basic()).get_data(as_text=True)
    assert ">1<" in html.split('id="buffered"')[1].split("</div>")[0].replace(
        "<b>", ">"
    )
    assert f"/status/dead-letters/{status.letter_id(letter)}/replay" in html
    assert CUSTOMER not in html


def test_replay_puts_the_events_back_once(ops, redis):
    """Replaying a dead letter moves its events to the buffer, due now; twice is 404."""
    letter = dead_letter(redis, events=3)
    path = f"/status/dead-letters/{status.letter_id(letter)}/replay"
    answer = ops.post(path, headers={**basic(), "Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.get_json()["events"] == 3
    assert redis.llen("mb:dead") == 0
    stored = [json.loads(e) for e in redis.lrange(f"mb:buf:{MEMBER}", 0, -1)]
    assert [e["n"] for e in stored] == [0, 1, 2]
    assert redis.zscore("mb:due", MEMBER) <= time.time() * 1000

    again = ops.post(path, headers=basic())
    assert again.status_code == 404
    assert "replayed already" in again.get_json()["message"]


def test_replay_makes_a_lingering_profile_due_now(ops, redis):
    """A replay into a buffer that waits out its linger makes that profile due now."""
    redis.zadd("mb:due", {MEMBER: time.time() * 1000 + 600_000})
    letter = dead_letter(redis)
    path = f"/status/dead-letters/{status.letter_id(letter)}/replay"
    assert ops.post(path, headers=basic()).status_code == 303
    assert redis.zscore("mb:due", MEMBER) <= time.time() * 1000


def test_replay_from_the_page_redirects_back(ops, redis):
    """A browser's replay (same origin) is answered 303 back to the status page."""
    letter = dead_letter(redis)
    path = f"/status/dead-letters/{status.letter_id(letter)}/replay"
    headers = {**basic(), "Origin": "http://localhost"}
    answer = ops.post(path, headers=headers)
    assert answer.status_code == 303
    assert "/status?replayed=" in answer.headers["Location"]


def test_replay_from_another_site_is_refused(ops, redis):
    """A POST whose Origin is another site is 403 and leaves the dead letter."""
    letter = dead_letter(redis)
    path = f"/status/dead-letters/{status.letter_id(letter)}/replay"
    answer = ops.post(path, headers={**basic(), "Origin": "https://evil.example"})
    assert answer.status_code == 403
    assert redis.llen("mb:dead") == 1


def test_rq_dashboard_shows_the_bridge_queue(ops, redis, settings):
    """rq-dashboard under /rq lists the bridge's queue and its JSON-serialized job."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.drain import drain

    queue = Queue("memory-bridge", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(drain, description="drain due profiles")
    page = ops.get("/rq/", headers=basic())
    assert page.status_code == 200
    queues = ops.get("/rq/0/data/queues.json", headers=basic()).get_json()
    assert [q["name"] for q in queues["queues"]] == ["memory-bridge"]
    assert queues["queues"][0]["count"] == 1
    shown = ops.get(f"/rq/0/data/job/{job.id}.json", headers=basic())
    assert shown.status_code == 200, shown.get_data(as_text=True)[:500]
    assert shown.get_json()["description"] == "drain due profiles"


def test_rq_dashboard_lists_jobs_and_workers_with_rq_3(ops, redis):
    """rq-dashboard's job list, worker list and pages work against the rq we use."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.drain import drain
    from jobs.worker import BridgeWorker

    queue = Queue("memory-bridge", connection=redis, serializer=JSONSerializer)
    queue.enqueue(drain, description="drain due profiles")
    worker = BridgeWorker([queue], connection=redis, serializer=JSONSerializer)
    worker.register_birth()
    try:
        jobs = ops.get(
            "/rq/0/data/jobs/memory-bridge/queued/8/asc/1.json", headers=basic()
        )
        assert jobs.status_code == 200
        assert [j["description"] for j in jobs.get_json()["jobs"]] == [
            "drain due profiles"
        ]
        workers = ops.get("/rq/0/data/workers.json", headers=basic()).get_json()
        assert [w["name"] for w in workers["workers"]] == [worker.name]
        for page in ("/rq/0/view/workers", "/rq/0/view/jobs"):
            assert ops.get(page, headers=basic()).status_code == 200, page
    finally:
        worker.register_death()


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_pages_answer_503_when_redis_is_away(settings, redis, path):
    """With Redis unreachable the operator pages say so with a 503, not a 500."""
    from app.embedded import free_port

    app = create_app(
        {
            **settings,
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "dashboard_token": TOKEN,
        }
    )
    answer = app.test_client().get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "redis_unavailable"


def test_rq_dashboard_clients_time_out(ops):
    """rq-dashboard's Redis client gives up after 5 s instead of hanging a thread."""
    kwargs = ops.application.redis_conn.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 5 and kwargs["socket_connect_timeout"] == 5


def test_each_page_served_is_one_log_line(ops, caplog):
    """A signed-in /status request writes one operator.request line, no secrets."""
    caplog.set_level("INFO")
    assert ops.get("/status", headers=basic()).status_code == 200
    lines = [r for r in caplog.records if r.getMessage().startswith("operator.")]
    assert [r.getMessage() for r in lines] == ["operator.request"]
    assert lines[0].fields == {"method": "GET", "path": "/status", "status": 200}
