"""Turn a Twilio callback into lifecycle events: pure, and driven by one table.

``STATUSES`` is the whole mapping, and README.md shows it as a table. Each row
says, for one kind of callback and one Twilio status, which lifecycle event the
bridge forwards. ``rank`` orders the statuses of one communication: the bridge
never lets a status with a lower or equal rank follow a higher one.
``EVENT_TYPES`` says which row each Event Streams type reads.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import NoReturn

from app import addresses, ids
from app.errors import CallbackError
from app.lifecycle import (
    INBOUND,
    OUTBOUND,
    Event,
    Status,
    Translation,
    body,
    first,
    parties,
    sequence,
    timestamp,
)
from app.routing import call_key, routable

__all__ = ["Event", "Translation", "STATUSES", "EVENT_TYPES", "translate"]


def _row(lifecycle: str, rank: int, direction: str | None = OUTBOUND) -> Status:
    status = lifecycle.removeprefix("COMMUNICATION_")
    return Status(lifecycle, status, rank, direction)


# Message statuses from Twilio's "Message resource" docs (Status values); call
# statuses from the Voice "Call resource" docs ("answered" arrives as in-progress;
# busy, no-answer, canceled and failed are outcomes of their own, not completed).
# Conversations: onDeliveryUpdated's Status values ("Delivery Receipts"), and
# onMessageAdded, "added" by the business (SDK or API) or "received" from a
# customer on a messaging channel.
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
    "conversations": {
        "added": _row("COMMUNICATION_CREATED", 1),
        "received": _row("COMMUNICATION_RECEIVED", 2, INBOUND),
        "sent": _row("COMMUNICATION_SENT", 4),
        "delivered": _row("COMMUNICATION_DELIVERED", 5),
        "undelivered": _row("COMMUNICATION_UNDELIVERED", 5),
        "failed": _row("COMMUNICATION_FAILED", 5),
        "read": _row("COMMUNICATION_READ", 6),
    },
}

# Event Streams types ("Event types list" in Twilio's docs) and the callback kind
# and status each one is; '' takes the status from the event's data, which for a
# call's "completed" may say busy, no-answer, canceled or failed.
_MESSAGE = "com.twilio.messaging.message."
_CALL = "com.twilio.voice.status-callback.call."
_OLD_CALL = "com.twilio.voice.webhook.status-callback.call."
EVENT_TYPES: dict[str, tuple[str, str]] = {
    **{
        _MESSAGE + s: ("messaging", s)
        for s in ("queued", "sent", "delivered", "undelivered", "failed", "read")
    },
    "com.twilio.messaging.inbound-message.received": ("messaging", "received"),
    **{
        prefix + s: ("voice", "")
        for prefix in (_CALL, _OLD_CALL)
        for s in ("initiated", "ringing", "answered", "completed")
    },
    "com.twilio.conversations.message.added": ("conversations", ""),
    "com.twilio.conversations.delivery.updated": ("conversations", ""),
}
# Conversations types are the webhooks of these names.
CONVERSATION_EVENTS = {
    "com.twilio.conversations.message.added": "onMessageAdded",
    "com.twilio.conversations.delivery.updated": "onDeliveryUpdated",
}
# An Event Streams call event names the moment; "answered" is in-progress.
CALL_MOMENTS = {"answered": "in-progress"}

SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
_SID_FIELDS = {"messaging": ("MessageSid", "SmsSid"), "voice": ("CallSid",)}
_STATUS_FIELDS = {"messaging": ("MessageStatus", "SmsStatus"), "voice": ("CallStatus",)}


def translate(
    kind: str,
    form: Mapping[str, str],
    received: datetime,
    conversation_id: str = "",
) -> Translation:
    """Translate one ``messaging``, ``voice`` or ``conversations`` callback."""
    if kind == "conversations":
        from app import conversations  # it reads this module's table

        return conversations.translate(form, received, conversation_id)
    sid = first(form, _SID_FIELDS[kind])
    raw_status = first(form, _STATUS_FIELDS[kind]).lower()
    check_sid(sid, _SID_FIELDS[kind], kind)
    if not raw_status:
        names = " or ".join(_STATUS_FIELDS[kind])
        raise_missing(names, kind)
    row = STATUSES[kind].get(raw_status)
    if row is None:
        return Translation.unknown_value(kind, raw_status, "unknown_status")

    channel, sender = addresses.split(form.get("From", ""))
    to_channel, recipient = addresses.split(form.get("To", ""))
    direction = row.direction or _call_direction(form.get("Direction", ""))
    customer, business = (
        (sender, recipient) if direction == INBOUND else (recipient, sender)
    )
    conversation = conversation_id or ids.conversation_id(
        business or form.get("MessagingServiceSid", ""), customer or sid
    )
    event_body = body(
        row,
        timestamp(form.get("Timestamp", ""), received),
        conversation,
        ids.communication_id(sid),
        _type(kind, form, channel or to_channel),
        direction,
    )
    event_body.update(parties(sender, recipient))
    event_body.update(error_fields(form))
    why = f"{kind} {_STATUS_FIELDS[kind][0]} {raw_status!r} is a row of the table"
    parent = first(form, ("ParentCallSid",)) if kind == "voice" else ""
    if parent:
        why += f"; a child leg of {parent}, its own call"
    order = sequence(form.get("SequenceNumber", ""), event_body["timestamp"])
    event = Event(sid, raw_status, row.rank, event_body, order=order, why=why)
    learn, recall = _call_routing(kind, sid, parent, customer)

    return Translation(
        kind, raw_status, [event], customer=customer, learn=learn, recall=recall
    )


def _call_routing(kind: str, sid: str, parent: str, customer: str) -> tuple[str, str]:
    """Return the routing memory keys a call teaches and reads ('' for none).

    A child leg's ``To`` is whoever was dialled (an agent, often), so it goes to
    its parent call's customer when the parent was seen; a parent call teaches
    its customer under its own CallSid.
    """
    if kind != "voice":
        return "", ""
    if parent:
        return "", call_key(parent) if SID.fullmatch(parent) else ""
    if not routable(customer):
        return "", ""

    return call_key(sid), ""


def check_sid(sid: str, names: tuple[str, ...], kind: str) -> None:
    """Refuse a callback whose SID is missing or is not a Twilio SID."""
    if not sid:
        raise_missing(" or ".join(names), kind)
    if not SID.fullmatch(sid):
        raise CallbackError(
            f"{names[0]} {sid[:40]!r} is not a Twilio SID "
            "(two letters and 32 hexadecimal digits)."
        )


def raise_missing(names: str, kind: str) -> NoReturn:
    """Refuse a callback without a field its kind always carries."""
    raise CallbackError(f"{names} is missing: this is not a {kind} callback.")


def _type(kind: str, form: Mapping[str, str], channel: str) -> str:
    """Return the communicationType: the channel, else MMS, SMS or VOICE."""
    prefix = form.get("ChannelPrefix", "").strip().lower()
    channel = addresses.CHANNELS.get(prefix, channel)
    if channel:
        return channel
    if kind == "voice":
        return "VOICE"
    if form.get("NumMedia", "0").strip() not in ("", "0"):
        return "MMS"

    return "SMS"


def _call_direction(raw: str) -> str:
    """Map Twilio's call Direction (inbound, outbound-api, outbound-dial)."""
    raw = raw.strip().lower()
    # Elastic SIP Trunking (the Call resource's "direction"): trunking-originating
    # calls come from the PSTN in to the business's own infrastructure, and
    # trunking-terminating calls go from it out to the PSTN.
    if raw in ("inbound", "trunking-originating"):
        return INBOUND
    if raw.startswith("outbound") or raw == "trunking-terminating":
        return OUTBOUND

    return ""


def error_fields(form: Mapping[str, str]) -> dict[str, str]:
    """Return errorCode and errorMessage as the callback carries them.

    They are not cut here: app.contract shortens what the contract lets it
    (errorMessage) and refuses the rest.
    """
    found = {}
    code = str(form.get("ErrorCode", "")).strip()
    message = str(form.get("ErrorMessage", "")).strip()
    # Twilio's error codes are five digits; 0 is how a Conversations receipt
    # (and its SDK's non-null errorCode) says there was no error.
    if code and code != "0":
        found["errorCode"] = code
    if message:
        found["errorMessage"] = message

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


def event_types_table() -> str:
    """Render EVENT_TYPES as the Markdown table README.md shows."""
    lines = ["| Event Streams type | reads the row of |", "| --- | --- |"]
    for name, (kind, status) in EVENT_TYPES.items():
        if status:
            row = f"{kind} `{status}`"
        elif kind == "voice":
            moment = name.rsplit(".", 1)[-1]
            moment = CALL_MOMENTS.get(moment, moment)
            row = f"voice: the data's `CallStatus`, else `{moment}`"
        else:
            row = f"conversations, as `{CONVERSATION_EVENTS[name]}`"
        lines.append(f"| `{name}` | {row} |")

    return "\n".join(lines)
