"""Turn a Twilio callback into lifecycle events: pure, and driven by one table.

``STATUSES`` is the whole mapping, and README.md shows it as a table. Each row
says, for one kind of callback and one Twilio status, which lifecycle event the
bridge forwards. ``rank`` orders the statuses of one communication: the bridge
never lets a status with a lower or equal rank follow a higher one.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from app import ids
from app.contract import MAX_ADDRESS_LENGTH
from app.errors import CallbackError

INBOUND, OUTBOUND = "INBOUND", "OUTBOUND"


@dataclass(frozen=True)
class Status:
    """One row of the table: what a Twilio status becomes."""

    lifecycle: str
    status: str
    rank: int
    direction: str | None = OUTBOUND  # None: the callback's Direction decides


def _row(lifecycle: str, rank: int, direction: str | None = OUTBOUND) -> Status:
    status = lifecycle.removeprefix("COMMUNICATION_")
    return Status(lifecycle, status, rank, direction)


# Message statuses from Twilio's "Message resource" docs (Status values); call
# statuses from the Voice "Call resource" docs. "in-progress" is the answer.
STATUSES: dict[str, dict[str, Status]] = {
    "messaging": {
        "accepted": _row("COMMUNICATION_ACCEPTED", 1),
        "scheduled": _row("COMMUNICATION_SCHEDULED", 1),
        "queued": _row("COMMUNICATION_QUEUED", 2),
        "sending": _row("COMMUNICATION_SENDING", 3),
        "sent": _row("COMMUNICATION_SENT", 4),
        "delivered": _row("COMMUNICATION_DELIVERED", 5),
        "undelivered": _row("COMMUNICATION_UNDELIVERED", 5),
        "failed": _row("COMMUNICATION_FAILED", 5),
        "partially_delivered": _row("COMMUNICATION_PARTIALLY_DELIVERED", 5),
        "canceled": _row("COMMUNICATION_CANCELED", 5),
        "read": _row("COMMUNICATION_READ", 6),
        "receiving": _row("COMMUNICATION_RECEIVING", 1, INBOUND),
        "received": _row("COMMUNICATION_RECEIVED", 2, INBOUND),
    },
    "voice": {
        "queued": _row("COMMUNICATION_QUEUED", 1, None),
        "initiated": _row("COMMUNICATION_INITIATED", 2, None),
        "ringing": _row("COMMUNICATION_RINGING", 3, None),
        "in-progress": Status("COMMUNICATION_ANSWERED", "IN_PROGRESS", 4, None),
        "completed": _row("COMMUNICATION_COMPLETED", 5, None),
        "busy": _row("COMMUNICATION_BUSY", 5, None),
        "failed": _row("COMMUNICATION_FAILED", 5, None),
        "no-answer": Status("COMMUNICATION_NO_ANSWER", "NO_ANSWER", 5, None),
        "canceled": _row("COMMUNICATION_CANCELED", 5, None),
    },
}

# Address prefixes that name a channel; the rest of the address is the address.
CHANNELS = {"whatsapp": "WHATSAPP", "rcs": "RCS", "messenger": "MESSENGER"}
_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
_SID_FIELDS = {"messaging": ("MessageSid", "SmsSid"), "voice": ("CallSid",)}
_STATUS_FIELDS = {"messaging": ("MessageStatus", "SmsStatus"), "voice": ("CallStatus",)}


@dataclass(frozen=True)
class Event:
    """One lifecycle event and what admission needs to know of it."""

    communication: str  # the Twilio SID; dedupe and ordering are per SID
    status: str
    rank: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Translation:
    """What one callback gives: events (maybe none) and the customer's address."""

    kind: str
    status: str
    events: list[Event] = field(default_factory=list)
    customer: str = ""
    ignored: str = ""  # why no event was made, when none was


def translate(
    kind: str,
    form: Mapping[str, str],
    received: datetime,
    conversation_id: str = "",
) -> Translation:
    """Translate one ``messaging`` or ``voice`` callback into lifecycle events."""
    sid = _first(form, _SID_FIELDS[kind])
    raw_status = _first(form, _STATUS_FIELDS[kind]).lower()
    if not sid:
        names = " or ".join(_SID_FIELDS[kind])
        raise CallbackError(f"{names} is missing: this is not a {kind} callback.")
    if not raw_status:
        names = " or ".join(_STATUS_FIELDS[kind])
        raise CallbackError(f"{names} is missing: this is not a {kind} callback.")
    if not _SID.fullmatch(sid):
        raise CallbackError(
            f"{_SID_FIELDS[kind][0]} {sid[:40]!r} is not a Twilio SID "
            "(two letters and 32 hexadecimal digits)."
        )
    row = STATUSES[kind].get(raw_status)
    if row is None:
        return Translation(kind, raw_status, ignored="unknown_status")

    channel, sender = _address(form.get("From", ""))
    to_channel, recipient = _address(form.get("To", ""))
    for name, address in (("From", sender), ("To", recipient)):
        if len(address) > MAX_ADDRESS_LENGTH:
            raise CallbackError(
                f"{name} is {len(address)} characters long: an address has at "
                f"most {MAX_ADDRESS_LENGTH}."
            )
    direction = row.direction or _call_direction(form.get("Direction", ""))
    customer, business = (
        (sender, recipient) if direction == INBOUND else (recipient, sender)
    )
    body: dict[str, Any] = {
        "timestamp": _timestamp(form.get("Timestamp", ""), received),
        "lifecycle": row.lifecycle,
        "conversationId": conversation_id
        or ids.conversation_id(
            business or form.get("MessagingServiceSid", ""), customer or sid
        ),
        "communicationId": ids.communication_id(sid),
        "communicationType": _type(kind, form, channel or to_channel),
        "communicationStatus": row.status,
    }
    if direction:
        body["direction"] = direction
    body.update(_parties(sender, recipient))
    body.update(_error(form))
    event = Event(sid, raw_status, row.rank, body)

    return Translation(kind, raw_status, [event], customer=customer)


def _first(form: Mapping[str, str], names: tuple[str, ...]) -> str:
    """Return the first non-empty value among ``names``."""
    return next((form[n].strip() for n in names if form.get(n, "").strip()), "")


def _address(raw: str) -> tuple[str, str]:
    """Split ``whatsapp:+1…`` into its channel and the bare address."""
    prefix, colon, rest = raw.strip().partition(":")
    if colon and prefix.lower() in CHANNELS:
        return prefix.lower(), rest.strip()

    return "", raw.strip()


def _type(kind: str, form: Mapping[str, str], channel: str) -> str:
    """Return the communicationType: the channel, else MMS, SMS or VOICE."""
    if kind == "voice":
        return "VOICE"
    channel = (form.get("ChannelPrefix", "") or channel).lower()
    if channel in CHANNELS:
        return CHANNELS[channel]
    if form.get("NumMedia", "0").strip() not in ("", "0"):
        return "MMS"

    return "SMS"


def _call_direction(raw: str) -> str:
    """Map Twilio's call Direction (inbound, outbound-api, outbound-dial)."""
    raw = raw.strip().lower()
    # SIP trunking: "terminating" calls come in from the trunk, "originating" go out.
    if raw in ("inbound", "trunking-terminating"):
        return INBOUND
    if raw.startswith("outbound") or raw == "trunking-originating":
        return OUTBOUND

    return ""


def _timestamp(raw: str, received: datetime) -> str:
    """Return Twilio's RFC 2822 ``Timestamp`` if it parses, else ``received``."""
    moment = received.astimezone(UTC)
    if raw.strip():
        try:
            given = parsedate_to_datetime(raw.strip())
            if given.tzinfo is None:
                given = given.replace(tzinfo=UTC)
            given = given.astimezone(UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            given = moment
        if 2000 <= given.year <= 9999:
            moment = given

    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parties(sender: str, recipient: str) -> dict[str, Any]:
    """Return the sender and recipient objects for the addresses that are known."""
    parties = {}
    for name, address in (("sender", sender), ("recipient", recipient)):
        if address:
            parties[name] = {
                "address": address,
                "participantId": ids.participant_id(address),
            }

    return parties


def _error(form: Mapping[str, str]) -> dict[str, str]:
    """Return errorCode and errorMessage when the callback carries them."""
    found = {}
    code = form.get("ErrorCode", "").strip()
    message = form.get("ErrorMessage", "").strip()
    if code:
        found["errorCode"] = code[:10]
    if message:
        found["errorMessage"] = message[:512]

    return found


def markdown_table() -> str:
    """Render STATUSES as the Markdown table README.md shows."""
    lines = [
        "| callback | Twilio status | lifecycle | communicationStatus | direction |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, rows in STATUSES.items():
        for raw, row in rows.items():
            cells = [kind, f"`{raw}`", f"`{row.lifecycle}`", f"`{row.status}`"]
            cells.append(row.direction or "from `Direction`")
            lines.append("| " + " | ".join(cells) + " |")

    return "\n".join(lines)
