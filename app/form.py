"""Read a callback's form body strictly, so hostile input gets a clear 4xx.

``application/x-www-form-urlencoded`` is name=value pairs joined by ``&``, with
``+`` for a space and ``%XX`` escapes of UTF-8 bytes (the WHATWG URL standard,
"application/x-www-form-urlencoded parsing"). Browsers' parsers pass a stray
``%`` or bytes that are not UTF-8 through as they are; Twilio never sends them,
and a value the bridge cannot read exactly is a value whose signature it cannot
check, so they are refused here instead.
"""

import re
from urllib.parse import unquote_to_bytes

from werkzeug.datastructures import MultiDict

from app.errors import CallbackError

# A % not followed by two hex digits.
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(body: bytes, max_fields: int) -> MultiDict[str, str]:
    """Return the form in ``body``, keeping every value of a repeated name.

    Raises CallbackError: 400 for a body that is not valid form encoding of
    UTF-8 text, 413 for more than ``max_fields`` fields.
    """
    pairs = [pair for pair in body.split(b"&") if pair]
    if len(pairs) > max_fields:
        raise CallbackError(
            f"The form has {len(pairs)} fields, more than BRIDGE_MAX_FORM_FIELDS "
            f"({max_fields}): a Twilio callback has far fewer.",
            reason="too_many_fields",
            status=413,
        )
    bad = _BAD_ESCAPE.search(body)
    if bad:
        raise CallbackError(
            f"The form has a '%' at byte {bad.start()} that is not a %XX escape: "
            "encode it as %25.",
            reason="malformed_form",
        )
    form: MultiDict[str, str] = MultiDict()
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        form.add(_decode(name), _decode(value))

    return form


def _decode(part: bytes) -> str:
    """Turn one encoded name or value into text, refusing bytes that are not UTF-8."""
    raw = part
    if b"%" in part or b"+" in part:  # most names and many values have neither
        raw = unquote_to_bytes(part.replace(b"+", b" "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CallbackError(
            f"The form holds bytes that are not UTF-8 (at byte {error.start} of a "
            "field): send the text as UTF-8, percent-encoded.",
            reason="malformed_form",
        ) from error
