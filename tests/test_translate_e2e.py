"""End to end for every kind: Event Streams and Conversations through gunicorn."""

import hashlib
import json

import pytest
import requests

from conftest import ACCOUNT_SID, CUSTOMER, sign

pytestmark = pytest.mark.e2e

CALL = "CA" + "0" * 31 + "1"
OTHER = "+15005550007"
PROFILE = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1c"


def call_event(moment: str, number: int, status: str) -> dict:
    """Return a call status CloudEvent with SequenceNumber ``number``."""
    parameters = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL,
        "CallStatus": status,
        "Direction": "outbound-api",
        "From": "+15005550001",
        "To": CUSTOMER,
        "SequenceNumber": str(number),
        "Timestamp": f"Fri, 04 Dec 2026 10:00:0{number} +0000",
    }
    return {
        "specversion": "1.0",
        "type": f"com.twilio.voice.status-callback.call.{moment}",
        "id": f"EZ{number}",
        "data": {"sid": CALL, "request": {"parameters": parameters}},
    }


def post_events(bridge, payload) -> requests.Response:
    """Post CloudEvents as an Event Streams sink does, bodySHA256 in the URL."""
    body = json.dumps(payload).encode()
    url = f"{bridge.url}/twilio/events?bodySHA256={hashlib.sha256(body).hexdigest()}"
    return requests.post(
        url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Signature": sign(url, {}),
        },
        timeout=5,
    )


def test_an_event_streams_batch_and_a_receipt_reach_the_api_in_order(
    start_bridge, standin
):
    """A shuffled call batch arrives in sequence; a receipt reaches its profile."""
    bridge = start_bridge(linger_ms=1000)
    batch = [
        call_event("completed", 3, "busy"),
        call_event("ringing", 1, "ringing"),
        call_event("initiated", 0, "initiated"),
        {
            "specversion": "1.0",
            "type": "com.twilio.messaging.message.sent",
            "id": "EZ9",
            "data": {
                "accountSid": ACCOUNT_SID,
                "messageSid": "SM" + "0" * 32,
                "from": "+1 500 555 0001",
                "to": "whatsapp:" + OTHER,
            },
        },
        {
            "specversion": "1.0",
            "type": "com.twilio.error-logs.error.logged",
            "id": "EZ8",
        },
    ]
    receipt = {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onDeliveryUpdated",
        "ConversationSid": "CH" + "0" * 32,
        "MessageSid": "IM" + "0" * 32,
        "ParticipantSid": "MB" + "0" * 32,
        "Status": "delivered",
    }

    assert post_events(bridge, batch).status_code == 204
    assert post_events(bridge, batch).status_code == 204  # a redelivery
    response = bridge.post(f"/twilio/conversations?profileId={PROFILE}", receipt)
    assert response.status_code == 204

    received = standin.wait_for_events(5, timeout=20)
    assert len(received) == 5
    by_profile: dict[str, list[dict]] = {}
    for item in received:
        by_profile.setdefault(item.profile, []).append(item.event)
    assert [e["communicationStatus"] for e in by_profile[PROFILE]] == ["DELIVERED"]
    lifecycles = sorted(
        [e["lifecycle"] for e in events]
        for p, events in by_profile.items()
        if p != PROFILE
    )
    assert lifecycles == [
        ["COMMUNICATION_INITIATED", "COMMUNICATION_RINGING", "COMMUNICATION_BUSY"],
        ["COMMUNICATION_SENT"],
    ]
    [sent] = [e for e in received if e.event["lifecycle"] == "COMMUNICATION_SENT"]
    assert sent.event["communicationType"] == "WHATSAPP"
    assert sent.event["recipient"]["address"] == OTHER
    assert sent.event["sender"]["address"] == "+15005550001"
    assert standin.rejected() == {}


def test_a_receipt_of_a_learned_conversation_reaches_the_customers_profile(
    start_bridge, standin
):
    """Through gunicorn and the worker: a participant teaches, its receipt follows."""
    customer_profile = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1d"
    agent_profile = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1e"
    standin.set_profiles({CUSTOMER: customer_profile, OTHER: agent_profile})
    bridge = start_bridge(linger_ms=200)
    conversation = "CH" + "0" * 31 + "7"
    participant = {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onParticipantAdded",
        "ConversationSid": conversation,
        "ParticipantSid": "MB" + "0" * 31 + "7",
        "MessagingBinding.Address": "whatsapp:" + CUSTOMER,
        "MessagingBinding.ProxyAddress": "whatsapp:+15005550001",
    }
    receipt = {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onDeliveryUpdated",
        "ConversationSid": conversation,
        "MessageSid": "IM" + "0" * 31 + "7",
        "ParticipantSid": "MB" + "0" * 31 + "7",
        "Status": "read",
    }
    parent = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
        "From": "+15005550001",
        "To": CUSTOMER,
    }
    child = parent | {
        "CallSid": "CA" + "0" * 31 + "8",
        "CallStatus": "completed",
        "Direction": "outbound-dial",
        "ParentCallSid": CALL,
        "To": OTHER,  # the agent the call was dialled to
    }

    response = bridge.post("/twilio/conversations", participant)
    assert response.status_code == 204
    assert response.headers["X-Memory-Bridge"] == "learned"
    assert bridge.post("/twilio/conversations", receipt).status_code == 204
    assert bridge.post("/twilio/voice", parent).status_code == 204
    assert bridge.post("/twilio/voice", child).status_code == 204

    received = standin.wait_for_events(3, timeout=20)
    assert {item.profile for item in received} == {customer_profile}
    assert sorted(item.event["lifecycle"] for item in received) == [
        "COMMUNICATION_ANSWERED",
        "COMMUNICATION_COMPLETED",
        "COMMUNICATION_READ",
    ]
    assert standin.rejected() == {}
