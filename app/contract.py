"""The Memory API's profile Events contract, and a check of events against it.

Every limit below is taken from the published API description of
``POST /v1/Stores/{storeId}/Profiles/{profileId}/Events`` (see docs/architecture.md).
The bridge checks each event here before it is buffered, so that nothing leaves
the bridge that the API would refuse.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

# The body's ``type``; the schema also lists "twilio-communication-event".
EVENT_TYPE = "twilio-comms-lifecycle"
# ``events`` holds 1 to 1000 items.
MAX_EVENTS_PER_BATCH = 1000

# TypeIDs: a prefix, "_", then 26 Crockford base32 characters, the first 0-7.
_TYPEID_SUFFIX = r"[0-7][0-9a-hjkmnp-tv-z]{25}"
CONVERSATION_ID = re.compile(rf"^conv_conversation_{_TYPEID_SUFFIX}$")
COMMUNICATION_ID = re.compile(rf"^comms_communication_{_TYPEID_SUFFIX}$")
PARTICIPANT_ID = re.compile(rf"^comms_participant_{_TYPEID_SUFFIX}$")
# ISO 8601 date-time, millisecond resolution, UTC.
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

REQUIRED = ("timestamp", "lifecycle", "conversationId", "communicationType")
MAX_LENGTH = {
    "lifecycle": 50,
    "communicationType": 20,
    "communicationStatus": 20,
    "errorCode": 10,
    "errorMessage": 512,
}
DIRECTIONS = frozenset({"INBOUND", "OUTBOUND"})
MAX_ADDRESS_LENGTH = 320
# Free text the bridge may cut to fit rather than refuse: a shortened message
# still says what went wrong. Anything else over its limit is refused.
SHORTENABLE = ("errorMessage",)
FIELDS = frozenset(
    {*REQUIRED, *MAX_LENGTH, "communicationId", "direction", "sender", "recipient"}
)


def problems(event: Mapping[str, Any]) -> list[str]:
    """Return what keeps ``event`` from passing the contract; empty when it passes."""
    found = [f"{name}: required" for name in REQUIRED if not event.get(name)]
    found += [f"{name}: not in the contract" for name in event if name not in FIELDS]
    for name, limit in MAX_LENGTH.items():
        value = event.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            found.append(f"{name}: must be a string of at most {limit} characters")

    checks = (
        ("timestamp", TIMESTAMP),
        ("conversationId", CONVERSATION_ID),
        ("communicationId", COMMUNICATION_ID),
    )
    for name, pattern in checks:
        if name in event and not pattern.fullmatch(str(event[name])):
            found.append(f"{name}: {event[name]!r} does not match {pattern.pattern}")
    if not found and not _is_date_time(event["timestamp"]):
        found.append(f"timestamp: {event['timestamp']!r} is not a date and time")
    if "direction" in event and event["direction"] not in DIRECTIONS:
        found.append(f"direction: must be one of {sorted(DIRECTIONS)}")
    for name in ("sender", "recipient"):
        if name in event:
            found += [f"{name}.{p}" for p in _participant_problems(event[name])]

    return found


def conform(event: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return ``event`` with shortenable fields cut to fit, and the names cut."""
    fitted = dict(event)
    cut = []
    for name in SHORTENABLE:
        value = fitted.get(name)
        if isinstance(value, str) and len(value) > MAX_LENGTH[name]:
            fitted[name] = value[: MAX_LENGTH[name]]
            cut.append(name)

    return fitted, cut


def _participant_problems(party: Any) -> list[str]:
    """Return what keeps a sender or recipient from passing the contract."""
    if not isinstance(party, Mapping) or set(party) != {"address", "participantId"}:
        return ["address, participantId: both required, nothing else"]
    found = []
    address = party["address"]
    if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_LENGTH:
        found.append(f"address: must be 1 to {MAX_ADDRESS_LENGTH} characters")
    if not PARTICIPANT_ID.fullmatch(str(party["participantId"])):
        found.append(f"participantId: does not match {PARTICIPANT_ID.pattern}")

    return found


def _is_date_time(value: str) -> bool:
    """Tell whether a timestamp of the right shape names a real moment.

    The shape is checked first (``problems``); ``fromisoformat`` then refuses the
    impossible dates, such as February 30, at a tenth of ``strptime``'s cost.
    """
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False

    return True
