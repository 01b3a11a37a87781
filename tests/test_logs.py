"""Log lines: phone numbers masked and secrets scrubbed, whatever carries them."""

import json
import logging

import pytest

from app.logs import Formatter, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to +15005550006 now", "to ********0006 now"),
        ("To=%2B15005550006&x=1", "To=********0006&x=1"),
        ("whatsapp:+447700900123", "whatsapp:********0123"),
        ("'+15005550010' is not a SID", "'********0010' is not a SID"),
        ("+15005550006,+15005550007", "********0006,********0007"),
    ],
)
def test_every_phone_number_is_masked_to_its_last_four_digits(
    text: str, expected: str
) -> None:
    """E.164 numbers, plain or URL-encoded, keep only their last 4 digits."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sid=SM15005550006000000000000000000001",
        '"ts": 1796404586.51',
        "From=55555 ms=12.5",
        "Date: Fri, 04 Dec 2026 10:00:00 +0000",
        "attempt=+1",
    ],
)
def test_sids_times_and_short_codes_are_left_alone(text: str) -> None:
    """Digits that are not a phone number with its + stay as they are."""
    assert redact(text) == text


def record(event: str, **fields: object) -> logging.LogRecord:
    """Return the record ``logs.log`` would make."""
    line = logging.LogRecord("app", logging.WARNING, __file__, 1, event, (), None)
    line.fields = fields

    return line


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_a_line_never_holds_a_secret_or_a_whole_number(as_json: bool) -> None:
    """A token or number inside any field is scrubbed in both formats."""
    formatter = Formatter(as_json, secrets=("tok-9c1b7e24", "apisecret-7XkP"))

    line = formatter.format(
        record(
            "callback.refused",
            detail="https://x.example/t?To=%2B15005550006 tok-9c1b7e24",
            error="auth apisecret-7XkP for +15005550007",
        )
    )

    for raw in ("tok-9c1b7e24", "apisecret-7XkP", "15005550006", "15005550007"):
        assert raw not in line
    assert "********0006" in line and "***" in line
    if as_json:
        assert json.loads(line)["event"] == "callback.refused"
