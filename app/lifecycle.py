"""A lifecycle event, what one callback gives, and the pieces every kind shares.

``translate`` (messaging and voice), ``conversations`` and ``eventstreams`` build
their events from these, so that every kind of callback makes the same shape.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from app import ids

INBOUND, OUTBOUND = "INBOUND", "OUTBOUND"


@dataclass(frozen=True)
class Status:
    """One row of the table: what a Twilio status becomes."""

    lifecycle: str
    status: str
    rank: int
    direction: str | None = OUTBOUND  # None: the callback's Direction decides


@dataclass(frozen=True)
class Event:
    """One lifecycle event and what admission needs to know of it."""

    communication: str  # dedupe and ordering are per communication (a SID)
    status: str
    rank: int
    body: dict[str, Any]
    dedupe: str = ""  # an id Twilio gives the event itself (a CloudEvent id)
    order: tuple[int, str] = (0, "")  # SequenceNumber, then timestamp
    why: str = ""  # what made this event, for people debugging their setup


@dataclass(frozen=True)
class Translation:
    """What one callback gives: events (maybe none) and the customer's address."""

    kind: str
    status: str
    events: list[Event] = field(default_factory=list)
    customer: str = ""
    ignored: str = ""  # why no event was made, when none was
    # (kind, value) to count as unknown:{kind}:{value}, when ignored for that
    unknown: tuple[str, str] | None = None
    # Routing memory (app/routing.py): the key under which ``customer`` is worth
    # remembering ("conv:CH…", "call:CA…"), and the key whose remembered customer
    # routes these events instead of ``customer`` when one is known.
    learn: str = ""
    recall: str = ""

    @classmethod
    def unknown_value(cls, kind: str, value: str, reason: str) -> "Translation":
        """Return the translation of a callback whose status or type is unknown."""
        return cls(kind, value, ignored=reason, unknown=(kind, value))


def first(form: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """Return the first non-empty value among ``names``, as stripped text."""
    for name in names:
        value = str(form.get(name, "") or "").strip()
        if value:
            return value

    return ""


def body(
    row: Status,
    moment: str,
    conversation_id: str,
    communication_id: str,
    communication_type: str,
    direction: str,
) -> dict[str, Any]:
    """Return the fields every lifecycle event has, in the contract's names."""
    event: dict[str, Any] = {
        "timestamp": moment,
        "lifecycle": row.lifecycle,
        "conversationId": conversation_id,
        "communicationId": communication_id,
        "communicationType": communication_type,
        "communicationStatus": row.status,
    }
    if direction:
        event["direction"] = direction

    return event


def parties(sender: str, recipient: str) -> dict[str, Any]:
    """Return the sender and recipient objects for the addresses that are known."""
    found = {}
    for name, address in (("sender", sender), ("recipient", recipient)):
        if address:
            found[name] = {
                "address": address,
                "participantId": ids.participant_id(address),
            }

    return found


def timestamp(raw: str, received: datetime) -> str:
    """Return Twilio's time (RFC 2822 or ISO 8601) if it parses, else ``received``.

    Voice's ``Timestamp`` is RFC 2822; Conversations and Event Streams write ISO
    8601. The result is UTC at millisecond resolution, as the contract wants.
    """
    moment = received.astimezone(UTC)
    given = _parse_time(str(raw or "").strip())
    if given is not None and 2000 <= given.year <= 9999:
        moment = given

    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_time(raw: str) -> datetime | None:
    """Return ``raw`` as an aware UTC datetime, or None when it is no time."""
    if not raw:
        return None
    try:
        given = datetime.fromisoformat(raw)
    except ValueError:
        try:
            given = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if given.tzinfo is None:
        given = given.replace(tzinfo=UTC)
    try:
        return given.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def sequence(raw: str, moment: str) -> tuple[int, str]:
    """Return the sort key of a call's event: SequenceNumber, then the timestamp."""
    text = str(raw or "").strip()
    # str.isdigit also takes "²" and other scripts' digits, which int() refuses.
    plain = text.isascii() and text.isdigit()
    number = int(text) if plain and len(text) < 10 else 0

    return number, moment


def in_order(events: list[Event]) -> list[Event]:
    """Return ``events`` with each communication's events in Twilio's order.

    Communications keep the order they first appear in; within one, events go
    by SequenceNumber, then timestamp, then rank.
    """
    position: dict[str, int] = {}
    for event in events:
        position.setdefault(event.communication, len(position))

    return sorted(events, key=lambda e: (position[e.communication], e.order, e.rank))
