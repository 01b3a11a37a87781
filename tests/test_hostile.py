"""Hostile input: every malformed callback gets a clear 4xx and one log line.

The explicit cases pin each refusal; the hypothesis tests throw generated
forms, headers and bodies at the endpoints and require that nothing gets a 5xx,
that nothing unsigned gets a 2xx, and that a correctly signed form is never
refused for its signature, whatever it holds. CI runs a short pass
(``HYPOTHESIS_PROFILE=ci``, the default); ``HYPOTHESIS_PROFILE=long`` runs more.
"""

import http.client
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ACCOUNT_SID, Bridge, message, sign

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FORM = "application/x-www-form-urlencoded"
BASE = "https://bridge.example.test"
ENDPOINTS = ["/twilio/messaging", "/twilio/voice"]
# What a refusal may be; a 2xx only ever for a correctly signed callback.
REFUSALS = {400, 403, 405, 413, 415}


def raw_post(client: Any, body: bytes, content_type: str = FORM, **headers: str) -> Any:
    """Post ``body`` as it is, signed over whatever the bridge can parse of it."""
    return client.post(
        "/twilio/messaging",
        data=body,
        content_type=content_type,
        headers={"X-Twilio-Signature": "c2lnbmF0dXJl", **headers},
    )


def refused_once(caplog: pytest.LogCaptureFixture, response: Any, status: int) -> str:
    """Assert the answer is ``status`` with exactly one log line; return its reason."""
    lines = [r for r in caplog.records if r.name.startswith(("app", "werkzeug"))]
    assert response.status_code == status, response.data[:300]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    return str(response.json["error"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"MessageSid=SM1&MessageStatus=sent%", "malformed_form"),
        (b"MessageSid=SM1&Body=100%+off", "malformed_form"),
        (b"MessageSid=SM1&Body=%G1", "malformed_form"),
        (b"MessageSid=SM1&Body=%C3%28", "malformed_form"),
        (b"MessageSid=SM1&Body=\xff\xfe", "malformed_form"),
        (b"MessageSid=SM1&%ED%A0%80=x", "malformed_form"),
    ],
    ids=[
        "trailing-%",
        "bare-%",
        "non-hex-escape",
        "bad-utf8-escape",
        "raw-bytes",
        "surrogate",
    ],
)
def test_malformed_form_encoding_is_a_400(
    client: Any, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    """A stray %, an escape of bytes that are not UTF-8 or raw such bytes: 400."""
    response = raw_post(client, body)

    assert refused_once(caplog, response, 400) == reason
    assert "UTF-8" in response.json["message"] or "%" in response.json["message"]


def test_valid_escapes_and_raw_utf8_are_read_exactly(client: Any, redis: Any) -> None:
    """%2B, +, %25, %26 and raw UTF-8 come out as Twilio meant them; it verifies."""
    form = message("SM" + "a" * 32, "delivered", Body="50% off & more + é ✓")
    body = urlencode(form).encode().replace(b"%C3%A9", "é".encode())
    signature = sign(BASE + "/twilio/messaging", form)

    response = raw_post(client, body, **{"X-Twilio-Signature": signature})

    assert response.status_code == 204, response.json


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        f"{FORM}; charset=latin-1",
        "",
    ],
)
def test_other_content_types_are_a_415(
    client: Any, caplog: pytest.LogCaptureFixture, content_type: str
) -> None:
    """JSON, text, multipart, another charset or none at a form endpoint: 415."""
    body = urlencode(message("SM" + "b" * 32, "sent")).encode()

    response = raw_post(client, body, content_type)

    assert refused_once(caplog, response, 415) == "content_type"


def test_a_huge_body_is_a_413(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A body over BRIDGE_MAX_BODY_BYTES gets 413 before anything is parsed."""
    body = b"Body=" + b"x" * (64 * 1024)

    response = raw_post(client, body)

    refused_once(caplog, response, 413)


def test_thousands_of_fields_are_a_413(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """5000 fields, well under the size limit, get 413 naming the setting."""
    body = b"&".join(b"f%d=" % n for n in range(5000))

    response = raw_post(client, body)

    assert refused_once(caplog, response, 413) == "too_many_fields"
    assert "BRIDGE_MAX_FORM_FIELDS" in response.json["message"]


def test_a_form_at_the_field_limit_is_read(
    settings: dict[str, Any], redis: Any
) -> None:
    """A callback with exactly BRIDGE_MAX_FORM_FIELDS fields is accepted."""
    from app import create_app

    form = message("SM" + "c" * 32, "sent")
    form.update({f"Extra{n}": str(n) for n in range(20 - len(form))})
    client = create_app({**settings, "max_form_fields": 20}).test_client()

    response = raw_post(
        client,
        urlencode(form).encode(),
        **{"X-Twilio-Signature": sign(BASE + "/twilio/messaging", form)},
    )

    assert response.status_code == 204, response.json


def test_a_missing_signature_is_a_403(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A well-formed callback without X-Twilio-Signature: 403, one line."""
    response = client.post(
        "/twilio/messaging",
        data=urlencode(message("SM" + "d" * 32, "sent")),
        content_type=FORM,
    )

    assert refused_once(caplog, response, 403) == "signature_missing"


def test_a_get_is_a_405(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """GET on a callback endpoint: 405 and one line, not a 500."""
    refused_once(caplog, client.get("/twilio/messaging?x=1"), 405)


# Generated input.

# What a header can carry: latin-1 text without line breaks.
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
# Text as Twilio could send it: any Unicode scalar value, no surrogates.
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
FIELDS = st.dictionaries(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20), TEXT, max_size=12
)


@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from([FORM, "", "text/plain", f"{FORM}; charset=utf-8"]),
    signature=HEADER_TEXT,
)
def test_arbitrary_bytes_are_refused_never_a_500(
    client: Any, body: bytes, content_type: str, signature: str
) -> None:
    """Any body, content type and signature header: a refusal, never 2xx or 5xx."""
    response = client.post(
        "/twilio/messaging",
        data=body,
        content_type=content_type,
        headers={"X-Twilio-Signature": signature},
    )

    assert response.status_code in REFUSALS, response.data[:300]


@given(
    fields=FIELDS,
    base=st.sampled_from(
        [
            message("SM" + "e" * 32, "delivered"),
            message("SM" + "f" * 32, "received", From="+15005550006"),
            {"AccountSid": ACCOUNT_SID, "CallSid": "CA" + "1" * 32},
            {"AccountSid": ACCOUNT_SID},
        ]
    ),
    endpoint=st.sampled_from(ENDPOINTS),
    query=st.dictionaries(st.sampled_from(["a", "storeId", "x y"]), TEXT, max_size=2),
)
def test_a_signed_form_is_never_refused_for_its_signature(
    client: Any,
    fields: dict[str, str],
    base: dict[str, str],
    endpoint: str,
    query: dict[str, str],
) -> None:
    """Whatever the fields hold, a callback Twilio signed passes the signature."""
    form = {**fields, **base}
    path = endpoint + (f"?{urlencode(query, quote_via=quote)}" if query else "")

    response = client.post(
        path,
        data=urlencode(form),
        content_type=FORM,
        headers={"X-Twilio-Signature": sign(BASE + path, form)},
    )

    assert response.status_code in {200, 204, 400}, response.data[:300]


@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "Forwarded"]
        ),
        HEADER_TEXT,
        max_size=4,
    ),
    peer=st.sampled_from(["127.0.0.1", "192.0.2.1"]),
    signature=st.sampled_from(["", "bad", "valid"]),
)
def test_forwarded_headers_never_break_the_check(
    settings: dict[str, Any],
    redis: Any,
    headers: dict[str, str],
    peer: str,
    signature: str,
) -> None:
    """Any X-Forwarded-* from any peer: a 4xx or, for an untrusted peer, a 204."""
    from app import create_app

    client = create_app({**settings, "public_base_url": ""}).test_client()
    form = message("SM" + "9" * 32, "delivered")
    signed = sign("http://localhost/twilio/messaging", form)

    response = client.post(
        "/twilio/messaging",
        data=urlencode(form),
        content_type=FORM,
        headers={
            **headers,
            "X-Twilio-Signature": signed if signature == "valid" else signature,
        },
        environ_base={"REMOTE_ADDR": peer},
    )

    assert response.status_code in REFUSALS | {204}, response.data[:300]
    if signature != "valid":
        assert response.status_code == 403
    elif peer == "192.0.2.1":
        assert response.status_code == 204, response.json


@pytest.fixture
def web(settings: dict[str, Any], redis: Any, tmp_path: Path) -> Iterator[Bridge]:
    """The bridge under gunicorn with no PUBLIC_BASE_URL, shared by the examples."""
    bridge = Bridge(settings, tmp_path)
    bridge.env["PUBLIC_BASE_URL"] = ""  # so Host and X-Forwarded-* are read
    try:
        yield bridge.start()
    finally:
        bridge.stop()


QUERY = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"),
    max_size=40,
)


@pytest.mark.e2e
@given(
    body=st.one_of(
        st.binary(max_size=300),
        FIELDS.map(lambda fields: urlencode(fields).encode()),
    ),
    query=QUERY,
    content_type=st.sampled_from([FORM, f"{FORM}; charset=utf-8", "text/plain"]),
    headers=st.dictionaries(
        st.sampled_from(["X-Forwarded-Host", "X-Forwarded-Proto", "Host"]),
        HEADER_TEXT.map(str.strip),
        max_size=3,
    ),
    signature=HEADER_TEXT,
)
def test_gunicorn_answers_hostile_requests_with_a_4xx(
    web: Bridge,
    body: bytes,
    query: str,
    content_type: str,
    headers: dict[str, str],
    signature: str,
) -> None:
    """Through real gunicorn, any body, query and headers get a 4xx, never a 5xx."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        connection.putrequest("POST", f"/twilio/messaging?{query}", skip_host=True)
        for name, value in {"Host": "bridge.example.test", **headers}.items():
            connection.putheader(name, value.encode("latin-1"))
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("X-Twilio-Signature", signature.encode("latin-1"))
        connection.endheaders(body)
        status = connection.getresponse().status
    finally:
        connection.close()

    assert 400 <= status < 500, status


@pytest.mark.parametrize(
    "path",
    ["/twilio/messaging", "/twilio/voice", "/twilio/conversations", "/twilio/events"],
)
def test_options_on_a_callback_endpoint_is_a_405(client, path, caplog):
    """OPTIONS stores nothing, so it gets a 405 and one line, not a bare 200."""
    with caplog.at_level(logging.WARNING):
        answer = client.options(path)

    assert answer.status_code == 405
    assert "POST" in answer.headers["Allow"]
    lines = [r for r in caplog.records if "request.refused" in r.getMessage()]
    assert len(lines) == 1
