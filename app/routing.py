"""Decide where a callback's events go: a Memory store and a profile.

The store is the ``storeId`` query parameter, else MEMORY_STORE_ID. The profile
is the ``profileId`` query parameter, else the customer's phone number, which
the worker resolves through the Profiles Lookup endpoint. A buffer is keyed by
the pair, written ``store/id:profileId`` or ``store/phone:+1…``.
"""

import re
from collections.abc import Mapping

from app.contract import CONVERSATION_ID
from app.errors import CallbackError, UnroutableError

# Store and profile ids are TypeIDs (DESIGN.md): a lowercase prefix, "_", and 26
# Crockford base32 characters. Anything else is a typo, and would end up in a URL
# path and a Redis key.
_ID = re.compile(r"^[a-z](?:[a-z_]{0,61}[a-z])?_[0-7][0-9a-hjkmnp-tv-z]{25}$")
# A customer the Lookup can find by phone: E.164, or the digits of a short code.
_PHONE = re.compile(r"^\+?[0-9]{3,15}$")


def store_for(query: Mapping[str, str], default_store: str) -> str:
    """Return the storeId for a callback, or raise UnroutableError."""
    store = query.get("storeId", "") or default_store
    if not store:
        raise UnroutableError(
            "No Memory store: add ?storeId=… to the callback URL, "
            "or set MEMORY_STORE_ID.",
            reason="no_store",
        )
    if not _ID.fullmatch(store):
        raise CallbackError(
            f"storeId {store[:80]!r} is not a store id: give its TypeID, "
            "like mem_store_01h….",
            reason="bad_store",
        )

    return store


def conversation_for(query: Mapping[str, str]) -> str:
    """Return the conversationId given in the query, or '' to derive one."""
    given = query.get("conversationId", "")
    if given and not CONVERSATION_ID.fullmatch(given):
        raise CallbackError(
            f"conversationId {given[:80]!r} does not match {CONVERSATION_ID.pattern}.",
            reason="bad_conversation",
        )

    return given


def member_for(query: Mapping[str, str], store: str, customer: str) -> str:
    """Return the buffer member of the profile, or '' when none can be named."""
    profile = query.get("profileId", "")
    if profile:
        if not _ID.fullmatch(profile):
            raise CallbackError(
                f"profileId {profile[:80]!r} is not a profile id: give its TypeID, "
                "like mem_profile_01h….",
                reason="bad_profile",
            )
        return f"{store}/id:{profile}"
    if _PHONE.fullmatch(customer):
        return f"{store}/phone:{customer}"

    return ""


def parse_member(member: str) -> tuple[str, str, str]:
    """Split a member into its store, kind (``id`` or ``phone``) and value."""
    store, _, ref = member.partition("/")
    kind, _, value = ref.partition(":")

    return store, kind, value
