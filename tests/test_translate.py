"""Tests for app.translate: Twilio callbacks in, lifecycle events out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app import contract
from app.errors import CallbackError
from app.translate import STATUSES, Event, Translation, translate

ACCOUNT = "AC00000000000000000000000000000000"
SERVICE = "MG00000000000000000000000000000000"
MESSAGE = "SM00000000000000000000000000000001"
OTHER_MESSAGE = "SM00000000000000000000000000000002"
CALL = "CA00000000000000000000000000000001"
BUSINESS = "+15005550001"
CUSTOMER = "+15005550006"
OTHER_CUSTOMER = "+15005550009"
RECEIVED = datetime(2026, 12, 4, 9, 30, 15, 123456, tzinfo=UTC)
RECEIVED_TEXT = "2026-12-04T09:30:15.123Z"
PLUS_TWO = timezone(timedelta(hours=2))
GIVEN_CONVERSATION = "conv_conversation_01jf8x0m6ke3v9zq7r4t5w2y1c"
CONVERSATION = re.compile(r"^conv_conversation_[0-7][0-9a-hjkmnp-tv-z]{25}\Z")
COMMUNICATION = re.compile(r"^comms_communication_[0-7][0-9a-hjkmnp-tv-z]{25}\Z")

# What each Twilio status must become: (lifecycle, communicationStatus, direction).
# Written out by hand so that the test says what is right, not what the table says.
MESSAGING = {
    "accepted": ("COMMUNICATION_ACCEPTED", "ACCEPTED", "OUTBOUND"),
    "scheduled": ("COMMUNICATION_SCHEDULED", "SCHEDULED", "OUTBOUND"),
    "queued": ("COMMUNICATION_QUEUED", "QUEUED", "OUTBOUND"),
    "sending": ("COMMUNICATION_SENDING", "SENDING", "OUTBOUND"),
    "sent": ("COMMUNICATION_SENT", "SENT", "OUTBOUND"),
    "delivered": ("COMMUNICATION_DELIVERED", "DELIVERED", "OUTBOUND"),
    "undelivered": ("COMMUNICATION_UNDELIVERED", "UNDELIVERED", "OUTBOUND"),
    "failed": ("COMMUNICATION_FAILED", "FAILED", "OUTBOUND"),
    "read": ("COMMUNICATION_READ", "READ", "OUTBOUND"),
    "canceled": ("COMMUNICATION_CANCELED", "CANCELED", "OUTBOUND"),
    "partially_delivered": (
        "COMMUNICATION_PARTIALLY_DELIVERED",
        "PARTIALLY_DELIVERED",
        "OUTBOUND",
    ),
    "receiving": ("COMMUNICATION_RECEIVING", "RECEIVING", "INBOUND"),
    "received": ("COMMUNICATION_RECEIVED", "RECEIVED", "INBOUND"),
}
# Voice rows take their direction from the callback's Direction, so none here.
VOICE = {
    "queued": ("COMMUNICATION_QUEUED", "QUEUED"),
    "initiated": ("COMMUNICATION_INITIATED", "INITIATED"),
    "ringing": ("COMMUNICATION_RINGING", "RINGING"),
    "in-progress": ("COMMUNICATION_ANSWERED", "IN_PROGRESS"),
    "completed": ("COMMUNICATION_COMPLETED", "COMPLETED"),
    "busy": ("COMMUNICATION_BUSY", "BUSY"),
    "failed": ("COMMUNICATION_FAILED", "FAILED"),
    "no-answer": ("COMMUNICATION_NO_ANSWER", "NO_ANSWER"),
    "canceled": ("COMMUNICATION_CANCELED", "CANCELED"),
}
CALL_DIRECTIONS = {
    "inbound": "INBOUND",
    "outbound-api": "OUTBOUND",
    "outbound-dial": "OUTBOUND",
}


def messaging(status: str, **fields: str) -> dict[str, str]:
    """Return an outbound messaging status callback, then these fields."""
    form = {
        "MessageSid": MESSAGE,
        "MessageStatus": status,
        "AccountSid": ACCOUNT,
        "From": BUSINESS,
        "To": CUSTOMER,
    }
    form.update(fields)

    return form


def voice(
    status: str, direction: str = "outbound-api", **fields: str
) -> dict[str, str]:
    """Return a voice status callback in ``direction``, then these fields."""
    business_calls = direction != "inbound"
    form = {
        "CallSid": CALL,
        "CallStatus": status,
        "AccountSid": ACCOUNT,
        "Direction": direction,
        "From": BUSINESS if business_calls else CUSTOMER,
        "To": CUSTOMER if business_calls else BUSINESS,
        "SequenceNumber": "0",
    }
    form.update(fields)

    return form


def only_event(translation: Translation) -> dict[str, Any]:
    """Return the body of the one event, after checking it passes the contract."""
    assert len(translation.events) == 1
    event = translation.events[0]
    assert isinstance(event, Event)
    assert contract.problems(event.body) == []

    return event.body


def test_the_table_covers_every_status_twilio_documents() -> None:
    """The table has a row for every messaging and call status and no others."""
    assert set(STATUSES["messaging"]) == set(MESSAGING)
    assert set(STATUSES["voice"]) == set(VOICE)


@pytest.mark.parametrize("status", sorted(STATUSES["messaging"]))
def test_each_messaging_status_gives_its_lifecycle_event(status: str) -> None:
    """Each messaging status yields one event with its lifecycle, status, direction."""
    lifecycle, communication_status, direction = MESSAGING[status]
    if direction == "INBOUND":
        form = messaging(status, From=CUSTOMER, To=BUSINESS)
    else:
        form = messaging(status)

    translation = translate("messaging", form, RECEIVED)
    body = only_event(translation)

    assert translation.status == status
    assert translation.ignored == ""
    assert translation.events[0].communication == MESSAGE
    assert body["lifecycle"] == lifecycle
    assert body["communicationStatus"] == communication_status
    assert body["direction"] == direction
    assert body["communicationType"] == "SMS"


@pytest.mark.parametrize("direction", sorted(CALL_DIRECTIONS))
@pytest.mark.parametrize("status", sorted(STATUSES["voice"]))
def test_each_call_status_gives_its_lifecycle_event(
    status: str, direction: str
) -> None:
    """Each call status yields one VOICE event whose direction is the call's."""
    lifecycle, communication_status = VOICE[status]

    translation = translate("voice", voice(status, direction), RECEIVED)
    body = only_event(translation)

    assert translation.events[0].communication == CALL
    assert body["lifecycle"] == lifecycle
    assert body["communicationStatus"] == communication_status
    assert body["direction"] == CALL_DIRECTIONS[direction]
    assert body["communicationType"] == "VOICE"


def test_an_outbound_message_has_the_customer_as_recipient() -> None:
    """For an outbound message the customer is To and the business is the sender."""
    translation = translate("messaging", messaging("delivered"), RECEIVED)
    body = only_event(translation)

    assert translation.customer == CUSTOMER
    assert body["sender"]["address"] == BUSINESS
    assert body["recipient"]["address"] == CUSTOMER


def test_an_inbound_message_has_the_customer_as_sender() -> None:
    """For an inbound message the customer is From and the business the recipient."""
    form = messaging("received", From=CUSTOMER, To=BUSINESS)

    translation = translate("messaging", form, RECEIVED)
    body = only_event(translation)

    assert translation.customer == CUSTOMER
    assert body["sender"]["address"] == CUSTOMER
    assert body["recipient"]["address"] == BUSINESS


@pytest.mark.parametrize(
    ("direction", "customer_field"),
    [("inbound", "From"), ("outbound-api", "To"), ("outbound-dial", "To")],
)
def test_the_customer_of_a_call_follows_its_direction(
    direction: str, customer_field: str
) -> None:
    """An inbound call's customer is From; an outbound call's customer is To."""
    form = voice("completed", direction)

    translation = translate("voice", form, RECEIVED)

    assert translation.customer == form[customer_field] == CUSTOMER


def test_a_whatsapp_read_receipt_is_a_whatsapp_event_with_bare_addresses() -> None:
    """A WhatsApp read receipt is READ on WHATSAPP, addresses without the prefix."""
    form = messaging(
        "read",
        ChannelPrefix="whatsapp",
        To="whatsapp:+15005550006",
        From="whatsapp:+15005550001",
    )

    translation = translate("messaging", form, RECEIVED)
    body = only_event(translation)

    assert body["communicationType"] == "WHATSAPP"
    assert body["communicationStatus"] == "READ"
    assert body["lifecycle"] == "COMMUNICATION_READ"
    assert body["sender"]["address"] == "+15005550001"
    assert body["recipient"]["address"] == "+15005550006"
    assert translation.customer == "+15005550006"


@pytest.mark.parametrize("sender", ["TESTSENDER", "55555"])
def test_an_alphanumeric_or_short_code_sender_is_kept_as_is(sender: str) -> None:
    """An alphanumeric sender id or a short code is accepted and kept unchanged."""
    translation = translate("messaging", messaging("sent", From=sender), RECEIVED)
    body = only_event(translation)

    assert body["sender"]["address"] == sender
    assert body["recipient"]["address"] == CUSTOMER


def test_a_canceled_messaging_service_message_has_no_parties() -> None:
    """A Messaging Service cancel with no From or To has no sender or recipient."""
    form = {
        "MessageSid": MESSAGE,
        "MessageStatus": "canceled",
        "AccountSid": ACCOUNT,
        "MessagingServiceSid": SERVICE,
    }

    translation = translate("messaging", form, RECEIVED)
    body = only_event(translation)

    assert "sender" not in body
    assert "recipient" not in body
    assert CONVERSATION.match(body["conversationId"])
    assert body["communicationStatus"] == "CANCELED"


@pytest.mark.parametrize(
    ("status", "code"), [("undelivered", "30003"), ("failed", "30007")]
)
def test_a_failed_message_carries_its_error_code(status: str, code: str) -> None:
    """An undelivered or failed message carries Twilio's ErrorCode as errorCode."""
    form = messaging(status, ErrorCode=code)

    body = only_event(translate("messaging", form, RECEIVED))

    assert body["errorCode"] == code


def test_a_message_without_an_error_has_no_error_fields() -> None:
    """A delivered message with no ErrorCode has no errorCode or errorMessage."""
    body = only_event(translate("messaging", messaging("delivered"), RECEIVED))

    assert "errorCode" not in body
    assert "errorMessage" not in body


@pytest.mark.parametrize("done", ["2303072155", "notadate"])
def test_raw_dlr_done_date_does_not_change_the_event(done: str) -> None:
    """RawDlrDoneDate, well formed or not, leaves the event as it would be without."""
    plain = only_event(translate("messaging", messaging("delivered"), RECEIVED))
    form = messaging("delivered", RawDlrDoneDate=done)

    body = only_event(translate("messaging", form, RECEIVED))

    assert body == plain


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        ("messaging", messaging("exploded")),
        ("voice", voice("on-hold")),
    ],
)
def test_an_unknown_status_gives_no_event(kind: str, form: dict[str, str]) -> None:
    """A status the table does not know gives no event and says why."""
    translation = translate(kind, form, RECEIVED)

    assert translation.events == []
    assert translation.ignored == "unknown_status"


@pytest.mark.parametrize(
    ("kind", "form", "missing"),
    [
        ("messaging", messaging("sent"), "MessageSid"),
        ("messaging", messaging("sent"), "MessageStatus"),
        ("voice", voice("completed"), "CallSid"),
        ("voice", voice("completed"), "CallStatus"),
    ],
)
def test_a_callback_without_sid_or_status_is_refused(
    kind: str, form: dict[str, str], missing: str
) -> None:
    """A callback without its SID or its status is refused with a 400."""
    del form[missing]

    with pytest.raises(CallbackError) as caught:
        translate(kind, form, RECEIVED)

    assert caught.value.status == 400
    assert missing in str(caught.value)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("Fri, 04 Dec 2026 10:00:00 +0000", "2026-12-04T10:00:00.000Z"),
        ("Fri, 04 Dec 2026 12:00:00 +0200", "2026-12-04T10:00:00.000Z"),
        ("Thu, 03 Dec 2026 19:00:00 -0500", "2026-12-04T00:00:00.000Z"),
    ],
)
def test_a_call_timestamp_sets_the_event_time(stamp: str, expected: str) -> None:
    """A call's RFC 2822 Timestamp, in any offset, becomes the event time in UTC."""
    form = voice("ringing", Timestamp=stamp)

    body = only_event(translate("voice", form, RECEIVED))

    assert body["timestamp"] == expected


@pytest.mark.parametrize("stamp", ["notadate", "Fri, 99 Foo 2026", "   "])
def test_a_bad_call_timestamp_falls_back_to_the_received_time(stamp: str) -> None:
    """A call Timestamp that does not parse gives way to the time it was received."""
    form = voice("ringing", Timestamp=stamp)

    body = only_event(translate("voice", form, RECEIVED))

    assert body["timestamp"] == RECEIVED_TEXT


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (RECEIVED, RECEIVED_TEXT),
        (datetime(2026, 12, 4, 9, 30, 15, tzinfo=UTC), "2026-12-04T09:30:15.000Z"),
        (
            datetime(2026, 12, 4, 11, 30, 15, 999999, tzinfo=PLUS_TWO),
            "2026-12-04T09:30:15.999Z",
        ),
    ],
)
def test_the_received_time_is_utc_with_milliseconds(
    received: datetime, expected: str
) -> None:
    """A message's event time is when it was received, in UTC, to the millisecond."""
    body = only_event(translate("messaging", messaging("sent"), received))

    assert body["timestamp"] == expected


def test_the_same_sid_gives_the_same_communication_id() -> None:
    """Every status of one SID has the same communicationId."""
    ids = {
        only_event(translate("messaging", messaging(status), RECEIVED))[
            "communicationId"
        ]
        for status in ("queued", "sent", "delivered", "read")
    }

    assert len(ids) == 1
    assert COMMUNICATION.match(ids.pop())


def test_different_sids_give_different_communication_ids() -> None:
    """Two messages with different SIDs have different communicationIds."""
    first = only_event(translate("messaging", messaging("sent"), RECEIVED))
    form = messaging("sent", MessageSid=OTHER_MESSAGE)

    second = only_event(translate("messaging", form, RECEIVED))

    assert first["communicationId"] != second["communicationId"]


def test_the_same_pair_gives_the_same_conversation_id() -> None:
    """One business and customer pair share a conversationId across SIDs and ways."""
    forms = [
        messaging("sent"),
        messaging("delivered", MessageSid=OTHER_MESSAGE),
        messaging("received", MessageSid=OTHER_MESSAGE, From=CUSTOMER, To=BUSINESS),
    ]

    ids = {
        only_event(translate("messaging", form, RECEIVED))["conversationId"]
        for form in forms
    }

    assert len(ids) == 1
    assert CONVERSATION.match(ids.pop())


def test_a_different_customer_gives_a_different_conversation_id() -> None:
    """The same business with another customer is another conversation."""
    first = only_event(translate("messaging", messaging("sent"), RECEIVED))
    form = messaging("sent", To=OTHER_CUSTOMER)

    second = only_event(translate("messaging", form, RECEIVED))

    assert first["conversationId"] != second["conversationId"]


def test_a_given_conversation_id_is_used_as_is() -> None:
    """A conversationId the caller supplies is forwarded unchanged."""
    translation = translate(
        "messaging", messaging("sent"), RECEIVED, conversation_id=GIVEN_CONVERSATION
    )

    assert only_event(translation)["conversationId"] == GIVEN_CONVERSATION


@pytest.mark.parametrize(("media", "expected"), [("2", "MMS"), ("0", "SMS")])
def test_media_without_a_channel_makes_an_mms(media: str, expected: str) -> None:
    """A message with media and no channel is an MMS; without media it is an SMS."""
    form = messaging("delivered", NumMedia=media)

    body = only_event(translate("messaging", form, RECEIVED))

    assert body["communicationType"] == expected


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        *[("messaging", messaging(status)) for status in MESSAGING],
        *[("voice", voice(status, "inbound")) for status in VOICE],
        ("messaging", messaging("read", From="whatsapp:+15005550001")),
        ("messaging", messaging("failed", ErrorCode="30007", ErrorMessage="x" * 600)),
        ("messaging", messaging("sent", From="TESTSENDER")),
        ("messaging", messaging("sent", To="+1" + "5" * 318)),
        ("messaging", {"MessageSid": MESSAGE, "MessageStatus": "canceled"}),
        ("voice", voice("completed", Direction="trunking-originating")),
    ],
)
def test_every_event_passes_the_contract(kind: str, form: dict[str, str]) -> None:
    """Every event translate makes passes the contract, once fitted to it."""
    translation = translate(kind, form, RECEIVED)

    assert translation.events
    for event in translation.events:
        fitted, _ = contract.conform(event.body)
        assert contract.problems(fitted) == []


def test_an_address_longer_than_the_contract_allows_is_kept_for_the_check() -> None:
    """A To of 321 characters is kept whole, for the contract check to refuse."""
    form = messaging("sent", To="+1" + "5" * 319)

    body = translate("messaging", form, RECEIVED).events[0].body

    assert body["recipient"]["address"] == "+1" + "5" * 319
    assert contract.problems(body) == ["recipient.address: must be 1 to 320 characters"]


def test_a_sid_that_is_not_a_twilio_sid_is_refused() -> None:
    """A MessageSid that is not two letters and 32 hex digits is a 400, not a key."""
    for sid in ("SM1", "SM" + "g" * 32, "x" * 10_000, "SM" + "0" * 32 + ":*"):
        with pytest.raises(CallbackError, match="not a Twilio SID"):
            translate(
                "messaging", {"MessageSid": sid, "MessageStatus": "sent"}, RECEIVED
            )


@pytest.mark.parametrize(
    ("address", "channel", "bare"),
    [
        ("sip:alice@example.com", "SIP", "alice@example.com"),
        ("client:alice", "CLIENT", "alice"),
    ],
)
def test_a_sip_or_client_caller_sets_the_type(address: str, channel: str, bare: str):
    """A call from sip: or client: is that channel's, the prefix stripped."""
    form = voice("completed", "inbound", From=address)

    body = only_event(translate("voice", form, RECEIVED))

    assert body["communicationType"] == channel
    assert body["sender"]["address"] == bare


def test_a_call_event_is_ordered_by_its_sequence_number_then_time() -> None:
    """A call's event carries SequenceNumber and its time as its sort key."""
    form = voice(
        "ringing", SequenceNumber="7", Timestamp="Fri, 04 Dec 2026 10:00:00 +0000"
    )

    [event] = translate("voice", form, RECEIVED).events

    assert event.order == (7, "2026-12-04T10:00:00.000Z")


def test_events_are_put_in_sequence_order_per_call() -> None:
    """in_order sorts one call's events by SequenceNumber, keeping calls apart."""
    from app.lifecycle import in_order

    def event(sid: str, status: str, number: str) -> Event:
        form = voice(status, CallSid=sid, SequenceNumber=number)
        return translate("voice", form, RECEIVED).events[0]

    other = "CA00000000000000000000000000000009"
    events = [
        event(CALL, "completed", "3"),
        event(other, "ringing", "1"),
        event(CALL, "initiated", "0"),
        event(other, "initiated", "0"),
        event(CALL, "ringing", "1"),
    ]

    ordered = [(e.communication, e.status) for e in in_order(events)]

    assert ordered == [
        (CALL, "initiated"),
        (CALL, "ringing"),
        (CALL, "completed"),
        (other, "initiated"),
        (other, "ringing"),
    ]


def test_an_iso_timestamp_is_read_as_well() -> None:
    """An ISO 8601 Timestamp (as Event Streams writes) also sets the event time."""
    form = voice("ringing", Timestamp="2026-12-04T12:00:00.250+02:00")

    body = only_event(translate("voice", form, RECEIVED))

    assert body["timestamp"] == "2026-12-04T10:00:00.250Z"


def test_the_readme_shows_both_tables_of_the_code() -> None:
    """README.md carries the status table and the Event Streams table as coded."""
    from pathlib import Path

    from app.translate import event_types_table, markdown_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()

    assert markdown_table() in readme
    assert event_types_table() in readme


@pytest.mark.parametrize("number", ["²", "٣", "1²", "-1", "+3", " 4 ", "１"])
def test_a_sequence_number_that_is_not_ascii_digits_sorts_as_zero(number: str):
    """A SequenceNumber of other digits (², Arabic-Indic) is 0, never an error."""
    [event] = translate(
        "voice", voice("ringing", SequenceNumber=number), RECEIVED
    ).events

    assert event.order[0] == (4 if number == " 4 " else 0)


@pytest.mark.parametrize(
    ("direction", "expected"),
    [("trunking-originating", "INBOUND"), ("trunking-terminating", "OUTBOUND")],
)
def test_sip_trunk_calls_take_the_direction_twilio_documents(direction, expected):
    """Twilio's Call resource: trunking-originating calls come in from the PSTN to
    the business's own infrastructure; trunking-terminating calls go out to it."""
    caller, called = (
        (CUSTOMER, BUSINESS) if expected == "INBOUND" else (BUSINESS, CUSTOMER)
    )
    form = voice("completed", direction, From=caller, To=called)

    translation = translate("voice", form, RECEIVED)

    assert only_event(translation)["direction"] == expected
    assert translation.customer == CUSTOMER
