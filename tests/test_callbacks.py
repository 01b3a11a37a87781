"""The web side: each callback is verified, translated, routed and admitted."""

import json
import threading
import time

from conftest import ACCOUNT_SID, CUSTOMER, STORE, message, post, sign

MEMBER = f"{STORE}/phone:{CUSTOMER}"


def buffered(redis, member=MEMBER):
    """Return the events waiting in a profile's buffer."""
    return [json.loads(e) for e in redis.lrange(f"mb:buf:{member}", 0, -1)]


def counters(redis):
    """Sum the per-minute counters."""
    total = {}
    for key in redis.keys("mb:stats:*"):
        for name, value in redis.hgetall(key).items():
            total[name.decode()] = total.get(name.decode(), 0) + int(value)
    return total


def test_unknown_extra_parameter_and_charset_are_accepted(client, redis):
    """A callback with FooBar=1 and a charset in its Content-Type is stored."""
    form = message("SM" + "1" * 32, "delivered", FooBar="1")
    response = post(client, "/twilio/messaging", form)
    assert response.status_code == 204
    response = client.post(
        "/twilio/messaging",
        data="&".join(
            f"{k}={v}" for k, v in message("SM" + "2" * 32, "sent").items()
        ).replace("+", "%2B"),
        content_type="application/x-www-form-urlencoded; charset=utf-8",
        headers={
            "X-Twilio-Signature": sign(
                "https://bridge.example.test/twilio/messaging",
                message("SM" + "2" * 32, "sent"),
            )
        },
    )
    assert response.status_code == 204
    statuses = [e["communicationStatus"] for e in buffered(redis)]
    assert statuses == ["DELIVERED", "SENT"]


def test_stored_event_is_the_lifecycle_event(client, redis):
    """A delivered SMS becomes one COMMUNICATION_DELIVERED event in the buffer."""
    post(client, "/twilio/messaging", message("SM" + "a" * 32, "delivered"))
    [event] = buffered(redis)
    assert event["lifecycle"] == "COMMUNICATION_DELIVERED"
    assert event["communicationType"] == "SMS"
    assert event["direction"] == "OUTBOUND"
    assert event["recipient"]["address"] == CUSTOMER
    assert redis.zscore("mb:due", MEMBER) is not None


def test_whatsapp_read_strips_the_channel_prefix(client, redis):
    """WhatsApp read gives a WHATSAPP READ event for the bare customer number."""
    form = message(
        "SM" + "3" * 32,
        "read",
        ChannelPrefix="whatsapp",
        To="whatsapp:+15005550006",
        From="whatsapp:+15005550001",
    )
    assert post(client, "/twilio/messaging", form).status_code == 204
    [event] = buffered(redis)
    assert (event["communicationType"], event["communicationStatus"]) == (
        "WHATSAPP",
        "READ",
    )
    assert event["sender"]["address"] == "+15005550001"
    assert event["recipient"]["address"] == "+15005550006"


def test_alphanumeric_and_short_code_senders_are_accepted(client, redis):
    """From=TESTSENDER and From=55555 are stored, never a 5xx."""
    for n, sender in enumerate(("TESTSENDER", "55555")):
        form = message(f"SM{n:032d}", "sent", From=sender)
        assert post(client, "/twilio/messaging", form).status_code == 204
    senders = [e["sender"]["address"] for e in buffered(redis)]
    assert senders == ["TESTSENDER", "55555"]


def test_messaging_service_cancel_without_addresses_is_parked(client, redis):
    """A canceled message with no From or To is accepted and parked, not lost."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": "SM" + "4" * 32,
        "MessageStatus": "canceled",
        "MessagingServiceSid": "MG" + "0" * 32,
    }
    assert post(client, "/twilio/messaging", form).status_code == 204
    [parked] = [json.loads(e) for e in redis.lrange("mb:unroutable", 0, -1)]
    assert parked["communicationStatus"] == "CANCELED"
    assert redis.ttl("mb:unroutable") > 0
    assert redis.zcard("mb:due") == 0


def test_messaging_service_cancel_with_profile_id_is_routed(client, redis):
    """With ?profileId= a canceled message with no addresses goes to that profile."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": "SM" + "5" * 32,
        "MessageStatus": "canceled",
        "MessagingServiceSid": "MG" + "0" * 32,
    }
    profile = "mem_profile_" + "1" * 26
    path = f"/twilio/messaging?profileId={profile}"
    assert post(client, path, form).status_code == 204
    [event] = buffered(redis, f"{STORE}/id:{profile}")
    assert event["lifecycle"] == "COMMUNICATION_CANCELED"


def test_raw_dlr_done_date_in_any_shape_is_accepted(client, redis):
    """RawDlrDoneDate=2303072155 and RawDlrDoneDate=notadate are both stored."""
    for n, raw in enumerate(("2303072155", "notadate")):
        form = message(f"SM{n + 50:032d}", "delivered", RawDlrDoneDate=raw)
        assert post(client, "/twilio/messaging", form).status_code == 204
    assert len(buffered(redis)) == 2


def test_error_codes_are_carried(client, redis):
    """undelivered with 30003 and failed with 30007 keep their error codes."""
    post(
        client,
        "/twilio/messaging",
        message("SM" + "6" * 32, "undelivered", ErrorCode="30003"),
    )
    post(
        client,
        "/twilio/messaging",
        message("SM" + "7" * 32, "failed", ErrorCode="30007"),
    )
    codes = [(e["communicationStatus"], e["errorCode"]) for e in buffered(redis)]
    assert codes == [("UNDELIVERED", "30003"), ("FAILED", "30007")]


def test_late_statuses_are_counted_and_dropped(client, redis):
    """delivered, then sent, then sending: one DELIVERED event, two stale."""
    sid = "SM" + "8" * 32
    for status in ("delivered", "sent", "sending"):
        assert (
            post(client, "/twilio/messaging", message(sid, status)).status_code == 204
        )
    assert [e["communicationStatus"] for e in buffered(redis)] == ["DELIVERED"]
    assert counters(redis)["events_stale"] == 2
    late = post(client, "/twilio/messaging", message(sid, "queued"))
    assert late.headers["X-Memory-Bridge"] == "admitted=0 duplicate=0 stale=1"


def test_each_new_status_is_an_event(client, redis):
    """sent then delivered for one message gives two events, in that order."""
    sid = "SM" + "9" * 32
    post(client, "/twilio/messaging", message(sid, "sent"))
    post(client, "/twilio/messaging", message(sid, "delivered"))
    assert [e["communicationStatus"] for e in buffered(redis)] == ["SENT", "DELIVERED"]


def test_the_same_status_twice_is_one_event(client, redis):
    """The same delivered callback twice gives one event and one duplicate."""
    form = message("SM" + "b" * 32, "delivered")
    post(client, "/twilio/messaging", form)
    assert post(client, "/twilio/messaging", form).status_code == 204
    assert len(buffered(redis)) == 1
    assert counters(redis)["events_duplicate"] == 1


def test_the_same_request_at_the_same_moment_is_one_event(settings, redis):
    """Eight copies of one callback racing on eight threads give one event."""
    from app import create_app

    app = create_app(settings)
    form = message("SM" + "c" * 32, "delivered")
    start = threading.Barrier(8)
    codes = []

    def send():
        with app.test_client() as c:
            start.wait()
            codes.append(post(c, "/twilio/messaging", form).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [204] * 8
    assert len(buffered(redis)) == 1


def test_voice_status_goes_to_the_customer(client, redis):
    """An answered inbound call gives an ANSWERED event for the caller's profile."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "d" * 32,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "From": CUSTOMER,
        "To": "+15005550001",
    }
    assert post(client, "/twilio/voice", form).status_code == 204
    [event] = buffered(redis)
    assert (event["lifecycle"], event["direction"]) == (
        "COMMUNICATION_ANSWERED",
        "INBOUND",
    )


def test_inbound_message_is_answered_with_empty_twiml(client, redis):
    """An inbound message webhook gets empty TwiML and is stored for the sender."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": "SM" + "e" * 32,
        "SmsStatus": "received",
        "From": CUSTOMER,
        "To": "+15005550001",
        "Body": "hello",
    }
    response = post(client, "/twilio/messaging", form)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert b"<Response></Response>" in response.data
    [event] = buffered(redis)
    assert event["direction"] == "INBOUND"
    assert "hello" not in json.dumps(event)


def test_bad_signature_is_refused(client, redis):
    """A wrong signature gets 403 and nothing is stored."""
    form = message("SM" + "f" * 32, "delivered")
    response = client.post(
        "/twilio/messaging", data=form, headers={"X-Twilio-Signature": "bm9wZQ=="}
    )
    assert response.status_code == 403
    assert response.json["error"] == "signature_invalid"
    assert buffered(redis) == []


def test_missing_signature_is_refused(client, redis):
    """A callback without X-Twilio-Signature gets 403."""
    response = client.post("/twilio/messaging", data=message("SM" + "0" * 32, "sent"))
    assert response.status_code == 403
    assert response.json["error"] == "signature_missing"


def test_wrong_content_type_is_refused(client):
    """A JSON body at a form endpoint gets 415, not a 500."""
    response = client.post("/twilio/messaging", json={"MessageSid": "SM1"})
    assert response.status_code == 415


def test_unknown_status_is_accepted_and_not_forwarded(client, redis):
    """An unknown MessageStatus gets 204 and stores nothing."""
    form = message("SM" + "1" * 32, "teleported")
    assert post(client, "/twilio/messaging", form).status_code == 204
    assert buffered(redis) == []


def test_missing_message_sid_is_a_clear_400(client):
    """A messaging callback without MessageSid gets 400 naming the field."""
    form = {"AccountSid": ACCOUNT_SID, "MessageStatus": "sent", "To": CUSTOMER}
    response = post(client, "/twilio/messaging", form)
    assert response.status_code == 400
    assert "MessageSid" in response.json["message"]


def test_no_store_is_a_clear_400(settings, redis):
    """With no MEMORY_STORE_ID and no ?storeId= the callback gets 400 saying so."""
    from app import create_app

    app = create_app({**settings, "memory_store_id": ""})
    response = post(
        app.test_client(), "/twilio/messaging", message("SM" + "2" * 32, "sent")
    )
    assert response.status_code == 400
    assert "MEMORY_STORE_ID" in response.json["message"]


def test_store_and_profile_from_the_query(client, redis):
    """?storeId= and ?profileId= route the events to that store and profile."""
    profile = "mem_profile_" + "2" * 26
    store = "mem_store_" + "3" * 26
    path = f"/twilio/messaging?storeId={store}&profileId={profile}"
    assert post(client, path, message("SM" + "3" * 32, "sent")).status_code == 204
    assert len(buffered(redis, f"{store}/id:{profile}")) == 1


def test_bad_conversation_id_in_the_query_is_a_400(client):
    """A conversationId that is not a TypeID gets 400 naming the pattern."""
    path = "/twilio/messaging?conversationId=nope"
    response = post(client, path, message("SM" + "4" * 32, "sent"))
    assert response.status_code == 400
    assert "conversationId" in response.json["message"]


def test_redis_unreachable_is_a_fast_503(settings):
    """With Redis away the answer is 503 within 2 s, never a 2xx."""
    from app import create_app
    from app.embedded import free_port

    app = create_app({**settings, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    started = time.monotonic()
    response = post(
        app.test_client(), "/twilio/messaging", message("SM" + "5" * 32, "sent")
    )
    assert response.status_code == 503
    assert time.monotonic() - started < 2


def test_store_and_profile_that_are_not_typeids_are_a_400(client, redis):
    """?storeId=nope or ?profileId=nope gets 400 saying what an id looks like."""
    for query in ("storeId=nope", "profileId=nope", "storeId=a%2Fb", "profileId=x%0A"):
        path = f"/twilio/messaging?{query}"
        response = post(client, path, message("SM" + "6" * 32, "sent"))
        assert response.status_code == 400, query
        assert "TypeID" in response.json["message"]
    assert redis.keys("mb:buf:*") == []
