"""Tests for the Conversation Memory API stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft202012Validator

from app.standin import EVENTS_SCHEMA, StandIn, derived_profile_id, main

USER, TOKEN = "AC00000000000000000000000000000000", "test-token"
STORE = "mem_store_01jf8x0m6ke3v9zq7r4t5w2y1a"
PROFILE = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1b"
PHONE = "+15005550006"
SUFFIX = "01jf8x0m6ke3v9zq7r4t5w2y1c"
PARTICIPANT = f"comms_participant_{SUFFIX}"
PROFILE_ID = re.compile(r"^mem_profile_[0-7][0-9a-hjkmnp-tv-z]{25}$")


def event(**changes: Any) -> dict[str, Any]:
    """Return a conforming event with every field filled, then these changes."""
    full = {
        "timestamp": "2026-12-04T10:00:00.123Z",
        "lifecycle": "COMMUNICATION_DELIVERED",
        "conversationId": f"conv_conversation_{SUFFIX}",
        "communicationId": f"comms_communication_{SUFFIX}",
        "communicationType": "SMS",
        "communicationStatus": "DELIVERED",
        "direction": "OUTBOUND",
        "sender": {"address": "+15005550001", "participantId": PARTICIPANT},
        "recipient": {"address": PHONE, "participantId": PARTICIPANT},
        "errorCode": "30003",
        "errorMessage": "Unreachable destination handset",
    }  # fmt: skip
    full.update(changes)

    return {key: value for key, value in full.items() if value is not None}


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    """Return an Events body carrying these events (one default event if none)."""
    return {"type": "twilio-comms-lifecycle", "events": list(events) or [event()]}


@pytest.fixture
def echoed() -> list[str]:
    """Collect the stand-in's echo lines."""
    return []


@pytest.fixture
def api(echoed: list[str]) -> Iterator[StandIn]:
    """Serve a stand-in on a free port for one test."""
    with StandIn(echo=echoed.append) as standin:
        yield standin


def post_events(
    api: StandIn, body: Any, auth: tuple[str, str] = (USER, TOKEN), **kwargs: Any
) -> requests.Response:
    """POST an Events body for the test profile."""
    url = f"{api.url}/v1/Stores/{STORE}/Profiles/{PROFILE}/Events"
    return requests.post(url, json=body, auth=auth, timeout=5, **kwargs)


def post(api: StandIn, path: str, body: Any) -> requests.Response:
    """POST JSON to a path of the stand-in with the right credentials."""
    return requests.post(f"{api.url}{path}", json=body, auth=(USER, TOKEN), timeout=5)


def test_events_schema_is_valid_draft_2020_12() -> None:
    """The Events schema is itself a valid Draft 2020-12 schema."""
    Draft202012Validator.check_schema(EVENTS_SCHEMA)


def test_valid_batch_is_accepted_and_recorded(api: StandIn, echoed: list[str]) -> None:
    """A conforming batch gets 202 and is recorded with its store, profile and user."""
    body = batch(event(lifecycle="COMMUNICATION_SENT"), event())

    response = post_events(api, body)

    assert response.status_code == 202
    assert response.json() == {"message": "Events accepted"}
    [recorded] = api.batches()
    assert (recorded.store, recorded.profile, recorded.user) == (STORE, PROFILE, USER)
    assert recorded.body == body
    assert recorded.received_wall == pytest.approx(time.time(), abs=5)
    assert [e.event["lifecycle"] for e in api.events()] == [
        "COMMUNICATION_SENT",
        "COMMUNICATION_DELIVERED",
    ]
    assert echoed == [
        f"stand-in: 202 store={STORE} profile={PROFILE} 2 events: "
        "COMMUNICATION_SENT, COMMUNICATION_DELIVERED"
    ]


def test_minimal_event_with_only_required_fields_is_accepted(api: StandIn) -> None:
    """An event with only the four required fields conforms."""
    minimal = {
        key: event()[key]
        for key in ("timestamp", "lifecycle", "conversationId", "communicationType")
    }

    assert post_events(api, batch(minimal)).status_code == 202


def test_a_full_batch_of_1000_events_is_accepted(api: StandIn) -> None:
    """A batch of exactly 1000 events conforms."""
    assert post_events(api, batch(*[event()] * 1000)).status_code == 202
    assert len(api.wait_for_events(1000, timeout=1)) == 1000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (batch(event(conversationId="conv_conversation_8" + SUFFIX[1:])),
         "events/0/conversationId"),
        (batch(event(conversationId="conv_conversation_0" + "u" * 25)),
         "events/0/conversationId"),
        (batch(*[event()] * 1001), "events: has 1001 items; maxItems is 1000"),
        ({"type": "twilio-comms-lifecycle", "events": []},
         "events: has 0 items; minItems is 1"),
        (batch(event(timestamp="2026-12-04T10:00:00Z")), "events/0/timestamp"),
        (batch(event(timestamp="2026-13-04T10:00:00.123Z")), "events/0/timestamp"),
        (batch(event(timestamp="2026-12-04T10:00:00.123+00:00")),
         "events/0/timestamp"),
        (batch(event(lifecycle="X" * 51)), "events/0/lifecycle"),
        (batch(event(lifecycle="")), "events/0/lifecycle"),
        (batch(event(colour="blue")), "events/0: Additional properties"),
        (batch(event(direction="SIDEWAYS")), "events/0/direction"),
        (batch(event(communicationType="S" * 21)), "events/0/communicationType"),
        (batch(event(errorMessage="e" * 513)), "events/0/errorMessage"),
        (batch(event(), event(sender={"address": PHONE})),
         "events/1/sender: 'participantId' is a required property"),
        (batch(event(communicationType=None)),
         "events/0: 'communicationType' is a required property"),
        ({"type": "something-else", "events": [event()]}, "type: "),
        ({"events": [event()]}, "body: 'type' is a required property"),
    ],
)  # fmt: skip
def test_nonconforming_batch_is_refused_naming_the_field(
    api: StandIn, body: dict[str, Any], named: str
) -> None:
    """A batch that breaks one schema rule gets a Twilio-style 400 naming the field."""
    response = post_events(api, body)

    assert response.status_code == 400
    answer = response.json()
    assert named in answer["message"]
    assert len(answer["message"]) < 400
    assert answer["status"] == 400
    assert answer["more_info"] == f"https://www.twilio.com/docs/errors/{answer['code']}"
    assert api.batches() == []
    assert api.rejected() == {400: 1}


def test_wrong_content_type_is_refused(api: StandIn) -> None:
    """A body that is not sent as application/json gets 400."""
    url = f"{api.url}/v1/Stores/{STORE}/Profiles/{PROFILE}/Events"
    response = requests.post(
        url, data=json.dumps(batch()), auth=(USER, TOKEN), timeout=5
    )

    assert response.status_code == 400
    assert "Content-Type" in response.json()["message"]


def test_invalid_json_is_refused(api: StandIn) -> None:
    """A body that is not JSON gets 400."""
    url = f"{api.url}/v1/Stores/{STORE}/Profiles/{PROFILE}/Events"
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = requests.post(
        url, data=b"{not json", headers=headers, auth=(USER, TOKEN), timeout=5
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong-token"), ("AC11111111111111111111111111111111", TOKEN)]
)
def test_bad_or_missing_auth_is_refused_with_20003(
    api: StandIn, auth: tuple[str, str] | None
) -> None:
    """Missing or wrong Basic credentials get 401 with Twilio error 20003."""
    response = post_events(api, batch(), auth=auth)  # type: ignore[arg-type]

    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": response.json()["message"],
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert api.batches() == []
    assert api.rejected() == {401: 1}


def test_unknown_store_is_404_when_stores_are_configured() -> None:
    """With a set of known stores, a post to any other store gets 404."""
    with StandIn(stores={STORE}) as api:
        url = f"{api.url}/v1/Stores/mem_store_other/Profiles/{PROFILE}/Events"
        response = requests.post(url, json=batch(), auth=(USER, TOKEN), timeout=5)

        assert response.status_code == 404
        assert post_events(api, batch()).status_code == 202


def test_lookup_of_unknown_phone_invents_a_stable_profile(api: StandIn) -> None:
    """Under auto_profiles, Lookup of an unknown phone gives the same derived id."""
    path = f"/v1/Stores/{STORE}/Profiles/Lookup"

    first = post(api, path, {"idType": "phone", "value": PHONE})
    again = post(api, path, {"idType": "phone", "value": PHONE})

    assert first.status_code == 200
    [found] = first.json()["profiles"]
    assert PROFILE_ID.match(found)
    assert found == derived_profile_id(PHONE)
    assert again.json() == {"normalizedValue": PHONE, "profiles": [found]}


def test_lookup_of_known_phone_answers_its_profile(api: StandIn) -> None:
    """Lookup answers the profile a test mapped to the phone."""
    api.set_profiles({PHONE: PROFILE})

    response = post(
        api, f"/v1/Stores/{STORE}/Profiles/Lookup", {"idType": "phone", "value": PHONE}
    )

    assert response.json() == {"normalizedValue": PHONE, "profiles": [PROFILE]}


def test_lookup_miss_without_auto_profiles_finds_nothing() -> None:
    """With auto_profiles off, Lookup of an unknown phone answers no profiles."""
    with StandIn(auto_profiles=False) as api:
        response = post(
            api,
            f"/v1/Stores/{STORE}/Profiles/Lookup",
            {"idType": "phone", "value": PHONE},
        )

        assert response.status_code == 200
        assert response.json() == {"normalizedValue": PHONE, "profiles": []}


def test_lookup_with_bad_body_is_refused(api: StandIn) -> None:
    """A Lookup body without a value gets 400 naming the missing field."""
    response = post(api, f"/v1/Stores/{STORE}/Profiles/Lookup", {"idType": "phone"})

    assert response.status_code == 400
    assert "'value' is a required property" in response.json()["message"]


def test_created_profile_is_found_by_its_phone() -> None:
    """Creating a profile answers 201 with a new id that Lookup then finds."""
    with StandIn(auto_profiles=False) as api:
        created = post(
            api,
            f"/v1/Stores/{STORE}/Profiles",
            {"traits": {"Contact": {"phone": PHONE}}},
        )
        found = post(
            api,
            f"/v1/Stores/{STORE}/Profiles/Lookup",
            {"idType": "phone", "value": PHONE},
        )

        assert created.status_code == 201
        assert PROFILE_ID.match(created.json()["id"])
        assert found.json()["profiles"] == [created.json()["id"]]


def test_scripted_429s_carry_retry_after_then_service_resumes(api: StandIn) -> None:
    """Scripted 429s answer with code 20429 and Retry-After, then 202 again."""
    api.script(status=429, count=2, retry_after=2)

    answers = [post_events(api, batch()) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 202]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].json()["code"] == 20429
    assert api.rejected() == {429: 2}
    assert len(api.batches()) == 1


def test_scripted_500_answers_once(api: StandIn) -> None:
    """A scripted 500 is answered once, with a Twilio-style body, then 202."""
    api.script(status=500)

    first, second = post_events(api, batch()), post_events(api, batch())

    assert (first.status_code, second.status_code) == (500, 202)
    assert first.json()["code"] == 20500


def test_scripted_hang_drops_the_connection_without_answering(api: StandIn) -> None:
    """A scripted hang waits, then closes the connection with no answer."""
    api.script(hang=0.3)
    started = time.monotonic()

    with pytest.raises(requests.ConnectionError):
        post_events(api, batch())

    assert time.monotonic() - started >= 0.3
    assert api.stats()["hangs"] == 1
    assert post_events(api, batch()).status_code == 202


def test_requests_beyond_max_concurrency_get_429() -> None:
    """With latency, requests beyond max_concurrency are refused with Retry-After 1."""
    with StandIn(latency_ms=600, max_concurrency=2) as api:
        answers: list[requests.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(post_events(api, batch())))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [202, 202, 429, 429]
        refused = [a for a in answers if a.status_code == 429]
        assert all(a.headers["Retry-After"] == "1" for a in refused)


def test_latency_delays_each_events_answer() -> None:
    """A fixed latency_ms delays every Events answer by at least that long."""
    with StandIn(latency_ms=200) as api:
        started = time.monotonic()
        assert post_events(api, batch()).status_code == 202

        assert time.monotonic() - started >= 0.2


def test_wait_for_events_returns_once_enough_arrive(api: StandIn) -> None:
    """wait_for_events blocks until n events were accepted, then returns them."""
    body = batch(event(), event(lifecycle="COMMUNICATION_READ"))
    timer = threading.Timer(0.2, post_events, args=(api, body))
    timer.start()

    received = api.wait_for_events(2, timeout=5)
    timer.join()

    assert [r.event["lifecycle"] for r in received] == [
        "COMMUNICATION_DELIVERED",
        "COMMUNICATION_READ",
    ]
    assert {(r.store, r.profile) for r in received} == {(STORE, PROFILE)}


def test_wait_for_events_times_out_with_a_clear_message(api: StandIn) -> None:
    """wait_for_events raises TimeoutError saying how many of n events arrived."""
    post_events(api, batch())

    with pytest.raises(TimeoutError, match="accepted 1 of 3 events"):
        api.wait_for_events(3, timeout=0.1)


def test_keep_alive_serves_several_requests_on_one_connection(api: StandIn) -> None:
    """Two requests on one HTTP/1.1 connection are both answered."""
    path = f"/v1/Stores/{STORE}/Profiles/{PROFILE}/Events"
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(api.url).port)
    token = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}

    for _ in range(2):
        connection.request("POST", path, json.dumps(batch()), headers)
        answer = connection.getresponse()
        assert answer.status == 202
        assert answer.getheader("Content-Length") == str(len(answer.read()))
    connection.close()


def test_control_endpoints_drive_the_stand_in_over_http(api: StandIn) -> None:
    """The /_standin/ endpoints script faults, set profiles, report and reset."""
    control = f"{api.url}/_standin"

    requests.post(
        f"{control}/script", json={"status": 503, "retry_after": 4}, timeout=5
    )
    requests.post(f"{control}/profiles", json={PHONE: PROFILE}, timeout=5)
    refused, accepted = post_events(api, batch()), post_events(api, batch())
    received = requests.get(f"{control}/received", timeout=5).json()
    stats = requests.get(f"{control}/stats", timeout=5).json()

    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "4")
    assert accepted.status_code == 202
    accepted_at = received[0].pop("accepted_at")
    assert received == [{"store": STORE, "profile": PROFILE, "events": [event()]}]
    assert abs(accepted_at - time.time()) < 60
    assert stats["batches"] == 1 and stats["rejected"] == {"503": 1}
    assert api.profiles[PHONE] == PROFILE

    requests.post(f"{control}/reset", timeout=5)
    assert requests.get(f"{control}/received", timeout=5).json() == []


def test_control_settings_change_latency_and_concurrency(api: StandIn) -> None:
    """POST /_standin/settings changes latency_ms and max_concurrency; reset undoes."""
    control = f"{api.url}/_standin"

    answer = requests.post(
        f"{control}/settings", json={"latency_ms": 50, "max_concurrency": 3}, timeout=5
    )
    assert answer.status_code == 200
    assert (api.latency_ms, api.max_concurrency) == (50, 3)

    requests.post(f"{control}/reset", timeout=5)
    assert (api.latency_ms, api.max_concurrency) == (0, None)


def test_bad_control_request_is_refused(api: StandIn) -> None:
    """A malformed fault script over HTTP gets 400 and queues nothing."""
    answer = requests.post(
        f"{api.url}/_standin/script", json={"status": 429, "hang": 1}, timeout=5
    )

    assert answer.status_code == 400
    assert api.stats()["faults_pending"] == 0


def test_main_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m app.standin --help prints usage and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    assert "--port" in capsys.readouterr().out


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/Stores/nope/Profiles/{PROFILE}/Events",
        f"/v1/Stores/{STORE}/Profiles/nope/Events",
        "/v1/Stores/nope/Profiles/Lookup",
    ],
)
def test_ids_that_are_not_typeids_are_not_found(api: StandIn, path: str) -> None:
    """A store or profile id that is not a TypeID is a 404, as no such id exists."""
    response = requests.post(
        api.url + path, json=batch(), auth=(USER, TOKEN), timeout=5
    )

    assert response.status_code == 404
    assert "TypeID" in response.json()["message"]
    assert api.batches() == []


@pytest.fixture
def shaped() -> Iterator[StandIn]:
    """Serve a stand-in that checks only the shape of Events bodies."""
    with StandIn(check="shape") as standin:
        yield standin


def test_shape_check_accepts_events_the_schema_would_refuse(shaped: StandIn) -> None:
    """With check="shape", field rules are not checked: a bad id is still accepted."""
    body = batch(event(conversationId="not-a-typeid"))

    assert post_events(shaped, body).status_code == 202
    assert shaped.events()[0].event["conversationId"] == "not-a-typeid"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"type": "other", "events": [event()]}, "body"),
        ({"type": "twilio-comms-lifecycle"}, "body"),
        ([event()], "body"),
        (batch(), None),  # replaced below: 1001 events
        ({"type": "twilio-comms-lifecycle", "events": []}, "events"),
        (batch(event(), "an event"), "events/1"),
        (batch(event(), event(communicationType=None)), "events/1"),
    ],
)
def test_shape_check_refuses_what_is_not_an_events_body(
    shaped: StandIn, body: Any, where: str | None
) -> None:
    """With check="shape", a wrong type, 0 or 1001 events, or a missing field is 400."""
    if where is None:
        body, where = batch(*[event()] * 1001), "events"

    answer = post_events(shaped, body)

    assert answer.status_code == 400
    assert answer.json()["message"].startswith(f"{where}:")
    assert shaped.stats()["events"] == 0


def test_default_check_is_the_whole_schema() -> None:
    """Without check, a bad conversationId is still refused (the schema is checked)."""
    with StandIn() as api:
        answer = post_events(api, batch(event(conversationId="not-a-typeid")))

    assert answer.status_code == 400
    assert "conversationId" in answer.json()["message"]


def test_an_unknown_check_is_refused() -> None:
    """StandIn(check=...) takes only schema or shape."""
    with pytest.raises(ValueError, match="check must be one of"):
        StandIn(check="none")


def test_accepted_lists_each_batch_compactly(api: StandIn) -> None:
    """GET /_standin/accepted gives profile, accept time and event keys per batch."""
    before = time.time()
    post_events(api, batch(event(), event(lifecycle="COMMUNICATION_SENT")))
    post_events(api, batch(event(communicationId=None)))

    answer = requests.get(f"{api.url}/_standin/accepted", timeout=5).json()

    comm = f"comms_communication_{SUFFIX}"
    keys = [row[2] for row in answer["batches"]]
    assert keys == [
        [f"{comm}/COMMUNICATION_DELIVERED", f"{comm}/COMMUNICATION_SENT"],
        ["/COMMUNICATION_DELIVERED"],
    ]
    assert [row[0] for row in answer["batches"]] == [PROFILE, PROFILE]
    walls = [row[1] for row in answer["batches"]]
    assert before <= walls[0] <= walls[1] <= time.time()
    assert answer["last_wall"] == walls[1]
    assert answer["events"] == 3
    assert answer["cpu_s"] > 0


def test_accept_time_is_after_the_latency() -> None:
    """A batch's accept time is when it was recorded, after the fixed latency."""
    with StandIn(latency_ms=200) as api:
        sent = time.time()
        post_events(api, batch())
        (row,) = api.accepted()["batches"]

    assert row[1] - sent >= 0.2


def test_main_takes_check_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m app.standin --help documents --check and --quiet."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])

    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--check {schema,shape}" in out
    assert "--quiet" in out
