"""Tests for app.conversations: delivery receipts and messages added."""

from datetime import UTC, datetime

import pytest

from app import contract, ids
from app.conversations import translate
from app.errors import CallbackError

RECEIVED = datetime(2026, 12, 4, 9, 30, 15, 123000, tzinfo=UTC)
CONVERSATION = "CH" + "0" * 31 + "1"
MESSAGE = "IM" + "0" * 31 + "1"
PARTICIPANT = "MB" + "0" * 31 + "1"
OTHER_PARTICIPANT = "MB" + "0" * 31 + "2"
CUSTOMER = "+15005550006"


def receipt(status: str, **fields: str) -> dict[str, str]:
    """Return an onDeliveryUpdated webhook, then these fields."""
    form = {
        "EventType": "onDeliveryUpdated",
        "ConversationSid": CONVERSATION,
        "MessageSid": MESSAGE,
        "ParticipantSid": PARTICIPANT,
        "DeliveryReceiptSid": "DY" + "0" * 32,
        "Status": status,
        "DateCreated": "2026-12-04T10:00:00.000Z",
        "DateUpdated": "2026-12-04T10:00:02.500Z",
    }
    return form | fields


def added(author: str, source: str, **fields: str) -> dict[str, str]:
    """Return an onMessageAdded webhook by ``author`` from ``source``."""
    form = {
        "EventType": "onMessageAdded",
        "ConversationSid": CONVERSATION,
        "MessageSid": MESSAGE,
        "ParticipantSid": PARTICIPANT,
        "Author": author,
        "Source": source,
        "Body": "Ahoy",
        "DateCreated": "2026-12-04T10:00:00.000Z",
    }
    return form | fields


@pytest.mark.parametrize(
    ("status", "lifecycle"),
    [
        ("sent", "COMMUNICATION_SENT"),
        ("delivered", "COMMUNICATION_DELIVERED"),
        ("undelivered", "COMMUNICATION_UNDELIVERED"),
        ("failed", "COMMUNICATION_FAILED"),
        ("read", "COMMUNICATION_READ"),
    ],
)
def test_each_delivery_status_gives_its_event(status, lifecycle):
    """Each onDeliveryUpdated Status gives its outbound lifecycle event."""
    [event] = translate(receipt(status), RECEIVED).events

    assert event.body["lifecycle"] == lifecycle
    assert event.body["communicationStatus"] == status.upper()
    assert event.body["direction"] == "OUTBOUND"
    assert event.body["timestamp"] == "2026-12-04T10:00:02.500Z"
    assert event.body["conversationId"] == ids.conversation_id_of(CONVERSATION)
    assert event.body["communicationId"] == ids.communication_id(MESSAGE)
    assert contract.problems(event.body) == []


def test_receipts_for_two_participants_are_ordered_apart():
    """One message's receipts for two participants do not make each other stale."""
    first = translate(receipt("delivered"), RECEIVED).events[0]
    second = translate(receipt("sent", ParticipantSid=OTHER_PARTICIPANT), RECEIVED)

    assert first.communication != second.events[0].communication
    assert first.body["communicationId"] == second.events[0].body["communicationId"]


def test_a_failed_receipt_carries_its_error_code():
    """A failed receipt's ErrorCode becomes errorCode."""
    [event] = translate(receipt("failed", ErrorCode="30008"), RECEIVED).events

    assert event.body["errorCode"] == "30008"


@pytest.mark.parametrize("status", ["read", "delivered"])
def test_error_code_zero_is_no_error(status: str):
    """A receipt's ErrorCode 0 (the SDK's "no error") gives no errorCode."""
    [event] = translate(receipt(status, ErrorCode="0"), RECEIVED).events

    assert "errorCode" not in event.body


def test_an_unknown_delivery_status_is_counted_not_forwarded():
    """A Status the table does not know gives no event and names itself to count."""
    translation = translate(receipt("exploded"), RECEIVED)

    assert translation.events == []
    assert translation.unknown == ("conversations", "exploded")


@pytest.mark.parametrize(
    ("author", "source", "channel"),
    [
        (CUSTOMER, "SMS", "SMS"),
        ("whatsapp:" + CUSTOMER, "WHATSAPP", "WHATSAPP"),
        ("whatsapp:" + CUSTOMER, "", "WHATSAPP"),
        (CUSTOMER, "", "SMS"),
    ],
)
def test_a_message_from_a_customer_is_received(author, source, channel):
    """A message a customer sent on a messaging channel is RECEIVED, INBOUND."""
    translation = translate(added(author, source), RECEIVED)
    [event] = translation.events

    assert event.body["lifecycle"] == "COMMUNICATION_RECEIVED"
    assert event.body["direction"] == "INBOUND"
    assert event.body["communicationType"] == channel
    assert event.body["sender"]["address"] == CUSTOMER
    assert "recipient" not in event.body
    assert translation.customer == CUSTOMER


@pytest.mark.parametrize("source", ["SDK", "API"])
def test_a_message_the_business_added_is_created(source):
    """A message added through the SDK or the API is CREATED, OUTBOUND, no customer."""
    translation = translate(added("agent-jane", source), RECEIVED)
    [event] = translation.events

    assert event.body["lifecycle"] == "COMMUNICATION_CREATED"
    assert event.body["direction"] == "OUTBOUND"
    assert event.body["communicationType"] == "CONVERSATIONS"
    assert event.body["sender"]["address"] == "agent-jane"
    assert translation.customer == ""


def test_an_api_message_with_a_phone_author_is_still_the_business():
    """Source API wins over an Author that looks like a phone number."""
    translation = translate(added(CUSTOMER, "API"), RECEIVED)

    assert translation.events[0].body["lifecycle"] == "COMMUNICATION_CREATED"


@pytest.mark.parametrize(
    "event_type", ["onConversationAdded", "onParticipantRemoved", "onMessageUpdated"]
)
def test_other_event_types_are_counted_not_forwarded(event_type):
    """Event types other than the three read give no event and are counted."""
    translation = translate({"EventType": event_type}, RECEIVED)

    assert translation.events == []
    assert translation.ignored == "unknown_event_type"
    assert translation.unknown == ("conversations-event", event_type)


@pytest.mark.parametrize(
    ("form", "names"),
    [
        ({}, "EventType"),
        (receipt("sent", MessageSid=""), "MessageSid"),
        (receipt("sent", ConversationSid="CH1"), "ConversationSid"),
        (receipt("sent", ParticipantSid="nope"), "ParticipantSid"),
        (receipt(""), "Status"),
    ],
)
def test_a_webhook_missing_what_it_always_carries_is_refused(form, names):
    """A webhook without its EventType, SIDs or Status is a 400 naming the field."""
    with pytest.raises(CallbackError, match=names) as raised:
        translate(form, RECEIVED)

    assert raised.value.status == 400


def test_a_given_conversation_id_wins():
    """A conversationId in the callback URL is used instead of the derived one."""
    given = "conv_conversation_01jf8x0m6ke3v9zq7r4t5w2y1c"

    [event] = translate(receipt("read"), RECEIVED, given).events

    assert event.body["conversationId"] == given


def participant(address: str, **fields: str) -> dict[str, str]:
    """Return an onParticipantAdded webhook for a participant at ``address``."""
    form = {
        "EventType": "onParticipantAdded",
        "ConversationSid": CONVERSATION,
        "ParticipantSid": PARTICIPANT,
        "MessagingBinding.Address": address,
        "MessagingBinding.ProxyAddress": "+15005550001",
        "DateCreated": "2026-12-04T10:00:00.000Z",
    }
    return form | fields


@pytest.mark.parametrize("address", [CUSTOMER, "whatsapp:" + CUSTOMER])
def test_a_participant_added_teaches_the_conversations_customer(address):
    """onParticipantAdded gives no event, is not unknown, and teaches the customer."""
    translation = translate(participant(address), RECEIVED)

    assert translation.events == []
    assert translation.unknown is None
    assert translation.ignored == "learned"
    assert translation.customer == CUSTOMER
    assert translation.learn == f"conv:{CONVERSATION}"


def test_an_sdk_participant_teaches_nothing():
    """A participant with an Identity and no address (an agent) teaches nothing."""
    form = participant("", Identity="agent-jane")

    translation = translate(form, RECEIVED)

    assert translation.events == []
    assert translation.unknown is None
    assert translation.learn == ""
    assert translation.ignored == "participant_without_address"


def test_a_participant_added_without_a_conversation_is_refused():
    """onParticipantAdded without a ConversationSid is a 400 naming it."""
    with pytest.raises(CallbackError, match="ConversationSid"):
        translate(participant(CUSTOMER, ConversationSid=""), RECEIVED)


def test_a_receipt_asks_for_its_conversations_customer():
    """A receipt names no customer and is routed by its conversation's memory."""
    translation = translate(receipt("delivered"), RECEIVED)

    assert translation.customer == ""
    assert translation.recall == f"conv:{CONVERSATION}"
    assert translation.learn == ""


def test_a_business_message_asks_and_a_customer_message_teaches():
    """The business's message reads the memory; a customer's message writes it."""
    business = translate(added("agent-jane", "SDK"), RECEIVED)
    customer = translate(added("whatsapp:" + CUSTOMER, "WHATSAPP"), RECEIVED)

    assert (business.recall, business.learn) == (f"conv:{CONVERSATION}", "")
    assert (customer.recall, customer.learn) == ("", f"conv:{CONVERSATION}")
    assert customer.customer == CUSTOMER
