"""Routing memory on the web path: receipts and child legs reach the right customer.

A Conversations receipt names no customer, and a call's child leg names whoever
was dialled; the bridge remembers a conversation's and a parent call's customer
in Redis and routes them there (app/routing.py, app/callbacks.py).
"""

from typing import Any

import pytest
from helpers_callbacks import counters, post_form, post_json, stored

from app import create_app
from app.errors import StoreUnavailable
from conftest import ACCOUNT_SID, CUSTOMER

BUSINESS = "+15005550001"
AGENT = "+15005550009"
OTHER = "+15005550008"
CONVERSATION = "CH" + "0" * 31 + "1"
PARTICIPANT = "MB" + "0" * 31 + "1"
CALL = "CA" + "0" * 31 + "1"
CHILD = "CA" + "0" * 31 + "2"
PROFILE = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1c"
CONVERSATIONS = "/twilio/conversations"


def participant(address: str, conversation: str = CONVERSATION) -> dict[str, str]:
    """Return an onParticipantAdded webhook for a customer at ``address``."""
    return {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onParticipantAdded",
        "ConversationSid": conversation,
        "ParticipantSid": PARTICIPANT,
        "MessagingBinding.Address": address,
        "MessagingBinding.ProxyAddress": "whatsapp:" + BUSINESS,
    }


def receipt(status: str, message: str = "IM" + "0" * 31 + "1") -> dict[str, str]:
    """Return an onDeliveryUpdated webhook of the conversation."""
    return {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onDeliveryUpdated",
        "ConversationSid": CONVERSATION,
        "MessageSid": message,
        "ParticipantSid": PARTICIPANT,
        "DeliveryReceiptSid": "DY" + "0" * 32,
        "Status": status,
    }


def added(author: str, source: str, message: str) -> dict[str, str]:
    """Return an onMessageAdded webhook of the conversation."""
    return {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onMessageAdded",
        "ConversationSid": CONVERSATION,
        "MessageSid": message,
        "Author": author,
        "Source": source,
        "Body": "Ahoy",
    }


def call(sid: str, status: str, to: str, **extra: str) -> dict[str, str]:
    """Return a call status callback from the business to ``to``."""
    form = {"AccountSid": ACCOUNT_SID, "CallSid": sid, "CallStatus": status}
    return form | {"Direction": "outbound-api", "From": BUSINESS, "To": to} | extra


def child(status: str, parent: str = CALL) -> dict[str, str]:
    """Return a status callback of a child leg dialled to the agent."""
    form = call(CHILD, status, AGENT, Direction="outbound-dial", ParentCallSid=parent)
    return form | {"From": CUSTOMER}


def lifecycles(redis: Any, member: str) -> list[str]:
    return [e["lifecycle"] for e in stored(redis).get(member, [])]


def test_a_participant_added_is_remembered_and_counted_as_learned(client, redis):
    """onParticipantAdded is a 204 with no event, remembered, counted as learned."""
    response = post_form(client, CONVERSATIONS, participant("whatsapp:" + CUSTOMER))

    assert response.status_code == 204
    assert response.headers["X-Memory-Bridge"] == "learned"
    assert stored(redis) == {}
    assert redis.get(f"mb:conv:{CONVERSATION}") == CUSTOMER.encode()
    assert 0 < redis.ttl(f"mb:conv:{CONVERSATION}") <= 3 * 24 * 3600
    found = counters(redis)
    assert found["learned:conversation"] == 1
    assert not any(name.startswith("unknown:") for name in found)


def test_a_receipt_of_a_learned_conversation_reaches_its_customer(client, redis):
    """After onParticipantAdded, the conversation's receipts go to that customer."""
    post_form(client, CONVERSATIONS, participant(CUSTOMER))

    response = post_form(client, CONVERSATIONS, receipt("delivered"))

    assert response.status_code == 204
    assert "parked" not in response.headers["X-Memory-Bridge"]
    assert lifecycles(redis, f"phone:{CUSTOMER}") == ["COMMUNICATION_DELIVERED"]
    assert "" not in stored(redis)


def test_a_business_message_of_a_learned_conversation_reaches_its_customer(
    client, redis
):
    """A customer's own message teaches the conversation; the agent's reply follows."""
    post_form(client, CONVERSATIONS, added(CUSTOMER, "SMS", "IM" + "0" * 31 + "2"))

    post_form(client, CONVERSATIONS, added("agent-jane", "SDK", "IM" + "0" * 31 + "3"))

    assert lifecycles(redis, f"phone:{CUSTOMER}") == [
        "COMMUNICATION_RECEIVED",
        "COMMUNICATION_CREATED",
    ]
    assert redis.get(f"mb:conv:{CONVERSATION}") == CUSTOMER.encode()


def test_a_receipt_before_anything_is_learned_stays_parked(client, redis):
    """A receipt of a conversation nobody taught is parked, and stays there."""
    post_form(client, CONVERSATIONS, receipt("sent"))

    post_form(client, CONVERSATIONS, participant(CUSTOMER))

    assert lifecycles(redis, "") == ["COMMUNICATION_SENT"]
    assert f"phone:{CUSTOMER}" not in stored(redis)


def test_a_profile_in_the_url_wins_over_the_memory(client, redis):
    """With ?profileId=, a receipt goes to that profile whatever was learned."""
    post_form(client, CONVERSATIONS, participant(CUSTOMER))

    post_form(client, f"{CONVERSATIONS}?profileId={PROFILE}", receipt("read"))

    assert lifecycles(redis, f"id:{PROFILE}") == ["COMMUNICATION_READ"]


def test_an_agent_participant_teaches_nothing(client, redis):
    """An SDK participant (no address) is a 204, counted apart, remembering nothing."""
    form = participant("") | {"Identity": "agent-jane"}

    response = post_form(client, CONVERSATIONS, form)

    assert response.status_code == 204
    assert redis.get(f"mb:conv:{CONVERSATION}") is None
    assert counters(redis)["ignored:participant_without_address"] == 1


def test_a_child_leg_goes_to_its_parent_calls_customer(client, redis):
    """A child leg dialled to an agent lands with the parent call's customer."""
    post_form(client, "/twilio/voice", call(CALL, "in-progress", CUSTOMER))

    response = post_form(client, "/twilio/voice", child("ringing"))

    assert response.status_code == 204
    assert lifecycles(redis, f"phone:{CUSTOMER}") == [
        "COMMUNICATION_ANSWERED",
        "COMMUNICATION_RINGING",
    ]
    assert f"phone:{AGENT}" not in stored(redis)
    assert redis.get(f"mb:call:{CALL}") == CUSTOMER.encode()


def test_a_child_leg_of_an_unseen_parent_goes_by_its_to(client, redis):
    """Without the parent seen, a child leg is routed by its To, as before."""
    post_form(client, "/twilio/voice", child("ringing", parent="CA" + "0" * 31 + "9"))

    assert lifecycles(redis, f"phone:{AGENT}") == ["COMMUNICATION_RINGING"]


def test_a_child_leg_is_still_its_own_call(client, redis):
    """Routed with its parent, a child leg keeps its own order and id."""
    post_form(client, "/twilio/voice", call(CALL, "completed", CUSTOMER))
    post_form(client, "/twilio/voice", child("in-progress"))

    post_form(client, "/twilio/voice", child("completed"))

    assert redis.hget(f"mb:comm:{CALL}", "s") == b"completed"
    assert redis.hget(f"mb:comm:{CHILD}", "s") == b"completed"
    assert len(stored(redis)[f"phone:{CUSTOMER}"]) == 3


def test_messaging_callbacks_neither_read_nor_write_the_memory(client, redis):
    """A plain message status touches no routing memory key."""
    form = {"AccountSid": ACCOUNT_SID, "MessageSid": "SM" + "0" * 32}
    form |= {"MessageStatus": "sent", "From": BUSINESS, "To": CUSTOMER}

    post_form(client, "/twilio/messaging", form)

    assert list(redis.scan_iter("mb:conv:*")) == []
    assert list(redis.scan_iter("mb:call:*")) == []


def test_a_batch_routes_a_receipt_by_a_message_in_the_same_batch(client, redis):
    """Event Streams: a customer message teaches the receipts posted beside it."""
    message = {
        "specversion": "1.0",
        "type": "com.twilio.conversations.message.added",
        "id": "EV1",
        "data": added("whatsapp:" + OTHER, "WHATSAPP", "IM" + "0" * 31 + "4"),
    }
    delivery = {
        "specversion": "1.0",
        "type": "com.twilio.conversations.delivery.updated",
        "id": "EV2",
        "data": receipt("delivered", "IM" + "0" * 31 + "5"),
    }

    response = post_json(client, "/twilio/events", [message, delivery])

    assert response.status_code == 204
    assert lifecycles(redis, f"phone:{OTHER}") == [
        "COMMUNICATION_RECEIVED",
        "COMMUNICATION_DELIVERED",
    ]


@pytest.mark.parametrize(
    ("path", "form"),
    [
        (CONVERSATIONS, participant(CUSTOMER)),
        (CONVERSATIONS, receipt("read")),
        ("/twilio/voice", child("ringing")),
    ],
)
def test_redis_away_is_a_503_for_learning_and_recalling(settings, path, form):
    """When Redis is away, teaching or reading the memory answers 503, never 2xx."""
    app = create_app({**settings, "redis_url": "redis://127.0.0.1:1/0"})

    response = post_form(app.test_client(), path, form)

    assert response.status_code == 503


def test_recall_of_nothing_makes_no_round_trip(settings, redis):
    """Buffer.recall of no keys answers {} without touching Redis."""
    app = create_app({**settings, "redis_url": "redis://127.0.0.1:1/0"})
    buffer = app.extensions["memory_bridge"].buffer

    assert buffer.recall([]) == {}
    with pytest.raises(StoreUnavailable):
        buffer.recall(["conv:" + CONVERSATION])
