"""The examples of Twilio's documentation, each with the events it must give.

tests/fixtures/twilio_docs.json holds one example per kind of callback (fake
SIDs and numbers, the fields the docs show), the answer, the profile member the
events go to, and the fields each event must have, in order.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from helpers_callbacks import counters, post_form, post_json, schema_problems, stored

from app import contract, ids

FIXTURES = json.loads((Path(__file__).parent / "fixtures/twilio_docs.json").read_text())
_CHECKED_ELSEWHERE = (
    "communication",
    "communicationId_of",
    "conversation_of",
    "dedupe",
)


def send(client: Any, fixture: dict[str, Any]) -> Any:
    """Post the fixture's callback the way Twilio would."""
    if "json" in fixture:
        return post_json(client, fixture["path"], fixture["json"])
    return post_form(client, fixture["path"], fixture["form"])


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_a_documented_callback_gives_its_events(client, redis, fixture):
    """Each documented example is answered, routed and translated as written down."""
    response = send(client, fixture)

    assert response.status_code == fixture["answer"], response.get_data(as_text=True)
    buffers = stored(redis)
    if not fixture["events"]:
        assert buffers == {}
        return
    assert list(buffers) == [fixture["member"]]
    events = buffers[fixture["member"]]
    assert len(events) == len(fixture["events"])
    for got, want in zip(events, fixture["events"], strict=True):
        for name, value in want.items():
            if name in ("sender", "recipient"):
                assert got[name]["address"] == value
                assert got[name]["participantId"] == ids.participant_id(value)
            elif name not in _CHECKED_ELSEWHERE:
                assert got[name] == value, name
        assert ("sender" in got) == ("sender" in want)
        assert ("recipient" in got) == ("recipient" in want)
        assert ("errorCode" in got) == ("errorCode" in want)
        sid = want.get("communicationId_of", want["communication"])
        assert got["communicationId"] == ids.communication_id(sid)
        if "conversation_of" in want:
            expected = ids.conversation_id_of(want["conversation_of"])
            assert got["conversationId"] == expected
        assert redis.exists(f"mb:comm:{want['communication']}")
        if "dedupe" in want:
            assert redis.exists(f"mb:seen:{want['dedupe']}")
        assert contract.problems(got) == []
    assert schema_problems(events) == []


@pytest.mark.parametrize(
    "fixture",
    [f for f in FIXTURES if "unknown" in f],
    ids=[f["name"] for f in FIXTURES if "unknown" in f],
)
def test_a_documented_event_we_do_not_forward_is_counted(client, redis, fixture):
    """An event type the bridge does not forward is counted under its own name."""
    send(client, fixture)

    assert counters(redis)[fixture["unknown"]] == 1


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_a_documented_callback_sent_twice_is_stored_once(client, redis, fixture):
    """Twilio's retry of any documented example adds no second event."""
    send(client, fixture)
    first = stored(redis)

    response = send(client, fixture)

    assert response.status_code == fixture["answer"]
    assert stored(redis) == first


@pytest.mark.parametrize(
    "fixture",
    [f for f in FIXTURES if "learns" in f],
    ids=[f["name"] for f in FIXTURES if "learns" in f],
)
def test_a_documented_participant_routes_the_conversations_receipts(
    client, redis, fixture
):
    """The documented onParticipantAdded teaches the customer its receipts go to."""
    response = send(client, fixture)

    assert response.status_code == 204
    assert counters(redis)[fixture["counted"]] == 1
    for key, customer in fixture["learns"].items():
        assert redis.get(f"mb:{key}") == customer.encode()
    [documented] = [
        f for f in FIXTURES if f["name"].endswith("onDeliveryUpdated, read")
    ]
    receipt = {**documented, "path": "/twilio/conversations"}  # no ?profileId=
    assert send(client, receipt).status_code == 204
    [customer] = fixture["learns"].values()
    [event] = stored(redis)[f"phone:{customer}"]
    assert event["lifecycle"] == "COMMUNICATION_READ"
    assert schema_problems([event]) == []
