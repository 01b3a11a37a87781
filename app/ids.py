"""Deterministic TypeIDs for the ids Twilio's callbacks do not carry.

Twilio's callbacks name messages and calls by SID (``SM…``, ``CA…``); the Memory
API wants TypeIDs. A UUIDv5 of the SID under a fixed namespace gives the same id
for the same SID on every process and every restart, so retries and duplicates
land on the same communication.
"""

import uuid
from functools import lru_cache

import uuid_utils
from typeid import TypeID

# Fixed forever: changing it would give every known communication a new id.
_NAMESPACE = uuid.UUID("6f1c2a4e-3d5b-5c7e-9a1b-2c3d4e5f6a7b")


@lru_cache(maxsize=8192)  # pure; one id is derived several times per callback
def _typeid(prefix: str, name: str) -> str:
    """Return the TypeID with ``prefix`` whose suffix is the UUIDv5 of ``name``."""
    suffix = uuid_utils.UUID(bytes=uuid.uuid5(_NAMESPACE, name).bytes)

    return str(TypeID.from_uuid(prefix=prefix, suffix=suffix))


def communication_id(sid: str) -> str:
    """Return the communication id of a message or call SID."""
    return _typeid("comms_communication", f"communication:{sid}")


def conversation_id(business: str, customer: str) -> str:
    """Return the conversation id of a business address and a customer address."""
    return _typeid("conv_conversation", f"conversation:{business}|{customer}")


def participant_id(address: str) -> str:
    """Return the participant id of an address (a phone number, a sender id)."""
    return _typeid("comms_participant", f"participant:{address}")


def conversation_id_of(sid: str) -> str:
    """Return the conversation id of a Twilio Conversation (``CH…``)."""
    return _typeid("conv_conversation", f"conversation-sid:{sid}")
