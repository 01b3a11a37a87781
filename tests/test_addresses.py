"""Tests for app.addresses: channel prefixes, E.164, and what passes unchanged."""

import pytest

from app.addresses import normalise, split


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("whatsapp:+15005550006", ("WHATSAPP", "+15005550006")),
        ("WhatsApp:+15005550006", ("WHATSAPP", "+15005550006")),
        ("rcs:+15005550006", ("RCS", "+15005550006")),
        ("messenger:1234567890", ("MESSENGER", "1234567890")),
        ("sip:alice@example.com", ("SIP", "alice@example.com")),
        ("client:alice", ("CLIENT", "alice")),
        ("+15005550006", ("", "+15005550006")),
    ],
)
def test_a_channel_prefix_sets_the_type_and_is_stripped(raw, expected):
    """whatsapp:, rcs:, messenger:, sip: and client: name the channel, then go."""
    assert split(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (500) 555-0006", "+15005550006"),
        ("+1.500.555.0006", "+15005550006"),
        (" +15005550006 ", "+15005550006"),
        ("+44 20 7946 0000", "+442079460000"),
        ("whatsapp:+1 500 555 0006", "+15005550006"),
    ],
)
def test_a_written_phone_number_becomes_e164(raw, expected):
    """A number written with spaces, dots or brackets is stored in E.164."""
    assert split(raw)[1] == expected


@pytest.mark.parametrize(
    "raw",
    ["55555", "898211", "TESTSENDER", "MyShop", "15005550006", "+1", "+12", "abc+1"],
)
def test_short_codes_and_alphanumeric_senders_pass_unchanged(raw):
    """Short codes, sender ids and numbers without a country are kept as they are."""
    assert normalise(raw) == raw
    assert split(raw) == ("", raw)


def test_a_prefix_that_is_not_a_channel_stays_in_the_address():
    """tel: or any other word before a colon is part of the address."""
    assert split("tel:+15005550006") == ("", "tel:+15005550006")
