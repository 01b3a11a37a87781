"""Check that a callback was signed by Twilio.

Twilio signs the exact URL it requested plus the sorted form parameters with
HMAC-SHA1 keyed by the account's auth token ("Webhooks security" in Twilio's
docs). So the URL is rebuilt from the configured public base URL and the raw
path and query string as they arrived, never from a URL the framework rebuilt,
and the form keeps every value of a repeated name.
"""

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs, quote, urlsplit

from twilio.request_validator import RequestValidator

from app.errors import SignatureError

HEADER = "X-Twilio-Signature"


def public_url(environ: Mapping[str, object], base_url: str) -> str:
    """Return the URL Twilio requested: ``base_url`` plus the raw path and query."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.startswith("/"):
        # PEP 3333: PATH_INFO holds the request's bytes decoded as latin-1.
        path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
        path = quote(path, safe="/;=,", encoding="latin-1")
        query = str(environ.get("QUERY_STRING", ""))
        raw = f"{path}?{query}" if query else path
    if not base_url:
        scheme = environ.get("wsgi.url_scheme", "http")
        base_url = f"{scheme}://{environ.get('HTTP_HOST', '')}"

    return base_url.rstrip("/") + raw


def verify(url: str, form: object, signature: str, tokens: tuple[str, ...]) -> None:
    """Raise SignatureError unless ``signature`` signs ``url`` and ``form``.

    ``form`` is a MultiDict (or any mapping with ``getlist``), so that repeated
    names keep all their values as Twilio signed them.
    """
    if not signature:
        raise SignatureError(f"{HEADER} is missing.", reason="signature_missing")
    for token in tokens:
        try:
            if RequestValidator(token).validate(url, form, signature):
                return
        except ValueError as error:  # urlparse on a malformed Host, such as x:abc
            raise SignatureError(
                f"The URL {url[:200]!r} cannot be checked ({error}): set "
                "PUBLIC_BASE_URL to the public URL Twilio calls.",
                reason="signature_unverifiable",
            ) from error

    raise SignatureError(
        f"{HEADER} does not match: check PUBLIC_BASE_URL ({url} was checked) "
        "and TWILIO_AUTH_TOKEN.",
        reason="signature_invalid",
    )


def verify_json(url: str, body: bytes, signature: str, tokens: tuple[str, ...]) -> None:
    """Raise SignatureError unless ``signature`` signs ``url`` and it ``body``.

    A JSON webhook (Event Streams) is signed over its URL alone, with no form
    parameters; the URL carries ``bodySHA256``, the hex SHA-256 of the raw body,
    so the body is checked against that ("Webhooks security" in Twilio's docs).
    """
    if not signature:
        raise SignatureError(f"{HEADER} is missing.", reason="signature_missing")
    try:
        given = parse_qs(urlsplit(url).query).get("bodySHA256", [""])[0]
    except ValueError as error:
        raise SignatureError(
            f"The URL {url[:200]!r} cannot be read ({error}).",
            reason="signature_unverifiable",
        ) from error
    if not given:
        raise SignatureError(
            "The URL has no bodySHA256: a JSON callback is signed over a URL "
            "that carries its body's SHA-256; point the sink at this URL as "
            "Twilio calls it.",
            reason="body_hash_missing",
        )
    # compare_digest refuses non-ASCII str, so compare the bytes (any value).
    expected = hashlib.sha256(body).hexdigest().encode()
    if not hmac.compare_digest(expected, given.lower().encode("utf-8", "replace")):
        raise SignatureError(
            "The body's SHA-256 is not the URL's bodySHA256: the body was changed.",
            reason="body_hash_invalid",
        )

    verify(url, {}, signature, tokens)
