"""Turn a Conversations webhook into lifecycle events.

Two post-event webhooks are translated (Twilio's "Conversations Webhooks" docs):
``onDeliveryUpdated``, a delivery receipt for one message to one participant,
and ``onMessageAdded``, a message posted to the conversation. A third,
``onParticipantAdded``, gives no event but teaches the conversation's customer
(``MessagingBinding.Address``), as a customer's own message does: receipts and
the business's messages name no customer, and are routed to the one learned.
Every other event type is acknowledged and counted, never forwarded. A
conversation's id derives from its ``ConversationSid``, so every message of it
lands in one conversation.
"""

from collections.abc import Mapping
from datetime import datetime

from app import addresses, ids
from app.lifecycle import Event, Translation, body, first, parties, timestamp
from app.routing import conversation_key, routable
from app.translate import STATUSES, check_sid, error_fields, raise_missing

KIND = "conversations"
DELIVERY_STATUSES = ("sent", "delivered", "undelivered", "failed", "read")
# onMessageAdded's Source when the business wrote the message, not a customer.
_BUSINESS_SOURCES = frozenset({"SDK", "API"})
# A channel Twilio names in Source, as the communicationType it is.
_SOURCES = {"SMS": "SMS", "MMS": "MMS", "WHATSAPP": "WHATSAPP", "RCS": "RCS"}
_SOURCES |= {"MESSENGER": "MESSENGER", "EMAIL": "EMAIL", "CHAT": "CHAT"}
# What a Conversations message is when nothing names its channel.
UNKNOWN_CHANNEL = "CONVERSATIONS"
PARTICIPANT_ADDED = "onParticipantAdded"


def translate(
    form: Mapping[str, str], received: datetime, conversation_id: str = ""
) -> Translation:
    """Translate one Conversations webhook into lifecycle events (maybe none)."""
    event_type = first(form, ("EventType",))
    if not event_type:
        raise_missing("EventType", "Conversations")
    if event_type not in ("onDeliveryUpdated", "onMessageAdded", PARTICIPANT_ADDED):
        return Translation.unknown_value(
            "conversations-event", event_type, "unknown_event_type"
        )
    conversation = first(form, ("ConversationSid",))
    check_sid(conversation, ("ConversationSid",), KIND)
    if event_type == PARTICIPANT_ADDED:
        return _participant(form, conversation)
    message = first(form, ("MessageSid",))
    check_sid(message, ("MessageSid",), KIND)
    conversation_id = conversation_id or ids.conversation_id_of(conversation)
    sids = (message, conversation, conversation_id)

    if event_type == "onDeliveryUpdated":
        return _receipt(form, received, *sids)

    return _added(form, received, *sids)


def _participant(form: Mapping[str, str], conversation: str) -> Translation:
    """Learn the customer a participant added on a messaging channel is.

    ``MessagingBinding.Address`` is the participant's own phone or WhatsApp
    address ("Conversation Participant Resource"); an SDK participant (an
    agent, with an ``Identity``) has none, and teaches nothing.
    """
    _, address = addresses.split(first(form, ("MessagingBinding.Address",)))
    if not routable(address):
        return Translation(KIND, "", ignored="participant_without_address")

    return Translation(
        KIND,
        "",
        customer=address,
        ignored="learned",
        learn=conversation_key(conversation),
    )


def _receipt(
    form: Mapping[str, str],
    received: datetime,
    message: str,
    conversation: str,
    conversation_id: str,
) -> Translation:
    """Translate a delivery receipt: one message's status for one participant."""
    status = first(form, ("Status",)).lower()
    if not status:
        raise_missing("Status", "onDeliveryUpdated")
    if status not in DELIVERY_STATUSES:
        return Translation.unknown_value(KIND, status, "unknown_status")
    row = STATUSES[KIND][status]
    participant = first(form, ("ParticipantSid",))
    if participant:
        check_sid(participant, ("ParticipantSid",), KIND)

    moment = timestamp(first(form, ("DateUpdated", "DateCreated")), received)
    event_body = body(
        row,
        moment,
        conversation_id,
        ids.communication_id(message),
        UNKNOWN_CHANNEL,
        row.direction or "",
    )
    event_body.update(error_fields(form))
    # A message to three participants has three receipts: each is its own order.
    communication = f"{message}/{participant}" if participant else message
    why = f"onDeliveryUpdated Status {status!r} is a row of the table"
    event = Event(communication, status, row.rank, event_body, why=why)

    # A receipt names no customer: it goes to the one its conversation taught.
    return Translation(KIND, status, [event], recall=conversation_key(conversation))


def _added(
    form: Mapping[str, str],
    received: datetime,
    message: str,
    conversation: str,
    conversation_id: str,
) -> Translation:
    """Translate a message added: received from a customer, or added by us."""
    source = first(form, ("Source",)).upper()
    author = first(form, ("Author",))
    channel, address = addresses.split(author)
    from_customer = source not in _BUSINESS_SOURCES and bool(
        channel or source in _SOURCES or _looks_like_phone(address)
    )
    status = "received" if from_customer else "added"
    row = STATUSES[KIND][status]
    channel = channel or _SOURCES.get(source, "")
    if from_customer and not channel:
        channel = "SMS"

    event_body = body(
        row,
        timestamp(first(form, ("DateCreated",)), received),
        conversation_id,
        ids.communication_id(message),
        channel or UNKNOWN_CHANNEL,
        row.direction or "",
    )
    event_body.update(parties(address, ""))
    who = "a customer" if from_customer else "the business"
    why = f"onMessageAdded by {who} (Source {source or 'absent'}) is {status!r}"
    event = Event(message, status, row.rank, event_body, why=why)

    if not from_customer:
        # The business's message: to the customer its conversation taught.
        recall = conversation_key(conversation)
        return Translation(KIND, status, [event], recall=recall)
    learn = conversation_key(conversation) if routable(address) else ""

    return Translation(KIND, status, [event], customer=address, learn=learn)


def _looks_like_phone(address: str) -> bool:
    """Tell whether an Author is a phone number (E.164) rather than an identity."""
    return address.startswith("+") and address[1:].isdigit()
