"""Tests for app.contract: the Memory API's rules for one lifecycle event."""

from __future__ import annotations

from typing import Any

import pytest

from app.contract import conform, problems

SUFFIX = "01jf8x0m6ke3v9zq7r4t5w2y1c"
OTHER_SUFFIX = "01jf8x0m6ke3v9zq7r4t5w2y1d"
REQUIRED = ("timestamp", "lifecycle", "conversationId", "communicationType")


def event(**changes: Any) -> dict[str, Any]:
    """Return a conforming event with every field filled, then these changes."""
    full: dict[str, Any] = {
        "timestamp": "2026-12-04T10:00:00.123Z",
        "lifecycle": "COMMUNICATION_DELIVERED",
        "conversationId": f"conv_conversation_{SUFFIX}",
        "communicationId": f"comms_communication_{SUFFIX}",
        "communicationType": "SMS",
        "communicationStatus": "DELIVERED",
        "direction": "OUTBOUND",
        "sender": {
            "address": "+15005550001",
            "participantId": f"comms_participant_{SUFFIX}",
        },
        "recipient": {
            "address": "+15005550006",
            "participantId": f"comms_participant_{OTHER_SUFFIX}",
        },
        "errorCode": "30003",
        "errorMessage": "Unreachable destination handset.",
    }
    full.update(changes)

    return full


def without(name: str) -> dict[str, Any]:
    """Return the conforming event without the field ``name``."""
    broken = event()
    del broken[name]

    return broken


def only_problem(found: list[str], name: str) -> str:
    """Return the one problem found, after checking it names the field ``name``."""
    assert len(found) == 1, found
    assert found[0].startswith(name), found

    return found[0]


def test_a_full_event_passes() -> None:
    """An event with every field filled within its rules has no problems."""
    assert problems(event()) == []


def test_an_event_with_only_the_required_fields_passes() -> None:
    """An event with the four required fields alone has no problems."""
    minimal = {name: event()[name] for name in REQUIRED}

    assert problems(minimal) == []


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_field_is_named(name: str) -> None:
    """An event without a required field has one problem naming that field."""
    only_problem(problems(without(name)), name)


@pytest.mark.parametrize(
    "name",
    [
        "communicationId",
        "communicationStatus",
        "direction",
        "sender",
        "recipient",
        "errorCode",
        "errorMessage",
    ],
)
def test_an_optional_field_may_be_left_out(name: str) -> None:
    """An event without one of the optional fields still passes."""
    assert problems(without(name)) == []


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("lifecycle", 50),
        ("communicationType", 20),
        ("communicationStatus", 20),
        ("errorCode", 10),
        ("errorMessage", 512),
    ],
)
def test_a_string_at_its_length_limit_passes(name: str, limit: int) -> None:
    """A string field exactly as long as its limit passes."""
    assert problems(event(**{name: "X" * limit})) == []


@pytest.mark.parametrize(
    ("name", "length"),
    [
        ("lifecycle", 51),
        ("communicationType", 21),
        ("communicationStatus", 21),
        ("errorCode", 11),
        ("errorMessage", 513),
    ],
)
def test_a_string_over_its_length_limit_is_named(name: str, length: int) -> None:
    """A string field one character over its limit has one problem naming it."""
    only_problem(problems(event(**{name: "X" * length})), name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("conversationId", f"comms_communication_{SUFFIX}"),
        ("conversationId", "conv_conversation_" + SUFFIX[:-1]),
        ("conversationId", "conv_conversation_" + SUFFIX + "0"),
        ("conversationId", "conv_conversation_8" + SUFFIX[1:]),
        ("conversationId", "conv_conversation_" + SUFFIX[:-1] + "u"),
        ("conversationId", "conv_conversation_" + SUFFIX.upper()),
        ("conversationId", "CH00000000000000000000000000000000"),
        ("communicationId", f"conv_conversation_{SUFFIX}"),
        ("communicationId", "comms_communication_8" + SUFFIX[1:]),
        ("communicationId", "comms_communication_" + SUFFIX[:-1] + "l"),
        ("communicationId", "SM00000000000000000000000000000001"),
    ],
)
def test_an_id_off_its_pattern_is_named(name: str, value: str) -> None:
    """An id with the wrong prefix, length, first digit or letter is named."""
    only_problem(problems(event(**{name: value})), name)


@pytest.mark.parametrize(
    ("party", "value"),
    [
        ("sender", "comms_participant_8" + SUFFIX[1:]),
        ("sender", "comms_participant_" + SUFFIX[:-1] + "i"),
        ("recipient", "comms_participant_" + SUFFIX[:-1] + "o"),
        ("recipient", f"conv_conversation_{SUFFIX}"),
    ],
)
def test_a_participant_id_off_its_pattern_is_named(party: str, value: str) -> None:
    """A sender or recipient participantId off its pattern is named."""
    broken = event()
    broken[party] = {**broken[party], "participantId": value}

    found = only_problem(problems(broken), party)

    assert "participantId" in found


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-04T10:00:00Z",
        "2026-12-04T10:00:00.123",
        "2026-12-04T10:00:00.123+00:00",
        "2026-12-04T10:00:00.123456Z",
        "2026-12-04 10:00:00.123Z",
        "Fri, 04 Dec 2026 10:00:00 +0000",
    ],
)
def test_a_timestamp_not_in_utc_milliseconds_is_named(value: str) -> None:
    """A timestamp without milliseconds, without Z or in another form is named."""
    only_problem(problems(event(timestamp=value)), "timestamp")


@pytest.mark.parametrize("value", ["SIDEWAYS", "inbound", "", None])
def test_a_direction_other_than_inbound_or_outbound_is_named(value: Any) -> None:
    """A direction other than INBOUND or OUTBOUND is named."""
    only_problem(problems(event(direction=value)), "direction")


@pytest.mark.parametrize("party", ["sender", "recipient"])
def test_a_party_without_its_participant_id_is_named(party: str) -> None:
    """A sender or recipient with an address but no participantId is named."""
    broken = event()
    broken[party] = {"address": broken[party]["address"]}

    found = only_problem(problems(broken), party)

    assert "participantId" in found


@pytest.mark.parametrize(
    "party",
    [
        {"participantId": f"comms_participant_{SUFFIX}"},
        {
            "address": "+15005550001",
            "participantId": f"comms_participant_{SUFFIX}",
            "name": "x",
        },
        {"address": "", "participantId": f"comms_participant_{SUFFIX}"},
        {"address": "+1" + "5" * 319, "participantId": f"comms_participant_{SUFFIX}"},
        "+15005550001",
    ],
)
def test_a_malformed_sender_is_named(party: Any) -> None:
    """A sender without an address, with extras, or with a bad address is named."""
    only_problem(problems(event(sender=party)), "sender")


def test_an_address_at_its_length_limit_passes() -> None:
    """A participant address of exactly 320 characters passes."""
    party = {
        "address": "+1" + "5" * 318,
        "participantId": f"comms_participant_{SUFFIX}",
    }

    assert problems(event(recipient=party)) == []


def test_an_unknown_field_is_named() -> None:
    """A field the contract does not list is named as not in the contract."""
    only_problem(problems(event(channel="sms")), "channel")


def test_every_broken_rule_is_reported() -> None:
    """An event breaking several rules has one problem for each of them."""
    broken = event(lifecycle="X" * 51, direction="SIDEWAYS", extra=1)
    del broken["timestamp"]

    found = problems(broken)

    assert sorted(p.split(":")[0] for p in found) == [
        "direction",
        "extra",
        "lifecycle",
        "timestamp",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("conversationId", f"conv_conversation_{SUFFIX}\n"),
        ("communicationId", f"comms_communication_{SUFFIX}\n"),
        ("timestamp", "2026-12-04T10:00:00.123Z\n"),
    ],
)
def test_a_trailing_newline_breaks_a_pattern(name: str, value: str) -> None:
    """A pattern-checked field with a trailing newline is named."""
    only_problem(problems(event(**{name: value})), name)


@pytest.mark.parametrize(
    "name", ["communicationId", "communicationStatus", "errorCode", "errorMessage"]
)
def test_a_null_optional_string_is_named(name: str) -> None:
    """An optional string field sent as null is named."""
    only_problem(problems(event(**{name: None})), name)


@pytest.mark.parametrize(
    "value", ["2026-02-30T10:00:00.000Z", "2026-12-04T25:00:00.000Z"]
)
def test_an_impossible_timestamp_is_named(value: str) -> None:
    """A timestamp of the right shape but no real moment is named."""
    only_problem(problems(event(timestamp=value)), "timestamp")


def test_conform_cuts_a_long_error_message_and_names_it() -> None:
    """An errorMessage over 512 characters is cut to 512 and reported as cut."""
    fitted, cut = conform(event(errorMessage="y" * 513))

    assert fitted["errorMessage"] == "y" * 512
    assert cut == ["errorMessage"]
    assert problems(fitted) == []


def test_conform_leaves_a_fitting_event_alone() -> None:
    """An event within every limit comes back equal, with nothing cut."""
    assert conform(event()) == (event(), [])


def test_conform_never_cuts_what_the_contract_does_not_let_us_shorten() -> None:
    """An errorCode over 10 characters is left whole, for the check to refuse."""
    fitted, cut = conform(event(errorCode="12345678901"))

    assert cut == []
    assert only_problem(problems(fitted), "errorCode")
