"""Tests for app.signature.verify_json: Event Streams' signed URL with bodySHA256."""

import hashlib

import pytest

from app.errors import SignatureError
from app.signature import verify_json

# Twilio's documented example ("Webhooks security"): auth token 12345.
BODY = b'{"property": "value", "boolean": true}'
URL = (
    "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256="
    "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
)
SIGNATURE = "a9nBmqA0ju/hNViExpshrM61xv4="


def test_the_documented_example_is_accepted():
    """Twilio's example body, URL and signature pass with token 12345."""
    verify_json(URL, BODY, SIGNATURE, ("12345",))


def test_another_token_among_several_is_tried():
    """The signature is checked against every token the bridge knows."""
    verify_json(URL, BODY, SIGNATURE, ("not-it", "12345"))


def test_a_body_changed_by_one_character_is_refused():
    """One character changed in the body: 403, because its hash no longer matches."""
    with pytest.raises(SignatureError) as raised:
        verify_json(URL, BODY.replace(b"value", b"valuf"), SIGNATURE, ("12345",))

    assert raised.value.status == 403
    assert raised.value.reason == "body_hash_invalid"


def test_a_url_without_body_sha256_is_refused():
    """A signed URL without bodySHA256 cannot vouch for the body: 403."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"

    with pytest.raises(SignatureError) as raised:
        verify_json(url, BODY, SIGNATURE, ("12345",))

    assert raised.value.status == 403
    assert raised.value.reason == "body_hash_missing"


def test_a_matching_hash_with_a_wrong_signature_is_refused():
    """The body matches its hash but the URL is not signed by the token: 403."""
    with pytest.raises(SignatureError) as raised:
        verify_json(URL, BODY, SIGNATURE, ("54321",))

    assert raised.value.status == 403
    assert raised.value.reason == "signature_invalid"


def test_a_changed_url_is_refused():
    """A body hash put into another URL does not carry the signature with it."""
    digest = hashlib.sha256(BODY).hexdigest()
    url = f"https://mycompany.com/other.php?bodySHA256={digest}"

    with pytest.raises(SignatureError):
        verify_json(url, BODY, SIGNATURE, ("12345",))


def test_no_signature_is_refused():
    """No X-Twilio-Signature at all: 403."""
    with pytest.raises(SignatureError) as raised:
        verify_json(URL, BODY, "", ("12345",))

    assert raised.value.reason == "signature_missing"


@pytest.mark.parametrize("given", ["%FF%FE", "%C3%A9" * 32, "é", "00\u0660"])
def test_a_body_sha256_that_is_not_hex_is_refused_with_403(given: str):
    """bodySHA256 with non-ASCII characters: 403 body_hash_invalid, not a 500."""
    url = f"https://mycompany.com/myapp.php?bodySHA256={given}"

    with pytest.raises(SignatureError) as raised:
        verify_json(url, BODY, SIGNATURE, ("12345",))

    assert raised.value.status == 403
    assert raised.value.reason == "body_hash_invalid"
