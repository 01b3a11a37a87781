"""Decide where a callback's events go: a Memory store and a profile.

The store is the ``storeId`` query parameter, else MEMORY_STORE_ID. The profile
is the ``profileId`` query parameter, else the customer's phone number, which
the worker resolves through the Profiles Lookup endpoint. A buffer is keyed by
the pair, written ``store/id:profileId`` or ``store/phone:+1…``.

Some callbacks do not name their customer, so the bridge remembers who it was
(in Redis, ``{prefix}:conv:{ConversationSid}`` and ``{prefix}:call:{CallSid}``):
a Conversations receipt, or a message the business added, goes to the customer
its conversation's ``onParticipantAdded`` or customer message named; a call's
child leg (dialled to an agent) goes to its parent call's customer.
"""

import re
from collections.abc import Mapping

from app.contract import CONVERSATION_ID
from app.errors import CallbackError, UnroutableError

# Store and profile ids are TypeIDs (DESIGN.md): a lowercase prefix, "_", and 26
# Crockford base32 characters. Anything else is a typo, and would end up in a URL
# path and a Redis key.
_ID = re.compile(r"^[a-z](?:[a-z_]{0,61}[a-z])?_[0-7][0-9a-hjkmnp-tv-z]{25}$")
_EXAMPLES = {"storeId": "mem_store_01h…", "profileId": "mem_profile_01h…"}
# A customer the Lookup can find by phone: E.164, or the digits of a short code.
_PHONE = re.compile(r"^\+?[0-9]{3,15}$")


def check(query: Mapping[str, str]) -> None:
    """Refuse a callback URL whose storeId, profileId or conversationId is malformed."""
    for name in _EXAMPLES:
        _id(query, name)
    conversation_for(query)


def store_for(query: Mapping[str, str], default_store: str) -> str:
    """Return the storeId for a callback, or raise UnroutableError."""
    store = _id(query, "storeId") or default_store
    if not store:
        raise UnroutableError(
            "No Memory store: add ?storeId=… to the callback URL, "
            "or set MEMORY_STORE_ID.",
            reason="no_store",
        )

    return store


def conversation_for(query: Mapping[str, str]) -> str:
    """Return the conversationId given in the query, or '' to derive one."""
    value = given(query, "conversationId")
    if value and not CONVERSATION_ID.fullmatch(value):
        raise CallbackError(
            f"conversationId {value[:80]!r} does not match {CONVERSATION_ID.pattern}.",
            reason="bad_conversation",
        )

    return value


def member_for(query: Mapping[str, str], store: str, customer: str) -> str:
    """Return the buffer member of the profile, or '' when none can be named."""
    profile = _id(query, "profileId")
    if profile:
        return f"{store}/id:{profile}"
    if routable(customer):
        return f"{store}/phone:{customer}"

    return ""


def routable(customer: str) -> bool:
    """Tell whether ``customer`` can name a profile (a phone the Lookup can find)."""
    return bool(_PHONE.fullmatch(customer))


def conversation_key(conversation_sid: str) -> str:
    """Return the routing memory key of a Conversation's customer."""
    return f"conv:{conversation_sid}"


def call_key(call_sid: str) -> str:
    """Return the routing memory key of a parent call's customer."""
    return f"call:{call_sid}"


def parse_member(member: str) -> tuple[str, str, str]:
    """Split a member into its store, kind (``id`` or ``phone``) and value."""
    store, _, ref = member.partition("/")
    kind, _, value = ref.partition(":")

    return store, kind, value


def given(query: Mapping[str, str], name: str) -> str:
    """Return a query parameter, or '' when the URL has none.

    Asked first with ``in``: werkzeug's MultiDict answers ``get`` for a missing
    name by raising and catching an exception, and most callback URLs name none.
    """
    return query[name] if name in query else ""  # noqa: SIM401 (see above)


def _id(query: Mapping[str, str], name: str) -> str:
    """Return the TypeID given as ``name`` in the query ('' if none), or refuse it."""
    value = given(query, name)
    if value and not _ID.fullmatch(value):
        raise CallbackError(
            f"{name} {value[:80]!r} is not a TypeID: give it like {_EXAMPLES[name]}",
            reason=f"bad_{name.removesuffix('Id')}",
        )

    return value
