"""Check that a callback was signed by Twilio.

Twilio signs the exact URL it requested plus the sorted form parameters with
HMAC-SHA1 keyed by the account's auth token ("Webhooks security" in Twilio's
docs). So the URL is rebuilt from the configured public base URL and the raw
path and query string as they arrived, never from a URL the framework rebuilt,
and the form keeps every value of a repeated name.

Without a public base URL, the scheme and host come from ``X-Forwarded-Proto``
and ``X-Forwarded-Host`` only when the peer is a trusted proxy
(``FORWARDED_ALLOW_IPS``, the list gunicorn trusts too); anyone else's forwarded
headers change nothing. The token is chosen by the callback's ``AccountSid``.
"""

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlparse, urlsplit

from twilio.request_validator import add_port, remove_port

from app.errors import SignatureError

if TYPE_CHECKING:
    from app.config import IpNetwork, Settings

HEADER = "X-Twilio-Signature"
# A host, or a bracketed IPv6 address, with an optional port (RFC 3986 3.2.2).
_HOST = re.compile(r"^(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


class Tokens:
    """The auth tokens that may sign a callback, chosen by its AccountSid.

    Each account has one token, or two while its token rotates. Tokens not tied
    to an account (TWILIO_AUTH_TOKEN without TWILIO_ACCOUNT_SID) serve accounts
    that have none of their own. No account ever gets an empty tuple: an account
    without a token is refused.
    """

    def __init__(
        self, by_account: Mapping[str, tuple[str, ...]], anyone: tuple[str, ...] = ()
    ) -> None:
        self._by_account = {
            sid: tuple(t for t in ts if t) for sid, ts in by_account.items()
        }
        self._anyone = tuple(t for t in anyone if t)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Tokens":
        """Build the chooser from TWILIO_AUTH_TOKEN(S) and TWILIO_ACCOUNT_SID."""
        by_account = settings.account_tokens
        given = (settings.twilio_auth_token, settings.twilio_secondary_auth_token)
        primary = tuple(t for t in given if t)
        if not settings.twilio_account_sid:
            return cls(by_account, primary)
        sid = settings.twilio_account_sid
        by_account[sid] = (*primary, *by_account.get(sid, ()))

        return cls(by_account)

    @property
    def any_account(self) -> bool:
        """Whether callbacks of accounts not listed are checked with a shared token."""
        return bool(self._anyone)

    def for_account(self, account_sid: str) -> tuple[str, ...]:
        """Return the tokens that may sign a callback of ``account_sid``.

        Raises SignatureError (403) for an account with no token: there is no
        fall-back that skips the check.
        """
        tokens = self._by_account.get(account_sid) or self._anyone
        if not tokens and not account_sid:
            raise SignatureError(
                "The callback has no AccountSid, so no auth token can check it: "
                "Twilio sends one with every callback.",
                reason="account_unknown",
            )
        if not tokens:
            raise SignatureError(
                f"AccountSid {account_sid[:40]!r} is an account the bridge has no "
                "auth token for: add AccountSid:token to TWILIO_AUTH_TOKENS.",
                reason="account_unknown",
            )

        return tokens

    def for_accounts(self, accounts: set[str]) -> tuple[str, ...]:
        """Return the tokens that may sign a body naming ``accounts`` (Event Streams).

        One account, or none, is for_account's. Several get only a token shared
        by every account; without one, the 403 names them.
        """
        if len(accounts) <= 1:
            return self.for_account(next(iter(accounts), ""))
        if not self._anyone:
            named = ", ".join(repr(sid[:40]) for sid in sorted(accounts)[:5])
            raise SignatureError(
                f"The body's CloudEvents name {len(accounts)} accounts ({named}), "
                "and one body is checked with one account's token: give each "
                "account its own Event Streams sink.",
                reason="account_unknown",
            )

        return self._anyone

    def __repr__(self) -> str:
        return f"Tokens(accounts={sorted(self._by_account)}, any={self.any_account})"


def public_url(
    environ: Mapping[str, object],
    base_url: str,
    proxies: tuple["IpNetwork", ...] = (),
) -> str:
    """Return the URL Twilio requested: the public base plus the raw path and query.

    The base is ``base_url`` when set; otherwise the request's scheme and Host,
    or ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` when the peer is one of
    ``proxies``. A host that is not host[:port] raises SignatureError.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.startswith("/"):
        # PEP 3333: PATH_INFO holds the request's bytes decoded as latin-1.
        path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
        path = quote(path, safe="/;=,", encoding="latin-1")
        query = str(environ.get("QUERY_STRING", ""))
        raw = f"{path}?{query}" if query else path
    if not base_url:
        base_url = _request_base(environ, proxies)

    return base_url.rstrip("/") + raw


def _request_base(
    environ: Mapping[str, object], proxies: tuple["IpNetwork", ...]
) -> str:
    """Return scheme://host of the request, as a trusted proxy says it was."""
    scheme = str(environ.get("wsgi.url_scheme", "http"))
    host = str(environ.get("HTTP_HOST", ""))
    if _trusted(environ.get("REMOTE_ADDR"), proxies):
        # A proxy appends to these headers; the last value is the one it wrote.
        proto = _last(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
        scheme = proto if proto in ("http", "https") else scheme
        host = _last(environ.get("HTTP_X_FORWARDED_HOST")) or host
    if not _HOST.match(host):
        raise SignatureError(
            f"The host {host[:100]!r} cannot be part of a URL Twilio signed: set "
            "PUBLIC_BASE_URL to the public URL Twilio calls.",
            reason="signature_unverifiable",
        )

    return f"{scheme}://{host}"


def _trusted(peer: object, proxies: tuple["IpNetwork", ...]) -> bool:
    """Whether ``peer`` (REMOTE_ADDR) is in one of the trusted networks."""
    try:
        address = ipaddress.ip_address(str(peer))
    except ValueError:
        return False

    return any(address in network for network in proxies)


def _last(header: object) -> str:
    return str(header or "").rsplit(",", 1)[-1].strip()


def verify(
    url: str, form: Mapping[str, str], signature: str, tokens: tuple[str, ...]
) -> None:
    """Raise SignatureError unless ``signature`` signs ``url`` and ``form``.

    ``form`` is a MultiDict (or any mapping with ``getlist``), so that repeated
    names keep all their values as Twilio signed them.
    """
    if not signature:
        raise SignatureError(f"{HEADER} is missing.", reason="signature_missing")
    # compare_digest refuses non-ASCII str, so compare the bytes (any header).
    given = signature.encode("utf-8", "replace")
    signed = _signed_params(form)
    # The URL exactly as requested first: one HMAC for nearly every callback.
    if any(hmac.compare_digest(expected(t, url + signed), given) for t in tokens):
        return
    try:
        others = _other_urls(url)
    except ValueError as error:  # urlparse on a malformed port, such as :99999
        raise SignatureError(
            f"The URL {url[:200]!r} cannot be checked ({error}): set "
            "PUBLIC_BASE_URL to the public URL Twilio calls.",
            reason="signature_unverifiable",
        ) from error
    for token in tokens:
        for other in others:
            if hmac.compare_digest(expected(token, other + signed), given):
                return

    raise SignatureError(
        f"{HEADER} does not match: check PUBLIC_BASE_URL ({url[:500]} was checked) "
        "and the account's auth token.",
        reason="signature_invalid",
    )


def expected(token: str, signed: str) -> bytes:
    """Return Twilio's signature of ``signed``: base64 of its HMAC-SHA1 by ``token``."""
    digest = hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()

    return base64.b64encode(digest)


def _signed_params(form: Mapping[str, str]) -> str:
    """Return the form as Twilio appends it to the URL it signs.

    Each name in sorted order, followed by each of its distinct values in sorted
    order, with nothing between ("Webhooks security"; the twilio package's
    RequestValidator, which the tests sign with, does the same). A MultiDict
    gives every value of a repeated name; a plain mapping has one.
    """
    getlist = getattr(form, "getlist", None)
    parts = []
    for name in sorted(form):
        values = getlist(name) if getlist is not None else [form[name]]
        parts += [name + value for value in sorted(set(values))]

    return "".join(parts)


def _other_urls(url: str) -> list[str]:
    """Return the other forms of the URL Twilio may have signed: port added, removed.

    Twilio signs the URL with or without its default port, and its own
    RequestValidator checks both forms; either one that differs from the URL
    as requested is tried after it.
    """
    parsed = urlparse(url)

    return [u for u in (remove_port(parsed), add_port(parsed)) if u != url]


def verify_callback(
    url: str, form: Mapping[str, str], signature: str, tokens: Tokens
) -> None:
    """Verify a form callback with the tokens of the account it names."""
    if not signature:
        verify(url, form, signature, ())  # raises: the header is missing
    account_tokens = tokens.for_account(form.get("AccountSid", ""))

    verify(url, form, signature, account_tokens)


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
