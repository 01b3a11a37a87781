"""Tests for app.eventstreams: CloudEvents in, the same events as the callbacks."""

import json
from datetime import UTC, datetime

import pytest

from app.errors import CallbackError
from app.eventstreams import parse, translate_event
from app.translate import translate

RECEIVED = datetime(2026, 12, 4, 9, 30, 15, 123000, tzinfo=UTC)
MESSAGE = "SM" + "0" * 31 + "1"
CALL = "CA" + "0" * 31 + "1"
BUSINESS, CUSTOMER = "+15005550001", "+15005550006"


def cloud(name: str, data: dict, event_id: str = "EZ1", **attrs: str) -> dict:
    """Return a CloudEvent of type ``name`` carrying ``data``."""
    return {"specversion": "1.0", "type": name, "id": event_id, "data": data} | attrs


def message_data(status: str = "DELIVERED") -> dict:
    """Return the data of a messaging status CloudEvent, as the docs show it."""
    return {
        "messageSid": MESSAGE,
        "timestamp": "2026-12-04T10:00:00.000Z",
        "accountSid": "AC" + "0" * 32,
        "from": BUSINESS,
        "to": CUSTOMER,
        "messageStatus": status,
        "errorCode": 30003,
    }


def test_a_message_event_gives_what_the_callback_gives():
    """A delivered CloudEvent and a delivered callback give the same event body."""
    name = "com.twilio.messaging.message.delivered"
    from_stream = translate_event(cloud(name, message_data()), RECEIVED)
    form = {
        "MessageSid": MESSAGE,
        "MessageStatus": "delivered",
        "From": BUSINESS,
        "To": CUSTOMER,
        "ErrorCode": "30003",
        "Timestamp": "2026-12-04T10:00:00.000Z",
    }
    from_callback = translate("messaging", form, RECEIVED)

    assert from_stream.events[0].body == from_callback.events[0].body
    assert from_stream.customer == CUSTOMER
    assert from_stream.events[0].dedupe == "EZ1"


@pytest.mark.parametrize(
    ("moment", "status", "lifecycle"),
    [
        ("initiated", "", "COMMUNICATION_INITIATED"),
        ("ringing", "", "COMMUNICATION_RINGING"),
        ("answered", "", "COMMUNICATION_ANSWERED"),
        ("completed", "", "COMMUNICATION_COMPLETED"),
        ("completed", "busy", "COMMUNICATION_BUSY"),
        ("completed", "no-answer", "COMMUNICATION_NO_ANSWER"),
        ("completed", "canceled", "COMMUNICATION_CANCELED"),
        ("completed", "failed", "COMMUNICATION_FAILED"),
    ],
)
def test_a_call_event_reads_its_status_from_the_data_first(moment, status, lifecycle):
    """The data's CallStatus wins (busy is not completed); else the type names it."""
    parameters = {"CallSid": CALL, "From": BUSINESS, "To": CUSTOMER}
    parameters |= {"Direction": "outbound-api"}
    if status:
        parameters["CallStatus"] = status
    name = f"com.twilio.voice.status-callback.call.{moment}"
    data = {"sid": CALL, "request": {"parameters": parameters}}

    [event] = translate_event(cloud(name, data), RECEIVED).events

    assert event.body["lifecycle"] == lifecycle
    assert event.body["direction"] == "OUTBOUND"


def test_snake_case_call_parameters_are_read():
    """Parameters written call_status, sequence_number (Call Events) are read too."""
    parameters = {
        "call_sid": CALL,
        "call_status": "in-progress",
        "direction": "inbound",
        "from": CUSTOMER,
        "to": BUSINESS,
        "sequence_number": "2",
        "timestamp": "Fri, 04 Dec 2026 10:00:05 +0000",
    }
    name = "com.twilio.voice.status-callback.call.answered"
    data = {"request": {"parameters": parameters}}

    translation = translate_event(cloud(name, data), RECEIVED)
    [event] = translation.events

    assert event.body["lifecycle"] == "COMMUNICATION_ANSWERED"
    assert event.body["timestamp"] == "2026-12-04T10:00:05.000Z"
    assert event.order == (2, "2026-12-04T10:00:05.000Z")
    assert translation.customer == CUSTOMER


def test_the_cloudevent_time_is_used_when_the_data_has_none():
    """Without a time in the data, the CloudEvent's ``time`` is the event's."""
    data = message_data()
    del data["timestamp"]
    name = "com.twilio.messaging.message.sent"

    [event] = translate_event(
        cloud(name, data, time="2026-12-04T11:00:00.250Z"), RECEIVED
    ).events

    assert event.body["timestamp"] == "2026-12-04T11:00:00.250Z"
    assert event.body["lifecycle"] == "COMMUNICATION_SENT"


def test_an_unknown_type_is_counted_not_forwarded():
    """A type the bridge does not translate gives no event and names itself."""
    name = "com.twilio.error-logs.error.logged"

    translation = translate_event(cloud(name, {}), RECEIVED)

    assert translation.events == []
    assert translation.unknown == ("event-type", name)


def test_a_single_event_and_a_batch_both_parse():
    """One CloudEvent object or an array of them: both are read as a list."""
    one = cloud("x.y", {})

    assert parse(json.dumps(one).encode()) == [one]
    assert parse(json.dumps([one, one]).encode()) == [one, one]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"type": "x"}',
        b'{"id": "1"}',
        b'{"id": "", "type": "x"}',
        b'{"id": "a b", "type": "x"}',
        json.dumps({"id": "x" * 129, "type": "x"}).encode(),
    ],
)
def test_a_body_that_is_not_cloudevents_is_a_400(body):
    """Not JSON, not objects, or without a usable id and type: 400."""
    with pytest.raises(CallbackError) as raised:
        parse(body)

    assert raised.value.status == 400


def test_json_nested_past_the_parsers_depth_is_refused_as_bad_json():
    """An array nested 30,000 deep (under the body limit) is a 400, not a 500."""
    with pytest.raises(CallbackError) as refused:
        parse(b"[" * 30000 + b"]" * 30000)

    assert refused.value.status == 400
    assert refused.value.reason == "bad_json"


@pytest.mark.parametrize("field", ["to", "errorMessage"])
def test_a_lone_surrogate_in_the_data_is_refused(field: str):
    """A \\ud800 escape (valid JSON, not Unicode) in data: 400 bad_unicode."""
    data = message_data() | {field: "+15005550006\ud800"}

    with pytest.raises(CallbackError) as refused:
        translate_event(cloud("com.twilio.messaging.message.failed", data), RECEIVED)

    assert refused.value.status == 400
    assert refused.value.reason == "bad_unicode"
    assert field in str(refused.value)


def test_a_surrogate_pair_is_an_ordinary_character():
    """An emoji written as a surrogate pair escape is kept, not refused."""
    body = json.dumps(cloud("com.twilio.messaging.message.failed", message_data()))
    body = body.replace('"errorCode": 30003', '"errorMessage": "\\ud83d\\ude00"')

    [event] = parse(body.encode())
    [lifecycle] = translate_event(event, RECEIVED).events

    assert lifecycle.body["errorMessage"] == "\U0001f600"
