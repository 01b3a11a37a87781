"""Tests for app.signature: the public URL, and X-Twilio-Signature checks."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

import conftest
from app import config
from app.errors import ConfigError, SignatureError
from app.form import parse_form
from app.signature import HEADER, Tokens, public_url, verify, verify_callback

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

    with pytest.raises(SignatureError) as raised:
        verify(public_url(environ, ""), MultiDict({"a": "1"}), "c2ln", ("12345",))

    assert raised.value.status == 403
    assert "PUBLIC_BASE_URL" in str(raised.value)


# Twilio's documented example ("Webhooks security"): auth token 12345, a call
# to https://mycompany.com/myapp.php?foo=1&bar=2 with this form, and its signature.
DOC_PATH = "/myapp.php?foo=1&bar=2"
DOC_BODY = (
    b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234"
    b"&From=%2B14158675309&To=%2B18005551212"
)
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
PROXY = "127.0.0.1"
STRANGER = "203.0.113.9"
AC111 = "AC" + "1" * 32
AC222 = "AC" + "2" * 32
LOCAL_PROXIES = config.load({"forwarded_allow_ips": PROXY}, environ={})


def proxied(peer: str, **headers: str) -> dict[str, str]:
    """Return the environ of a plain-HTTP request for the documented example."""
    environ = {
        "REMOTE_ADDR": peer,
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "mycompany.com",
        "HTTP_X_FORWARDED_PROTO": "https",
        "RAW_URI": DOC_PATH,
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value

    return environ


def doc_url(environ: dict[str, str], allow: str = PROXY) -> str:
    """Rebuild the public URL with no PUBLIC_BASE_URL, trusting ``allow``."""
    settings = config.load({"forwarded_allow_ips": allow}, environ={})

    return public_url(environ, "", settings.forwarded_networks)


def test_the_documented_request_from_a_trusted_proxy_is_accepted() -> None:
    """Twilio's example, plain HTTP from a trusted proxy saying https, is accepted."""
    url = doc_url(proxied(PROXY))
    any_account = Tokens.from_settings(config.load({"twilio_auth_token": TOKEN}, {}))

    assert url == "https://mycompany.com/myapp.php?foo=1&bar=2"
    verify_callback(url, parse_form(DOC_BODY, 256), DOC_SIGNATURE, any_account)


@pytest.mark.parametrize("peer", [PROXY, STRANGER])
def test_a_spoofed_forwarded_host_is_refused(peer: str) -> None:
    """The example with X-Forwarded-Host: evil.example is refused, from anyone."""
    url = doc_url(proxied(peer, x_forwarded_host="evil.example"))

    with pytest.raises(SignatureError):
        verify(url, parse_form(DOC_BODY, 256), DOC_SIGNATURE, (TOKEN,))


def test_forwarded_headers_from_an_untrusted_peer_change_nothing() -> None:
    """From a peer not in FORWARDED_ALLOW_IPS, the request's own scheme and Host."""
    spoofed = proxied(STRANGER, x_forwarded_host="evil.example")
    plain = {k: v for k, v in spoofed.items() if "FORWARDED" not in k}

    assert doc_url(spoofed) == "http://mycompany.com/myapp.php?foo=1&bar=2"
    assert doc_url(spoofed) == doc_url(plain)
    assert doc_url(proxied(PROXY), allow="10.0.0.0/8") == doc_url(plain)


def test_a_request_signed_for_the_spoofed_host_is_refused_from_a_stranger() -> None:
    """A real signature for evil.example replayed with X-Forwarded-Host is refused."""
    form = parse_form(DOC_BODY, 256)
    evil = sign("https://evil.example" + DOC_PATH, form)
    environ = proxied(STRANGER, x_forwarded_host="evil.example")

    with pytest.raises(SignatureError):
        verify(doc_url(environ), form, evil, (TOKEN,))
    verify(doc_url(environ, allow=f"{PROXY},{STRANGER}"), form, evil, (TOKEN,))


@pytest.mark.parametrize(
    ("allow", "peer", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8, 192.0.2.7", "10.20.30.40", True),
        ("10.0.0.0/8, 192.0.2.7", "192.0.2.7", True),
        ("10.0.0.0/8, 192.0.2.7", "192.0.2.8", False),
        ("::1", "::1", True),
        ("*", "198.51.100.1", True),
        ("*", "2001:db8::1", True),
        ("127.0.0.1", "", False),
        ("*", "/run/gunicorn.sock", False),
        ("", "127.0.0.1", False),
    ],
)
def test_only_peers_in_forwarded_allow_ips_are_trusted(
    allow: str, peer: str, trusted: bool
) -> None:
    """FORWARDED_ALLOW_IPS takes addresses, networks and *; nothing else is trusted."""
    url = doc_url(proxied(peer, x_forwarded_host="proxy.example"), allow=allow)

    expected = "https://proxy.example" if trusted else "http://mycompany.com"
    assert url == expected + DOC_PATH


def test_the_last_forwarded_value_is_the_proxys() -> None:
    """A proxy appends to X-Forwarded-*: the last value, the one it wrote, counts."""
    environ = proxied(
        PROXY,
        x_forwarded_host="evil.example, mycompany.com",
        x_forwarded_proto="http, https",
    )

    assert doc_url(environ) == "https://mycompany.com" + DOC_PATH


def test_a_forwarded_proto_that_is_not_http_keeps_the_request_scheme() -> None:
    """X-Forwarded-Proto: gopher from a trusted proxy is ignored, not used."""
    assert doc_url(proxied(PROXY, x_forwarded_proto="gopher")).startswith("http://")


def test_a_base_url_beats_every_forwarded_header() -> None:
    """With PUBLIC_BASE_URL set, even a trusted proxy's headers change nothing."""
    environ = proxied(PROXY, x_forwarded_host="evil.example")
    networks = LOCAL_PROXIES.forwarded_networks

    assert public_url(environ, BASE_URL, networks) == BASE_URL + DOC_PATH


@pytest.mark.parametrize(
    "host", ["evil.example/x?", "a b", "x:abc", "", "[::1", "h:123456", "é.example"]
)
def test_a_malformed_host_cannot_be_checked(host: str) -> None:
    """A Host (or forwarded host) that is not host[:port] is refused as unverifiable."""
    environs = [proxied(STRANGER, host=host, x_forwarded_host="mycompany.com")]
    if host:  # an empty X-Forwarded-Host leaves the Host as it is
        environs.append(proxied(PROXY, x_forwarded_host=host))
    for environ in environs:
        with pytest.raises(SignatureError) as raised:
            doc_url(environ)

        assert raised.value.reason == "signature_unverifiable"


# The token chooser: which tokens may sign a callback of a given account.


def tokens(**settings: str) -> Tokens:
    """Return the chooser that the web process would build from these settings."""
    api_key = {"twilio_api_key_sid": "SK" + "0" * 32, "twilio_api_key_secret": "s"}

    return Tokens.from_settings(config.load({**api_key, **settings}, {}).check())


def signed(account: str, token: str) -> tuple[MultiDict[str, str], str]:
    """Return a callback of ``account`` and its signature under ``token``."""
    form = callback(AccountSid=account)

    return form, sign(URL, form, token)


def test_an_account_in_the_map_is_checked_with_its_token() -> None:
    """AccountSid=AC111… signed with its own token is accepted when it is listed."""
    chooser = tokens(
        twilio_auth_token=TOKEN,
        twilio_account_sid=AC222,
        twilio_auth_tokens=f"{AC111}:token-111",
    )

    verify_callback(URL, *signed(AC111, "token-111"), chooser)
    verify_callback(URL, *signed(AC222, TOKEN), chooser)


def test_an_account_not_configured_is_refused() -> None:
    """AccountSid=AC111… is refused with 403 when only another account is set."""
    chooser = tokens(twilio_auth_token=TOKEN, twilio_account_sid=AC222)

    for token in ("token-111", TOKEN):
        with pytest.raises(SignatureError) as raised:
            verify_callback(URL, *signed(AC111, token), chooser)
        assert (raised.value.status, raised.value.reason) == (403, "account_unknown")
        assert AC111 in str(raised.value)


def test_one_accounts_token_does_not_sign_for_another() -> None:
    """A callback naming AC111… signed with AC222…'s token is refused."""
    chooser = tokens(twilio_auth_tokens=f"{AC111}:token-111,{AC222}:token-222")

    with pytest.raises(SignatureError) as raised:
        verify_callback(URL, *signed(AC111, "token-222"), chooser)

    assert raised.value.reason == "signature_invalid"


def test_a_callback_without_account_sid_is_refused_when_accounts_are_set() -> None:
    """With TWILIO_ACCOUNT_SID set, a callback naming no account is refused."""
    chooser = tokens(twilio_auth_token=TOKEN, twilio_account_sid=AC222)
    form = callback()
    del form["AccountSid"]

    with pytest.raises(SignatureError) as raised:
        verify_callback(URL, form, sign(URL, form), chooser)

    assert raised.value.reason == "account_unknown"


@pytest.mark.parametrize(
    "settings",
    [
        {"twilio_auth_tokens": f"{AC111}:new-token,{AC111}:old-token"},
        {
            "twilio_account_sid": AC111,
            "twilio_auth_token": "new-token",
            "twilio_secondary_auth_token": "old-token",
        },
        {"twilio_auth_token": "new-token", "twilio_secondary_auth_token": "old-token"},
    ],
    ids=["listed-twice", "secondary-token", "secondary-without-account-sid"],
)
def test_during_a_rotation_the_old_and_new_tokens_are_accepted(
    settings: dict[str, str],
) -> None:
    """While a token rotates, both are accepted, and still no third one."""
    chooser = tokens(**settings)

    verify_callback(URL, *signed(AC111, "new-token"), chooser)
    verify_callback(URL, *signed(AC111, "old-token"), chooser)
    with pytest.raises(SignatureError):
        verify_callback(URL, *signed(AC111, "other-token"), chooser)
    with pytest.raises(SignatureError):
        verify_callback(URL, callback(AccountSid=AC111), "", chooser)


def test_without_an_account_sid_the_token_serves_unlisted_accounts_only() -> None:
    """With TWILIO_AUTH_TOKEN alone, listed accounts still need their own token."""
    chooser = tokens(twilio_auth_token=TOKEN, twilio_auth_tokens=f"{AC111}:token-111")

    assert chooser.any_account
    verify_callback(URL, *signed(AC222, TOKEN), chooser)
    with pytest.raises(SignatureError):
        verify_callback(URL, *signed(AC111, TOKEN), chooser)


def test_the_chooser_never_shows_a_token() -> None:
    """repr() of the chooser names the accounts, not their tokens."""
    chooser = tokens(twilio_auth_token="tok-main", twilio_auth_tokens=f"{AC111}:tok-1")

    assert "tok-" not in repr(chooser)
    assert AC111 in repr(chooser)


@pytest.mark.parametrize(
    "entries",
    ["AC111:tok", f"{AC111}:", f"{AC111}", f"{AC111}=tok", f"SK{'1' * 32}:tok"],
)
def test_a_malformed_token_map_stops_start_up_without_echoing_it(entries: str) -> None:
    """TWILIO_AUTH_TOKENS that is not AccountSid:token is refused, token unshown."""
    settings = config.load({"twilio_auth_tokens": f"{AC222}:tok-ok,{entries}"}, {})

    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKENS entry 2") as raised:
        settings.check()

    assert "tok" not in str(raised.value).replace("token", "")


def test_a_secondary_token_alone_is_refused() -> None:
    """TWILIO_SECONDARY_AUTH_TOKEN without TWILIO_AUTH_TOKEN stops start-up."""
    settings = config.load(
        {"twilio_secondary_auth_token": "old", "twilio_auth_tokens": f"{AC111}:t"}, {}
    )

    with pytest.raises(ConfigError, match="TWILIO_SECONDARY_AUTH_TOKEN"):
        settings.check()


def test_a_forwarded_allow_ips_that_is_not_an_address_stops_start_up() -> None:
    """FORWARDED_ALLOW_IPS=proxy.local is refused, naming the variable."""
    settings = config.load(
        {"twilio_auth_token": TOKEN, "twilio_account_sid": AC111}, {}
    )

    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS"):
        dataclasses.replace(settings, forwarded_allow_ips="proxy.local").check()
    assert settings.check().forwarded_networks == LOCAL_PROXIES.forwarded_networks


def test_every_token_is_a_secret_to_scrub() -> None:
    """Every auth token, however configured, is among the values logs scrub."""
    settings = config.load(
        {
            "twilio_auth_token": "tok-a",
            "twilio_secondary_auth_token": "tok-b",
            "twilio_auth_tokens": f"{AC111}:tok-c, {AC222}:tok-d",
            "twilio_api_key_secret": "sec-e",
        },
        {},
    )

    assert set(settings.secrets) == {"tok-a", "tok-b", "tok-c", "tok-d", "sec-e"}


# Through the app: the same rules on real requests.


@pytest.mark.parametrize("listed", [True, False], ids=["configured", "not-configured"])
def test_a_callback_of_another_account_needs_that_account(
    settings: dict[str, Any], redis: Any, listed: bool
) -> None:
    """AccountSid=AC111… signed with its token: 204 when listed, else 403."""
    from app import create_app

    extra = {"twilio_auth_tokens": f"{AC111}:token-111"} if listed else {}
    client = create_app({**settings, **extra}).test_client()
    form = conftest.message("SM" + "a" * 32, "delivered", AccountSid=AC111)
    url = "https://bridge.example.test/twilio/messaging"

    response = client.post(
        "/twilio/messaging",
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={HEADER: conftest.sign(url, form, "token-111")},
    )

    assert response.status_code == (204 if listed else 403)
    assert bool(redis.keys("mb:buf:*")) is listed
    if not listed:
        assert response.json["error"] == "account_unknown"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(_TEXT.filter(bool), _TEXT), max_size=8),
    port=st.sampled_from(["", ":443", ":8443"]),
)
def test_our_check_agrees_with_twilios_validator(pairs, port):
    """Any form (repeated names, any text) signed by twilio's validator passes.

    The bridge computes the signature itself (once, not once per port form);
    twilio-python's RequestValidator is the reference it must agree with, and a
    signature of another URL must not pass.
    """
    url = f"https://bridge.example.com{port}/twilio/messaging?x=1"
    form = MultiDict(pairs)
    signed = RequestValidator(TOKEN).compute_signature(url, form)
    verify(url, form, signed, (TOKEN,))
    other = RequestValidator(TOKEN).compute_signature(url + "&y=2", form)
    with pytest.raises(SignatureError):
        verify(url, form, other, (TOKEN,))
