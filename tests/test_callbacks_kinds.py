"""The web side for every kind: Conversations, Event Streams, and shared checks."""

import hashlib
import json
import uuid

import pytest
from helpers_callbacks import counters, post_form, post_json, stored

from app import create_app, ids
from conftest import ACCOUNT_SID, CUSTOMER, STORE, message, sign

BUSINESS = "+15005550001"
OTHER = "+15005550009"
CALL = "CA" + "0" * 31 + "1"
CHILD = "CA" + "0" * 31 + "2"
PROFILE = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1c"


def receipt(status: str) -> dict[str, str]:
    """Return an onDeliveryUpdated webhook."""
    return {
        "AccountSid": ACCOUNT_SID,
        "EventType": "onDeliveryUpdated",
        "ConversationSid": "CH" + "0" * 32,
        "MessageSid": "IM" + "0" * 32,
        "ParticipantSid": "MB" + "0" * 32,
        "Status": status,
    }


def delivered(sid: str, to: str, event_id: str) -> dict:
    """Return a delivered CloudEvent for message ``sid`` to ``to``."""
    return {
        "specversion": "1.0",
        "type": "com.twilio.messaging.message.delivered",
        "id": event_id,
        "data": {
            "accountSid": ACCOUNT_SID,
            "messageSid": sid,
            "from": BUSINESS,
            "to": to,
        },
    }


def call(sid: str, status: str, direction: str = "outbound-api", **extra: str):
    """Return a call status callback form."""
    form = {"AccountSid": ACCOUNT_SID, "CallSid": sid, "CallStatus": status}
    form["Direction"] = direction
    return form | {"From": BUSINESS, "To": CUSTOMER} | extra


def test_a_delivery_receipt_without_a_profile_is_parked(client, redis):
    """A receipt names no customer, so without ?profileId= its event is parked."""
    response = post_form(client, "/twilio/conversations", receipt("delivered"))

    assert response.status_code == 204
    assert "parked" in response.headers["X-Memory-Bridge"]
    [event] = stored(redis)[""]
    assert event["lifecycle"] == "COMMUNICATION_DELIVERED"


def test_a_delivery_receipt_with_a_profile_is_routed(client, redis):
    """With ?profileId= on a conversation's webhook URL, receipts reach the profile."""
    path = f"/twilio/conversations?profileId={PROFILE}"

    assert post_form(client, path, receipt("read")).status_code == 204

    [event] = stored(redis)[f"id:{PROFILE}"]
    assert event["communicationStatus"] == "READ"


def test_json_at_the_conversations_endpoint_is_a_415(client):
    """Conversations webhooks are forms; JSON there is refused with 415."""
    response = post_json(client, "/twilio/conversations", receipt("sent"))

    assert response.status_code == 415


def test_a_form_at_the_events_endpoint_is_a_415(client):
    """Event Streams posts JSON; a form there is refused with 415."""
    response = post_form(client, "/twilio/events", receipt("sent"))

    assert response.status_code == 415


def test_an_event_streams_post_without_body_sha256_is_a_403(client, redis):
    """A JSON post whose signed URL lacks bodySHA256 is refused: 403, nothing kept."""
    body = json.dumps(delivered("SM" + "1" * 32, CUSTOMER, "EZ1")).encode()
    response = client.post(
        "/twilio/events",
        data=body,
        content_type="application/json",
        headers={
            "X-Twilio-Signature": sign("https://bridge.example.test/twilio/events", {})
        },
    )

    assert response.status_code == 403
    assert stored(redis) == {}


def test_an_event_streams_body_changed_in_flight_is_a_403(client, redis):
    """The body no longer matches the signed bodySHA256: 403, nothing kept."""
    event = delivered("SM" + "1" * 32, CUSTOMER, "EZ1")
    body = json.dumps(event).encode()
    changed = body.replace(CUSTOMER.encode(), OTHER.encode())
    path = f"/twilio/events?bodySHA256={hashlib.sha256(body).hexdigest()}"
    response = client.post(
        path,
        data=changed,
        content_type="application/json",
        headers={"X-Twilio-Signature": sign("https://bridge.example.test" + path, {})},
    )

    assert response.status_code == 403
    assert stored(redis) == {}


def test_a_batch_for_two_customers_fills_two_buffers(client, redis):
    """One Event Streams batch with two customers' events reaches both profiles."""
    batch = [
        delivered("SM" + "1" * 32, CUSTOMER, "EZ1"),
        delivered("SM" + "2" * 32, OTHER, "EZ2"),
    ]

    response = post_json(client, "/twilio/events", batch)

    assert response.status_code == 204
    buffers = stored(redis)
    assert sorted(buffers) == [f"phone:{CUSTOMER}", f"phone:{OTHER}"]


def test_a_redelivered_cloudevent_is_a_duplicate(client, redis):
    """The same CloudEvent id again is counted as a duplicate and stored once."""
    event = delivered("SM" + "1" * 32, CUSTOMER, "EZ1")
    post_json(client, "/twilio/events", [event])

    response = post_json(client, "/twilio/events", [event])

    assert "admitted=0 duplicate=1" in response.headers["X-Memory-Bridge"]
    assert len(stored(redis)[f"phone:{CUSTOMER}"]) == 1


def test_an_event_that_cannot_be_valid_refuses_the_whole_batch(client, redis, caplog):
    """An errorCode over 10 characters: 400 naming the field, nothing stored."""
    bad = delivered("SM" + "2" * 32, CUSTOMER, "EZ2")
    bad["data"]["errorCode"] = "12345678901"
    batch = [delivered("SM" + "1" * 32, CUSTOMER, "EZ1"), bad]

    response = post_json(client, "/twilio/events", batch)

    assert response.status_code == 400
    assert "errorCode" in response.get_json()["message"]
    assert stored(redis) == {}
    [line] = [r for r in caplog.records if r.getMessage() == "callback.refused"]
    assert "errorCode" in line.fields["detail"]


def test_a_long_error_message_is_cut_and_counted(client, redis):
    """An ErrorMessage over 512 characters is cut to 512 and counted as shortened."""
    form = message("SM" + "3" * 32, "failed", ErrorCode="30008", ErrorMessage="x" * 600)

    assert post_form(client, "/twilio/messaging", form).status_code == 204

    [event] = stored(redis)[f"phone:{CUSTOMER}"]
    assert event["errorMessage"] == "x" * 512
    assert counters(redis)["shortened:errorMessage"] == 1


def test_an_unknown_status_is_counted_each_time_and_logged_once(client, redis, caplog):
    """Unknown statuses answer 204, count per value, and log once per value."""
    value = "weird-" + uuid.uuid4().hex[:8]
    for sid in ("SM" + "4" * 32, "SM" + "5" * 32):
        response = post_form(client, "/twilio/messaging", message(sid, value))
        assert response.status_code == 204
        assert response.headers["X-Memory-Bridge"] == "unknown_status"

    assert counters(redis)[f"unknown:messaging:{value}"] == 2
    lines = [r for r in caplog.records if r.getMessage() == "callback.unknown"]
    assert [r.fields["value"] for r in lines] == [value]
    assert stored(redis) == {}


def test_an_unknown_conversations_event_type_is_counted(client, redis):
    """onConversationStateUpdated is answered 204 and counted, with no event."""
    form = {"AccountSid": ACCOUNT_SID, "EventType": "onConversationStateUpdated"}
    form["ConversationSid"] = "CH" + "0" * 32

    response = post_form(client, "/twilio/conversations", form)

    assert response.status_code == 204
    assert (
        counters(redis)["unknown:conversations-event:onConversationStateUpdated"] == 1
    )


def test_a_child_leg_never_overwrites_its_parent(client, redis):
    """A child leg's statuses are its own call: the parent's stay as they were."""
    post_form(client, "/twilio/voice", call(CALL, "completed"))

    child = call(CHILD, "ringing", "outbound-dial", ParentCallSid=CALL)
    response = post_form(client, "/twilio/voice", child)

    assert "admitted=1" in response.headers["X-Memory-Bridge"]
    assert redis.hget(f"mb:comm:{CALL}", "s") == b"completed"
    events = stored(redis)[f"phone:{CUSTOMER}"]
    assert [e["lifecycle"] for e in events] == [
        "COMMUNICATION_COMPLETED",
        "COMMUNICATION_RINGING",
    ]
    assert events[1]["communicationId"] == ids.communication_id(CHILD)
    assert events[0]["communicationId"] == ids.communication_id(CALL)


def test_busy_is_a_terminal_outcome_after_which_completed_is_stale(client, redis):
    """busy is stored as BUSY; a later completed for the same call is stale."""
    post_form(client, "/twilio/voice", call(CALL, "busy"))

    response = post_form(client, "/twilio/voice", call(CALL, "completed"))

    assert "stale=1" in response.headers["X-Memory-Bridge"]
    [event] = stored(redis)[f"phone:{CUSTOMER}"]
    assert event["communicationStatus"] == "BUSY"


def test_written_phone_numbers_are_stored_and_routed_in_e164(client, redis):
    """From and To written with spaces and brackets become E.164 in event and route."""
    form = message("SM" + "6" * 32, "sent", To="+1 (500) 555-0006")
    form["From"] = "+1 500 555 0001"

    assert post_form(client, "/twilio/messaging", form).status_code == 204

    [event] = stored(redis)[f"phone:{CUSTOMER}"]
    assert event["recipient"]["address"] == CUSTOMER
    assert event["sender"]["address"] == BUSINESS
    assert redis.exists(f"mb:buf:{STORE}/phone:{CUSTOMER}")


AC111 = "AC" + "1" * 32


def post_json_as(client, payload, token: str):
    """Post CloudEvents signed with ``token``, as that account's sink would."""
    body = json.dumps(payload).encode()
    path = f"/twilio/events?bodySHA256={hashlib.sha256(body).hexdigest()}"
    url = "https://bridge.example.test" + path
    return client.post(
        path,
        data=body,
        content_type="application/json",
        headers={"X-Twilio-Signature": sign(url, {}, token=token)},
    )


def cloudevent_of(account: str, sid: str, event_id: str) -> dict:
    """Return a delivered CloudEvent of ``account``, named only in its source."""
    event = delivered(sid, CUSTOMER, event_id)
    del event["data"]["accountSid"]
    event["source"] = f"/2010-04-01/Accounts/{account}/Messages/{sid}.json"
    return event


def test_cloudevents_are_checked_with_their_accounts_token(settings, redis):
    """A sink of AC111… signs with AC111…'s token: accepted only when it is listed."""
    listed = create_app(settings | {"twilio_auth_tokens": f"{AC111}:token-111"})
    unlisted = create_app(settings)
    payload = [cloudevent_of(AC111, "SM" + "1" * 32, "EZ" + "1" * 32)]

    accepted = post_json_as(listed.test_client(), payload, "token-111")
    refused = post_json_as(unlisted.test_client(), payload, "token-111")
    wrong_token = post_json_as(listed.test_client(), payload, "token-222")

    assert accepted.status_code == 204
    assert (refused.status_code, refused.json["error"]) == (403, "account_unknown")
    assert (wrong_token.status_code, wrong_token.json["error"]) == (
        403,
        "signature_invalid",
    )


def test_cloudevents_of_two_accounts_get_no_accounts_token(settings, redis):
    """A body naming two accounts is checked with no one account's token."""
    tokens = f"{AC111}:token-111,{ACCOUNT_SID}:token-000"
    app = create_app(settings | {"twilio_auth_tokens": tokens})
    payload = [
        cloudevent_of(AC111, "SM" + "1" * 32, "EZ" + "1" * 32),
        cloudevent_of(ACCOUNT_SID, "SM" + "2" * 32, "EZ" + "2" * 32),
    ]

    response = post_json_as(app.test_client(), payload, "token-111")

    assert (response.status_code, response.json["error"]) == (403, "account_unknown")


@pytest.fixture
def two_accounts(settings, redis):
    """A bridge with tokens for AC111… and ACCOUNT_SID (made before caplog)."""
    tokens = f"{AC111}:token-111,{ACCOUNT_SID}:token-000"
    return create_app(settings | {"twilio_auth_tokens": tokens})


def test_cloudevents_of_two_accounts_are_refused_naming_both(
    two_accounts, redis, caplog
):
    """The 403 for a mixed batch names its accounts, not a missing AccountSid."""
    payload = [
        cloudevent_of(AC111, "SM" + "1" * 32, "EZ" + "1" * 32),
        cloudevent_of(ACCOUNT_SID, "SM" + "2" * 32, "EZ" + "2" * 32),
    ]

    response = post_json_as(two_accounts.test_client(), payload, "token-111")

    assert response.status_code == 403
    assert AC111 in response.json["message"]
    assert ACCOUNT_SID in response.json["message"]
    assert "no AccountSid" not in response.json["message"]
    refused = [r for r in caplog.records if r.getMessage() == "callback.refused"]
    assert len(refused) == 1
    assert stored(redis) == {}


@pytest.mark.parametrize(("field", "value"), [("id", 5), ("type", ["x"]), ("id", "")])
def test_a_cloudevent_id_or_type_that_is_no_string_is_named_so(
    client, redis, field, value
):
    """An id of 5 is there, just not a string: the 400 says what it must be."""
    event = delivered("SM" + "1" * 32, CUSTOMER, "EZ1") | {field: value}

    response = post_json(client, "/twilio/events", [event])

    assert response.status_code == 400
    assert f"Item 0's {field} must be a non-empty string" in response.json["message"]
    assert stored(redis) == {}


def test_a_deeply_nested_body_is_a_400_with_one_log_line(client, redis, caplog):
    """JSON nested deeper than the parser goes: 400 bad_json, one line, no 500."""
    body = b'[{"type": "x", "id": "y", "data": ' + b"[" * 30000 + b"]" * 30000 + b"}]"

    response = post_json(client, "/twilio/events", None, body=body)

    assert response.status_code == 400
    assert stored(redis) == {}
    refused = [r for r in caplog.records if r.getMessage() == "callback.refused"]
    assert [r.fields["reason"] for r in refused] == ["bad_json"]


def test_a_sequence_number_in_other_digits_is_stored(client, redis):
    """SequenceNumber '²' (a digit to str.isdigit, not to int): 204, not 500."""
    response = post_form(
        client, "/twilio/voice", call(CALL, "ringing", SequenceNumber="²")
    )

    assert response.status_code == 204
    assert len(stored(redis)[f"phone:{CUSTOMER}"]) == 1


def test_a_lone_surrogate_in_a_cloudevent_is_a_400_not_a_500(client, redis):
    """JSON may escape a lone surrogate; it cannot be stored: 400, nothing kept."""
    event = delivered("SM" + "1" * 32, CUSTOMER, "EZ1")
    body = json.dumps([event]).replace(CUSTOMER, CUSTOMER + "\\ud800").encode()

    response = post_json(client, "/twilio/events", None, body=body)

    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_unicode"
    assert stored(redis) == {}


def test_an_unknown_status_with_a_newline_stays_on_one_log_line(client, redis, caplog):
    """The summary line shows an unknown status as the counter does: no newline."""
    form = message("SM" + "6" * 32, "sent\n17:00:00 info forged.line")

    assert post_form(client, "/twilio/messaging", form).status_code == 204

    [line] = [r for r in caplog.records if r.getMessage() == "callback.accepted"]
    assert line.fields["status"] == "sent_17:00:00_info_forged.line"


def test_a_non_ascii_body_sha256_is_a_403_not_a_500(client, redis):
    """An unsigned post with bodySHA256=%FF: refused 403 before anything is read."""
    response = client.post(
        "/twilio/events?bodySHA256=%FF%FE",
        data=b"[]",
        content_type="application/json",
        headers={"X-Twilio-Signature": "x"},
    )

    assert response.status_code == 403
    assert stored(redis) == {}
