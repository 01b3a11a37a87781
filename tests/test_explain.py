"""Tests for ``memory-bridge translate``: what would be forwarded, and why."""

import json

from app.cli import main

MESSAGE = "SM" + "0" * 31 + "1"
CALL = "CA" + "0" * 31 + "1"
FORM = (
    f"MessageSid={MESSAGE}&MessageStatus=delivered"
    "&From=%2B15005550001&To=%2B15005550006"
)


def run(capsys, *argv: str) -> str:
    """Run the command and return what it printed."""
    assert main(["translate", *argv]) == 0
    return capsys.readouterr().out


def test_a_form_body_is_explained(capsys):
    """A form body prints its lifecycle, why, where it goes, and the event."""
    out = run(capsys, FORM)

    assert out.splitlines()[0] == "messaging callback"
    assert "COMMUNICATION_DELIVERED: messaging MessageStatus 'delivered'" in out
    assert "phone:+15005550006" in out
    event = json.loads(out.splitlines()[-1])
    assert event["communicationStatus"] == "DELIVERED"
    assert event["recipient"]["address"] == "+15005550006"


def test_an_unknown_status_says_it_is_counted(capsys):
    """An unknown status says it is answered 2xx, not forwarded, and its counter."""
    out = run(capsys, f"CallSid={CALL}&CallStatus=on-hold")

    assert "voice callback" in out
    assert "counted as unknown:voice:on-hold" in out


def test_a_refused_callback_says_why(capsys):
    """A callback the bridge would refuse prints the status and the reason."""
    out = run(capsys, "CallSid=CA1&CallStatus=busy")

    assert "refused with 400" in out
    assert "not a Twilio SID" in out


def test_a_file_of_callbacks_is_explained_line_by_line(capsys, tmp_path):
    """A file with one callback per line explains each, comments skipped."""
    path = tmp_path / "callbacks.txt"
    path.write_text(f"# two callbacks\n{FORM}\n\nCallSid={CALL}&CallStatus=busy\n")

    out = run(capsys, str(path))

    assert "COMMUNICATION_DELIVERED" in out
    assert "COMMUNICATION_BUSY" in out
    assert out.count(" callback\n") == 2


def test_an_event_streams_batch_is_explained_in_admission_order(capsys):
    """A batch's call events are shown in SequenceNumber order, as admitted."""

    def event(moment: str, number: int) -> dict:
        parameters = {
            "CallSid": CALL,
            "SequenceNumber": str(number),
            "To": "+15005550006",
        }
        return {
            "specversion": "1.0",
            "type": f"com.twilio.voice.status-callback.call.{moment}",
            "id": f"EZ{number}",
            "data": {"request": {"parameters": parameters | {"Direction": "inbound"}}},
        }

    batch = [event("completed", 3), event("ringing", 1), event("answered", 2)]
    out = run(capsys, json.dumps(batch))

    lifecycles = [
        line.split(":")[0].strip() for line in out.splitlines() if ": Event" in line
    ]
    assert lifecycles == [
        "COMMUNICATION_RINGING",
        "COMMUNICATION_ANSWERED",
        "COMMUNICATION_COMPLETED",
    ]


def test_the_url_routes_to_its_profile(capsys):
    """--url with ?profileId= sends the events to that profile."""
    profile = "mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1c"

    out = run(
        capsys, FORM, "--url", f"https://b.example/twilio/messaging?profileId={profile}"
    )

    assert f"id:{profile}" in out


def test_a_long_error_message_is_shown_cut(capsys):
    """An ErrorMessage over 512 characters is reported as cut to fit."""
    out = run(
        capsys, FORM.replace("delivered", "failed") + "&ErrorMessage=" + "x" * 600
    )

    assert "cut to fit the contract: errorMessage" in out


def test_json_nested_too_deep_is_refused_as_the_endpoint_refuses_it(capsys):
    """JSON nested 30,000 deep is refused as bad_json, as /twilio/events does."""
    out = run(capsys, "[" * 30000 + "]" * 30000)

    assert out.splitlines()[0] == "events callback"
    assert "refused with 400 (bad_json)" in out


def test_a_batch_explained_as_a_form_kind_is_refused_not_a_crash(capsys):
    """--kind voice on a JSON array: refused, it is not a form."""
    out = run(capsys, "--kind", "voice", '[{"type": "x", "id": "1"}]')

    assert out.splitlines()[0] == "voice callback"
    assert "refused with 400" in out


def test_a_file_that_is_not_utf8_is_an_error_message(capsys, tmp_path):
    """A binary file: exit 2 and a message naming it, not a traceback."""
    path = tmp_path / "callbacks.bin"
    path.write_bytes(b"\xff\xfe\x00bad")

    assert main(["translate", str(path)]) == 2

    assert "not UTF-8" in capsys.readouterr().err


def test_input_without_a_callback_says_so(capsys):
    """Only blank lines and comments: it says no callback was found."""
    out = run(capsys, "\n# a comment\n")

    assert "no callback" in out


def _delivered(sid: str, event_id: str) -> dict:
    """Return a delivered CloudEvent for message ``sid``."""
    data = {"messageSid": sid, "from": "+15005550001", "to": "+15005550006"}
    return {
        "specversion": "1.0",
        "type": "com.twilio.messaging.message.delivered",
        "id": event_id,
        "data": data,
    }


def test_a_repeated_status_or_cloudevent_id_is_explained_as_a_duplicate(capsys):
    """As the admit script does: a known CloudEvent id, or the same status again,
    is a duplicate (not stale, not forwarded)."""
    other = "SM" + "0" * 31 + "2"
    batch = [_delivered(MESSAGE, "EZ1"), _delivered(other, "EZ1")]
    batch.append(_delivered(MESSAGE, "EZ3"))

    out = run(capsys, json.dumps(batch))

    assert out.count("goes to profile") == 1
    assert out.count("dropped as a duplicate") == 2
    assert "stale" not in out


def test_a_file_is_explained_as_posted_in_its_order(capsys, tmp_path):
    """Lines of a file are callbacks in turn: a late sent after delivered is stale,
    and the same callback again a duplicate."""
    late = FORM.replace("delivered", "sent")
    path = tmp_path / "callbacks.txt"
    path.write_text(f"{FORM}\n{late}\n{FORM}\n")

    out = run(capsys, str(path))

    assert out.count("goes to profile") == 1
    assert out.count("dropped as stale") == 1
    assert out.count("dropped as a duplicate") == 1


def test_a_learned_conversation_routes_the_receipts_explained_after_it(
    capsys, tmp_path
):
    """onParticipantAdded then a receipt: the receipt goes to the learned customer."""
    conversation = "CH" + "0" * 31 + "1"
    receipt = (
        f"EventType=onDeliveryUpdated&ConversationSid={conversation}"
        f"&MessageSid=IM{'0' * 31}1&ParticipantSid=MB{'0' * 31}1&Status=read"
    )
    participant = (
        f"EventType=onParticipantAdded&ConversationSid={conversation}"
        f"&ParticipantSid=MB{'0' * 31}1"
        "&MessagingBinding.Address=whatsapp%3A%2B15005550006"
    )
    path = tmp_path / "callbacks.txt"
    later = receipt.replace(f"IM{'0' * 31}1", f"IM{'0' * 31}2")
    path.write_text(f"{receipt}\n{participant}\n{later}\n")

    out = run(capsys, str(path))

    assert f"parked (no customer: none remembered for conv:{conversation} yet)" in out
    assert "learned: answered 2xx, not forwarded" in out
    assert f"remembers conv:{conversation} is customer +15005550006" in out
    assert (
        "goes to profile (MEMORY_STORE_ID)/phone:+15005550006 "
        f"(the customer remembered for conv:{conversation})"
    ) in out


def test_a_child_leg_explained_after_its_parent_goes_to_the_parents_customer(
    capsys, tmp_path
):
    """A child leg given after its parent call goes to the parent's customer."""
    parent = (
        f"CallSid={CALL}&CallStatus=in-progress&Direction=outbound-api"
        "&From=%2B15005550001&To=%2B15005550006"
    )
    child = (
        f"CallSid=CA{'0' * 31}2&CallStatus=ringing&Direction=outbound-dial"
        f"&ParentCallSid={CALL}&From=%2B15005550001&To=%2B15005550009"
    )
    path = tmp_path / "calls.txt"
    path.write_text(f"{child}\n{parent}\n{child.replace('ringing', 'completed')}\n")

    out = run(capsys, str(path))

    assert "goes to profile (MEMORY_STORE_ID)/phone:+15005550009;" in out
    assert (
        "goes to profile (MEMORY_STORE_ID)/phone:+15005550006 "
        f"(the customer remembered for call:{CALL})"
    ) in out
