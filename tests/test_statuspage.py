"""The status page and its sign-in: what the bridge holds, for people and machines."""

import base64
import json
import time
import uuid

import pytest

from app import config, create_app, status
from app.buffer import connect
from conftest import CUSTOMER, STORE, message, post
from jobs import deadletters, upstream
from jobs.drain import Drainer

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


def dead_letter(ops, standin, settings, to=CUSTOMER, events=2):
    """Make a dead letter as the worker does; return it as jobs.deadletters lists it.

    ``events`` callbacks are posted for the customer ``to``; the stand-in refuses
    each of their events with a 400 whose message names the customer's number,
    and a drain splits the batch and dead-letters the refused events.
    """
    for _ in range(events):
        form = message("SM" + uuid.uuid4().hex, "sent", to=to)
        assert post(ops, "/twilio/messaging", form).status_code == 204
    standin.refuse("communicationStatus", "SENT", f"recipient {to} is not accepted.")
    s = config.load(settings).check()
    redis = connect(s.redis_url)
    Drainer(s, redis).run()
    standin.reset()
    [letter] = deadletters.listing(redis, s, limit=1, newest_first=True)
    assert letter["reason"] == "refused" and len(letter["events"]) == events

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


def test_snapshot_counts_buffers_flight_and_dead_letters(ops, redis, settings, standin):
    """Two buffered profiles, one batch in flight, one dead letter: all counted."""
    letter = dead_letter(ops, standin, settings, to="+15005550008", events=2)
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
    assert shown == {
        "id": letter["id"],
        "reason": "refused",
        "error": "400: events[0]: recipient ********0008 is not accepted.",
        "status": 400,
        "attempts": 1,
        "store": STORE,
        "member": f"{STORE}/phone:********0008",
        "events": 2,
        "dead_at": status._iso(letter["dead_at_ms"]),
    }
    assert sum(m.get("events_admitted", 0) for m in s["rates"]["minutes"]) == 5
    assert s["upstream"]["state"] == "ok"
    assert [u["store"] for u in s["upstream"]["stores"]] == [STORE]


def test_dead_letters_show_the_newest_first_and_count_all(
    ops, redis, settings, standin
):
    """Past the shown limit the page lists the newest letters; the count is all."""
    letters = [
        dead_letter(ops, standin, settings, to=f"+1500555001{n}", events=1)
        for n in range(3)
    ]
    bridge = ops.application.extensions["memory_bridge"]
    count, shown = status.dead_letters(bridge, limit=2)
    assert count == 3
    assert [d["id"] for d in shown] == [letters[2]["id"], letters[1]["id"]]
    assert [d["member"] for d in shown] == [
        f"{STORE}/phone:********0012",
        f"{STORE}/phone:********0011",
    ]
    assert status.snapshot(bridge, letters=0)["dead_letters"] == {
        "count": 3,
        "recent": [],
    }


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


def test_status_json_and_html_show_the_same_numbers(ops, redis, settings, standin):
    """/status?format=json is the snapshot; the HTML shows its counts and buttons."""
    letter = dead_letter(ops, standin, settings, events=1)
    assert (
        post(ops, "/twilio/messaging", message("SM" + "1" * 32, "sent")).status_code
        == 204
    )
    data = ops.get("/status?format=json", headers=basic()).get_json()
    assert data["buffer"]["events"] == 1
    assert data["dead_letters"]["count"] == 1
    assert data["dead_letters"]["recent"][0]["id"] == letter["id"]
    also = ops.get("/status", headers={**basic(), "Accept": "application/json"})
    assert also.get_json()["buffer"]["events"] == 1

    html = ops.get("/status", headers=basic()).get_data(as_text=True)
    assert ">1<" in html.split('id="buffered"')[1].split("</div>")[0].replace(
        "<b>", ">"
    )
    row = html.split(f'data-letter="{letter["id"]}"')[1].split("</tr>")[0]
    assert f"/status/dead-letters/{letter['id']}/replay" in row
    for shown in (letter["id"], "refused", "phone:********0006", STORE, ">1<"):
        assert shown in row, shown
    assert "recipient ********0006 is not accepted." in row
    assert CUSTOMER not in html


def test_replay_puts_the_events_back_once(ops, redis, settings, standin):
    """Replaying a dead letter moves its events to the buffer, due now; twice is 404."""
    letter = dead_letter(ops, standin, settings, events=3)
    path = f"/status/dead-letters/{letter['id']}/replay"
    answer = ops.post(path, headers={**basic(), "Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.get_json() == {"replayed": letter["id"], "events": 3}
    assert redis.zcard("mb:dead") == 0 and not redis.exists(f"mb:dead:{letter['id']}")
    stored = [json.loads(e) for e in redis.lrange(f"mb:buf:{MEMBER}", 0, -1)]
    assert stored == letter["events"]
    assert redis.zscore("mb:due", MEMBER) <= time.time() * 1000

    again = ops.post(path, headers=basic())
    assert again.status_code == 404
    assert "replayed already" in again.get_json()["message"]


def test_a_replay_redis_refuses_says_so(ops, redis, settings, standin):
    """Redis full (noeviction) refuses the replay's writes: a 503 that says Redis
    refused, not that it did not answer; the letter stays to replay later."""
    letter = dead_letter(ops, standin, settings)
    path = f"/status/dead-letters/{letter['id']}/replay"
    redis.config_set("maxmemory", 1)
    try:
        answer = ops.post(path, headers=basic())
    finally:
        redis.config_set("maxmemory", 0)

    assert answer.status_code == 503
    assert "refused" in answer.get_json()["message"]
    assert "did not answer" not in answer.get_json()["message"]
    assert redis.exists(f"mb:dead:{letter['id']}")


def test_replayed_events_reach_the_api_once_it_takes_them(
    ops, redis, settings, standin
):
    """After a replay from the page, the next drain delivers the letter's events."""
    letter = dead_letter(ops, standin, settings, events=2)
    path = f"/status/dead-letters/{letter['id']}/replay"
    assert ops.post(path, headers=basic()).status_code == 303
    s = config.load(settings).check()
    Drainer(s, connect(s.redis_url)).run()
    assert [e.event for e in standin.events()] == letter["events"]
    assert status.snapshot(ops.application.extensions["memory_bridge"])[
        "dead_letters"
    ] == {"count": 0, "recent": []}


def test_unknown_letter_id_is_a_404(ops, redis):
    """A replay of an id no dead letter has is 404 with what to do, not a 500."""
    for letter in ("0-000000000000", "not-an-id", "x" * 300):
        answer = ops.post(f"/status/dead-letters/{letter}/replay", headers=basic())
        assert answer.status_code == 404, letter
        assert "Reload /status" in answer.get_json()["message"]


def test_replay_makes_a_lingering_profile_due_now(ops, redis, settings, standin):
    """A replay into a buffer that waits out its linger makes that profile due now."""
    letter = dead_letter(ops, standin, settings)
    redis.rpush(f"mb:buf:{MEMBER}", "{}")
    redis.zadd("mb:due", {MEMBER: time.time() * 1000 + 600_000})
    path = f"/status/dead-letters/{letter['id']}/replay"
    assert ops.post(path, headers=basic()).status_code == 303
    assert redis.zscore("mb:due", MEMBER) <= time.time() * 1000


def test_replay_from_the_page_redirects_back(ops, redis, settings, standin):
    """A browser's replay (same origin) is answered 303 back to the status page."""
    letter = dead_letter(ops, standin, settings)
    path = f"/status/dead-letters/{letter['id']}/replay"
    headers = {**basic(), "Origin": "http://localhost"}
    answer = ops.post(path, headers=headers)
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/status?replayed={letter['id']}")


def test_replay_from_another_site_is_refused(ops, redis, settings, standin):
    """A POST whose Origin is another site is 403 and leaves the dead letter."""
    letter = dead_letter(ops, standin, settings)
    path = f"/status/dead-letters/{letter['id']}/replay"
    answer = ops.post(path, headers={**basic(), "Origin": "https://evil.example"})
    assert answer.status_code == 403
    assert deadletters.find(redis, config.load(settings), letter["id"]) == letter


def test_upstream_shows_each_store_and_the_worst(ops, redis, settings, standin):
    """A 429 with Retry-After backs one store off, a 401 pauses another: the page,
    its JSON and /metrics all say so per store, and paused overall."""
    other = "mem_store_" + "1" * 26
    s = config.load({**settings, "auth_probe_s": 600}).check()
    drainer = Drainer(s, connect(s.redis_url))
    standin.script(status=429, count=1, retry_after=120)
    before = time.time()
    assert (
        post(ops, "/twilio/messaging", message("SM" + "1" * 32, "sent")).status_code
        == 204
    )
    drainer.run()
    data = ops.get("/status?format=json", headers=basic()).get_json()["upstream"]
    [backing] = data["stores"]
    assert data["state"] == "backing_off" and backing["state"] == "backing_off"
    assert backing["reason"].startswith("429")
    until = upstream.states(redis, s)[STORE].until
    assert until >= before + 120 and backing["until"] == status._iso(int(until * 1000))

    standin.script(status=401, count=1)
    form = message("SM" + "2" * 32, "sent")
    path = f"/twilio/messaging?storeId={other}"
    signed = post(ops, path, form)
    assert signed.status_code == 204
    drainer.run()
    data = ops.get("/status?format=json", headers=basic()).get_json()["upstream"]
    assert data["state"] == "paused"
    assert {u["store"]: u["state"] for u in data["stores"]} == {
        STORE: "backing_off",
        other: "paused",
    }
    assert standin.rejected() == {429: 1, 401: 1}

    html = ops.get("/status", headers=basic()).get_data(as_text=True)
    assert 'id="upstream">Memory API: <span class="state-paused">paused</span>' in html
    paused_row = html.split(f'data-store="{other}"')[1].split("</tr>")[0]
    assert 'class="state-paused">paused<' in paused_row and "401" in paused_row
    backing_row = html.split(f'data-store="{STORE}"')[1].split("</tr>")[0]
    assert 'class="state-backing_off">backing off<' in backing_row

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    text = ops.get("/metrics", headers=bearer).get_data(as_text=True)
    assert 'memory_bridge_upstream_state{state="paused"} 1.0' in text
    assert 'memory_bridge_upstream_state{state="backing_off"} 0.0' in text
    assert 'memory_bridge_upstream_state{state="ok"} 0.0' in text
    for store, state in ((STORE, "backing_off"), (other, "paused")):
        line = f'memory_bridge_upstream_store_state{{state="{state}",store="{store}"}}'
        assert f"{line} 1.0" in text, line


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


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/rq/0/view/job/gone"),  # a finished drain's result lasts 60 s
        ("GET", "/rq/0/data/job/gone.json"),
        ("POST", "/rq/job/gone/requeue"),
        ("GET", "/rq/1/data/queues.json"),
        ("GET", "/rq/0/data/jobs/memory-bridge/bogus/8/asc/1.json"),
        ("GET", "/rq/0/data/jobs/memory-bridge/queued/0/asc/1.json"),
        ("GET", "/rq/0/data/jobs/memory-bridge/queued/eight/asc/1.json"),
        ("GET", "/rq/0/data/jobs/memory-bridge/queued/8/asc/99999999999999999999.json"),
        ("GET", "/rq/0/view/jobs/memory-bridge/bogus/8/asc/1"),
    ],
)
def test_rq_pages_for_what_is_not_there_are_a_404(ops, redis, caplog, method, path):
    """A job that is gone, a second Redis, a registry or page that does not exist:
    404 and one line, not a 500 (behind the sign-in still)."""
    assert ops.open(path, method=method).status_code == 401
    caplog.clear()

    answer = ops.open(path, method=method, headers=basic())

    assert answer.status_code == 404, answer.get_data(as_text=True)[:300]
    lines = [r.getMessage() for r in caplog.records if r.levelname != "INFO"]
    assert lines == ["request.refused"]


def test_compacting_an_empty_queue_is_done_not_a_503(ops, redis):
    """/rq's Compact on a queue with no job: Redis answered, nothing to compact."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.drain import drain

    path = "/rq/queue/memory-bridge/compact"
    assert ops.post(path).status_code == 401
    empty = ops.post(path, headers=basic())

    assert (empty.status_code, empty.get_json()) == (200, {"status": "OK"})
    queue = Queue("memory-bridge", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(drain, description="drain due profiles")
    holding = ops.post(path, headers=basic())
    assert (holding.status_code, holding.get_json()) == (200, {"status": "OK"})
    assert queue.job_ids == [job.id]


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
