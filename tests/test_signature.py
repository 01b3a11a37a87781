"""Tests for app.signature: the public URL, and X-Twilio-Signature checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from app.errors import SignatureError
from app.signature import public_url, verify

TOKEN = "12345"
OTHER_TOKEN = "54321"
BASE_URL = "https://bridge.example.com"
URL = f"{BASE_URL}/twilio/messaging?storeId=mem_store_01jf8x0m6ke3v9zq7r4t5w2y1a"
# Twilio's own example of a callback that repeats a parameter name, and its
# signature under the auth token 12345 (twilio-python's validation tests).
REPEATED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
REPEATED_BODY = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234"
REPEATED_SIGNATURE = "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def parse(body: str) -> MultiDict[str, str]:
    """Parse a form body the way the bridge receives it, keeping every value."""
    return MultiDict(parse_qsl(body, keep_blank_values=True))


def callback(**changes: str) -> MultiDict[str, str]:
    """Return a messaging status callback form, then these changes."""
    form = {
        "MessageSid": "SM00000000000000000000000000000001",
        "MessageStatus": "delivered",
        "AccountSid": "AC00000000000000000000000000000000",
        "From": "+15005550001",
        "To": "+15005550006",
        "ErrorCode": "",
    }
    form.update(changes)

    return MultiDict(form)


def sign(url: str, form: Any, token: str = TOKEN) -> str:
    """Return the signature Twilio would send for ``url`` and ``form``."""
    return RequestValidator(token).compute_signature(url, form)


def test_repeated_names_are_accepted_with_every_value() -> None:
    """A form repeating a name is accepted when every value is kept."""
    verify(REPEATED_URL, parse(REPEATED_BODY), REPEATED_SIGNATURE, (TOKEN,))


@pytest.mark.parametrize("flatten", [dict, MultiDict.to_dict])
def test_repeated_names_flattened_to_a_dict_are_refused(flatten: Any) -> None:
    """The same form flattened to a plain dict, losing values, is refused."""
    flat = flatten(parse(REPEATED_BODY))
    assert isinstance(flat, dict)
    assert not isinstance(flat, MultiDict)

    with pytest.raises(SignatureError):
        verify(REPEATED_URL, flat, REPEATED_SIGNATURE, (TOKEN,))


def test_a_signature_made_by_twilio_is_accepted() -> None:
    """A signature computed as Twilio does over the URL and the form is accepted."""
    form = callback()

    verify(URL, form, sign(URL, form), (TOKEN,))


@pytest.mark.parametrize(
    ("url", "form", "signed_with"),
    [
        (URL, callback(), OTHER_TOKEN),
        (URL, callback(MessageStatus="read"), TOKEN),
        (URL, callback(To="+15005550009"), TOKEN),
        (URL, callback(Extra="1"), TOKEN),
        (URL.replace("messaging", "voice"), callback(), TOKEN),
        (URL.replace("https", "http"), callback(), TOKEN),
        (URL + "&profileId=mem_profile_01jf8x0m6ke3v9zq7r4t5w2y1b", callback(), TOKEN),
    ],
    ids=[
        "wrong-token",
        "changed-status",
        "changed-to",
        "added-field",
        "changed-path",
        "changed-scheme",
        "added-query",
    ],
)
def test_a_signature_that_does_not_match_is_refused(
    url: str, form: MultiDict[str, str], signed_with: str
) -> None:
    """A signature for another token, another form or another URL is refused."""
    signature = sign(URL, callback(), signed_with)

    with pytest.raises(SignatureError) as caught:
        verify(url, form, signature, (TOKEN,))

    assert caught.value.status == 403
    assert caught.value.reason == "signature_invalid"
    assert url in str(caught.value)


def test_a_missing_signature_is_refused() -> None:
    """A callback without X-Twilio-Signature is refused as signature_missing."""
    with pytest.raises(SignatureError) as caught:
        verify(URL, callback(), "", (TOKEN,))

    assert caught.value.status == 403
    assert caught.value.reason == "signature_missing"


def test_no_token_accepts_nothing() -> None:
    """With no auth token configured, no signature is accepted."""
    form = callback()

    with pytest.raises(SignatureError):
        verify(URL, form, sign(URL, form), ())


@pytest.mark.parametrize(
    "tokens", [(OTHER_TOKEN, TOKEN), (TOKEN, OTHER_TOKEN)], ids=["second", "first"]
)
def test_either_token_is_accepted_during_rotation(tokens: tuple[str, ...]) -> None:
    """While tokens rotate, a signature under any configured token is accepted."""
    form = callback()

    verify(URL, form, sign(URL, form), tokens)


@pytest.mark.parametrize("name", ["RAW_URI", "REQUEST_URI"])
@pytest.mark.parametrize(
    "raw",
    [
        "/twilio/messaging",
        "/twilio/messaging?b=2&a=%2B1",
        "/twilio/messaging?a=+1&b=%2b1&a=",
        "/twilio/voice?x=%E2%9C%93;y=1",
    ],
)
def test_the_raw_request_uri_is_kept_verbatim(name: str, raw: str) -> None:
    """The server's raw request URI is appended as it came, encoding and order."""
    environ = {
        name: raw,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/decoded/elsewhere",
        "QUERY_STRING": "a=%2B1&b=2",
    }

    assert public_url(environ, BASE_URL) == BASE_URL + raw


def test_gunicorn_raw_uri_comes_before_request_uri() -> None:
    """When both are present, gunicorn's RAW_URI is the one used."""
    environ = {"RAW_URI": "/twilio/messaging?a=1", "REQUEST_URI": "/other"}

    assert public_url(environ, BASE_URL) == f"{BASE_URL}/twilio/messaging?a=1"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {
                "SCRIPT_NAME": "/bridge",
                "PATH_INFO": "/twilio/messaging",
                "QUERY_STRING": "b=2&a=%2B1",
            },
            "/bridge/twilio/messaging?b=2&a=%2B1",
        ),
        (
            {"SCRIPT_NAME": "", "PATH_INFO": "/twilio/voice", "QUERY_STRING": ""},
            "/twilio/voice",
        ),
        ({"PATH_INFO": "/twilio/a b"}, "/twilio/a%20b"),
        ({"RAW_URI": "http://proxy.example/x", "PATH_INFO": "/x"}, "/x"),
    ],
    ids=["script-name-and-query", "no-query", "space-quoted", "absolute-raw-uri"],
)
def test_without_a_raw_uri_the_path_is_rebuilt(
    environ: dict[str, str], expected: str
) -> None:
    """Without a raw URI, SCRIPT_NAME, PATH_INFO and QUERY_STRING are joined."""
    assert public_url(environ, BASE_URL) == BASE_URL + expected


def test_a_non_ascii_path_is_quoted_from_its_original_bytes() -> None:
    """A rebuilt non-ASCII path is quoted from the bytes that came on the wire."""
    wire = "/twilio/café".encode()
    environ = {"SCRIPT_NAME": "", "PATH_INFO": wire.decode("latin-1")}

    assert public_url(environ, BASE_URL) == f"{BASE_URL}/twilio/caf%C3%A9"


@pytest.mark.parametrize("base_url", [BASE_URL + "/", BASE_URL + "//", BASE_URL])
def test_a_trailing_slash_on_the_base_url_is_dropped(base_url: str) -> None:
    """A base URL written with a trailing slash does not double the slash."""
    environ = {"RAW_URI": "/twilio/messaging"}

    assert public_url(environ, base_url) == f"{BASE_URL}/twilio/messaging"


def test_a_base_url_with_a_path_keeps_it() -> None:
    """A base URL with a path prefix keeps the prefix before the raw URI."""
    environ = {"RAW_URI": "/twilio/messaging"}

    url = public_url(environ, "https://example.com/bridge/")

    assert url == "https://example.com/bridge/twilio/messaging"


def test_without_a_base_url_the_request_host_is_used() -> None:
    """With no base URL, the scheme and Host header of the request are used."""
    environ = {
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "bridge.example.com:8443",
        "RAW_URI": "/twilio/messaging?a=%2B1",
    }

    url = public_url(environ, "")

    assert url == "https://bridge.example.com:8443/twilio/messaging?a=%2B1"


def test_the_public_url_verifies_what_twilio_signed() -> None:
    """A callback signed over its exact URL verifies against the rebuilt URL."""
    raw = "/twilio/messaging?b=2&a=%2B1"
    form = callback()
    signature = sign(BASE_URL + raw, form)
    environ = {"RAW_URI": raw, "PATH_INFO": "/twilio/messaging", "QUERY_STRING": "x"}

    verify(public_url(environ, BASE_URL + "/"), form, signature, (TOKEN,))


def test_a_url_re_encoded_by_the_framework_is_refused() -> None:
    """The same callback checked against a re-encoded URL is refused."""
    form = callback()
    signature = sign(f"{BASE_URL}/twilio/messaging?b=2&a=%2B1", form)

    with pytest.raises(SignatureError):
        verify(f"{BASE_URL}/twilio/messaging?b=2&a=%2b1", form, signature, (TOKEN,))


def test_a_malformed_host_is_refused_not_a_crash() -> None:
    """With no PUBLIC_BASE_URL, a Host like x:abc gets a SignatureError, not a 500."""
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "x:abc", "RAW_URI": "/t"}
    url = public_url(environ, "")

    with pytest.raises(SignatureError) as raised:
        verify(url, MultiDict({"a": "1"}), "c2ln", ("12345",))

    assert raised.value.status == 403
    assert "PUBLIC_BASE_URL" in str(raised.value)
