"""Addresses as Twilio writes them: a channel prefix, then a number or a name.

``whatsapp:+1…``, ``rcs:+1…``, ``messenger:123…``, ``sip:alice@example.com`` and
``client:alice`` name a channel; the bridge strips the prefix from the address and
lets it set the communicationType. Phone numbers are normalised to E.164 with the
``phonenumbers`` library; short codes and alphanumeric sender ids have no country
and are kept exactly as they came.
"""

from functools import lru_cache

import phonenumbers

# Prefixes Twilio puts before an address (Messaging "Channels", Voice SIP and
# Client), and the communicationType each one means.
CHANNELS = {
    "whatsapp": "WHATSAPP",
    "rcs": "RCS",
    "messenger": "MESSENGER",
    "sip": "SIP",
    "client": "CLIENT",
}
# What may appear in a written phone number besides digits ("+1 (500) 555-0006").
_PHONE_MARKS = frozenset("+0123456789 ()-./")


def split(raw: str) -> tuple[str, str]:
    """Return the channel type ('' if none) and the bare, normalised address."""
    raw = raw.strip()
    prefix, colon, rest = raw.partition(":")
    if colon and prefix.lower() in CHANNELS:
        return CHANNELS[prefix.lower()], normalise(rest)

    return "", normalise(raw)


# Parsing costs ~0.3 ms; a business sends from few numbers to many repeat ones.
@lru_cache(maxsize=8192)
def normalise(address: str) -> str:
    """Return a phone number in E.164; anything else unchanged, only trimmed.

    Only numbers written with a leading ``+`` carry their country, so only those
    are rewritten: ``15005550006`` could be a long code or a short code elsewhere.
    """
    address = address.strip()
    if not address.startswith("+") or not set(address) <= _PHONE_MARKS:
        return address
    try:
        number = phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return address
    if not phonenumbers.is_possible_number(number):
        return address

    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
