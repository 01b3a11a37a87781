"""Property tests: any callback of any kind gives only valid events, never a 5xx.

Hypothesis generates callbacks of each kind (known and unknown statuses, every
shape of address, long error texts, odd times, out-of-order call events, junk),
posts them signed to the bridge on the real test Redis, and checks every event
stored against both app.contract and the stand-in's own JSON Schema.
BRIDGE_PROPERTY_EXAMPLES sets how many examples each test tries (150 in CI).
"""

import os
from typing import Any

from helpers_callbacks import post_form, post_json, schema_problems, stored
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from app import contract
from app.translate import EVENT_TYPES, STATUSES

PROPERTIES = settings(
    max_examples=int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ACCOUNT = "AC" + "0" * 32
HEX = "0123456789abcdef"


def sids(prefix: str) -> st.SearchStrategy[str]:
    """Twilio SIDs with this prefix, mostly valid, sometimes not."""
    valid = st.text(HEX, min_size=32, max_size=32).map(lambda h: prefix + h)
    return st.one_of(*[valid] * 9, st.text(max_size=40))


phones = st.integers(0, 9999).map(lambda n: f"+1500555{n:04d}")
addresses = st.one_of(
    phones,
    phones.map(lambda p: f"{p[:2]} ({p[2:5]}) {p[5:8]}-{p[8:]}"),
    st.tuples(
        st.sampled_from(["whatsapp", "WhatsApp", "rcs", "messenger", "sip", "client"]),
        phones,
    ).map(lambda t: f"{t[0]}:{t[1]}"),
    st.text("0123456789", min_size=5, max_size=6),  # short codes
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=11),
    st.just(""),
    st.text(max_size=40),
    st.text("+0123456789", min_size=300, max_size=340),  # around the 320 limit
)
times = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S +0000")),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.text(max_size=30),
)
errors = st.fixed_dictionaries(
    {},
    optional={
        "ErrorCode": st.one_of(st.text("0123456789", max_size=6), st.text(max_size=14)),
        "ErrorMessage": st.text(max_size=700),
    },
)


def statuses(kind: str) -> st.SearchStrategy[str]:
    """A status of the table for ``kind`` (mostly), or any text."""
    known = st.sampled_from(sorted(STATUSES[kind]))
    return st.one_of(known, known, known, st.text(max_size=20))


@st.composite
def messaging_forms(draw: Any) -> dict[str, str]:
    """A Messaging status callback or inbound message webhook."""
    form = {
        "AccountSid": ACCOUNT,
        "MessageSid": draw(sids("SM")),
        "MessageStatus": draw(statuses("messaging")),
        "From": draw(addresses),
        "To": draw(addresses),
    }
    form |= draw(errors)
    form |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "ChannelPrefix": st.sampled_from(["whatsapp", "rcs", "sms", ""]),
                "NumMedia": st.sampled_from(["0", "1", "x"]),
                "MessagingServiceSid": sids("MG"),
                "RawDlrDoneDate": st.text(max_size=12),
            },
        )
    )
    return form


@st.composite
def voice_forms(draw: Any) -> dict[str, str]:
    """A Voice status callback, parent or child leg."""
    form = {
        "AccountSid": ACCOUNT,
        "CallSid": draw(sids("CA")),
        "CallStatus": draw(statuses("voice")),
        "From": draw(addresses),
        "To": draw(addresses),
        "Direction": draw(
            st.sampled_from(["inbound", "outbound-api", "outbound-dial", "x"])
        ),
        "Timestamp": draw(times),
        "SequenceNumber": draw(
            st.one_of(st.integers(0, 99).map(str), st.text(max_size=12))
        ),
    }
    form |= draw(errors)
    if draw(st.booleans()):
        form["ParentCallSid"] = draw(sids("CA"))
    return form


@st.composite
def conversations_forms(draw: Any) -> dict[str, str]:
    """A Conversations webhook of any event type."""
    form = {
        "AccountSid": ACCOUNT,
        "EventType": draw(
            st.sampled_from(
                ["onDeliveryUpdated", "onMessageAdded", "onConversationAdded"]
            )
            | st.text(max_size=20)
        ),
        "ConversationSid": draw(sids("CH")),
        "MessageSid": draw(sids("IM")),
        "ParticipantSid": draw(sids("MB")),
        "Status": draw(
            st.sampled_from(["sent", "delivered", "undelivered", "failed", "read"])
            | statuses("conversations")
        ),
        "Author": draw(addresses),
        "Source": draw(st.sampled_from(["SDK", "API", "SMS", "WHATSAPP", ""])),
        "DateCreated": draw(times),
        "DateUpdated": draw(times),
    }
    return form | draw(errors)


@st.composite
def cloud_events(draw: Any) -> dict[str, Any]:
    """One CloudEvent of a known or unknown type, its data from a callback form."""
    name = draw(st.sampled_from(sorted(EVENT_TYPES)) | st.text(min_size=1, max_size=40))
    kind = EVENT_TYPES.get(name, ("messaging", ""))[0]
    form = draw(
        {"messaging": messaging_forms(), "voice": voice_forms()}.get(
            kind, conversations_forms()
        )
    )
    data: dict[str, Any] = form
    if kind == "voice" and draw(st.booleans()):
        data = {"sid": form["CallSid"], "request": {"parameters": form}}
    return {
        "specversion": "1.0",
        "type": name,
        "id": draw(st.text(HEX, min_size=8, max_size=34)),
        "time": draw(times),
        "data": data,
    }


def check_stored(redis: Any, response: Any) -> None:
    """No 5xx; a 2xx stored only valid events; a 4xx stored nothing."""
    assert response.status_code < 500, response.get_data(as_text=True)
    events = [e for buffer in stored(redis).values() for e in buffer]
    tally(f"answer {response.status_code}, {'some' if events else 'no'} events")
    if response.status_code >= 400:
        assert events == []
    for event in events:
        assert contract.problems(event) == [], event
    if events:
        assert schema_problems(events) == []


@PROPERTIES
@given(form=messaging_forms())
def test_any_messaging_callback_gives_only_valid_events(client, redis, form):
    """Any Messaging callback is answered below 500 and stores only valid events."""
    redis.flushall()

    response = post_form(client, "/twilio/messaging", form)

    check_stored(redis, response)


@PROPERTIES
@given(form=voice_forms())
def test_any_voice_callback_gives_only_valid_events(client, redis, form):
    """Any Voice callback is answered below 500 and stores only valid events."""
    redis.flushall()

    response = post_form(client, "/twilio/voice", form)

    check_stored(redis, response)


@PROPERTIES
@given(form=conversations_forms())
def test_any_conversations_webhook_gives_only_valid_events(client, redis, form):
    """Any Conversations webhook is answered below 500 and stores only valid events."""
    redis.flushall()

    response = post_form(client, "/twilio/conversations", form)

    check_stored(redis, response)


@PROPERTIES
@given(events=st.lists(cloud_events(), min_size=1, max_size=6), single=st.booleans())
def test_any_event_streams_batch_gives_only_valid_events(client, redis, events, single):
    """Any CloudEvent, alone or in a batch, is answered below 500; events are valid."""
    redis.flushall()
    payload = events[0] if single else events

    response = post_json(client, "/twilio/events", payload)

    check_stored(redis, response)


@PROPERTIES
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_at_the_events_endpoint_is_never_a_5xx(client, redis, body):
    """Bytes that are not CloudEvents get a 4xx, never a 5xx, and store nothing."""
    redis.flushall()

    response = post_json(client, "/twilio/events", None, body=body)

    check_stored(redis, response)


# Text as JSON may carry it: lone surrogates (JSON can escape them), digits of
# other scripts, and anything else.
ODD = st.sampled_from(["\ud800", "\udfff", "\u00b2", "\u0663", "\uff11", "+", "1"])
json_text = st.text(ODD, min_size=1, max_size=6) | st.text(max_size=12)
json_values = st.one_of(
    *[json_text] * 6,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | json_text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
        max_leaves=6,
    ),
)


@st.composite
def odd_cloud_events(draw: Any) -> dict[str, Any]:
    """A CloudEvent whose data has some fields set to any JSON value."""
    event = draw(cloud_events())
    if event["type"] not in EVENT_TYPES:  # its data is a messaging callback's
        event["type"] = "com.twilio.messaging.message.failed"
    data = event["data"]
    target = data["request"]["parameters"] if "request" in data else data
    # Leave the SIDs and the status be, so that the event is mostly stored.
    names = sorted(n for n in target if not n.endswith(("Sid", "Status")))
    for name in draw(st.lists(st.sampled_from(names), max_size=3)) if names else []:
        target[name] = draw(json_values)
    if draw(st.booleans()):
        target[draw(st.text(max_size=12))] = draw(json_values)
    return event


@PROPERTIES
@given(event=odd_cloud_events())
def test_any_json_value_in_cloudevent_data_is_never_a_5xx(client, redis, event):
    """Fields given any JSON value (a list, a number, a lone surrogate): < 500."""
    redis.flushall()

    response = post_json(client, "/twilio/events", [event])

    check_stored(redis, response)
