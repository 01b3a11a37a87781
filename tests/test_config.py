"""Settings: defaults, environment, overrides; missing secrets stop start-up."""

import dataclasses
import re

import pytest

from app import config
from app.errors import ConfigError
from conftest import ROOT

VALID = {"TWILIO_AUTH_TOKEN": "12345", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32}


def test_environment_then_overrides():
    """An override beats the environment, which beats the default."""
    settings = config.load(
        {"linger_ms": 5}, environ={**VALID, "BRIDGE_LINGER_MS": "250"}
    )
    assert settings.linger_ms == 5
    assert config.load(environ={**VALID, "BRIDGE_LINGER_MS": "250"}).linger_ms == 250
    assert config.load(environ=VALID).linger_ms == 1000


def test_missing_auth_token_names_the_variable():
    """Without TWILIO_AUTH_TOKEN start-up stops with a message naming it."""
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN is not set"):
        config.load(environ={}).check()


def test_api_key_is_preferred_for_the_memory_api():
    """With an API key set, the Memory API is called with it, not the auth token."""
    env = {
        **VALID,
        "TWILIO_API_KEY_SID": "SK" + "0" * 32,
        "TWILIO_API_KEY_SECRET": "s3",
    }
    assert config.load(environ=env).check().memory_credentials == (
        "SK" + "0" * 32,
        "s3",
    )


def test_a_number_setting_that_is_not_a_number_is_named():
    """BRIDGE_LINGER_MS=soon stops start-up naming the variable."""
    with pytest.raises(ConfigError, match="BRIDGE_LINGER_MS"):
        config.load(environ={**VALID, "BRIDGE_LINGER_MS": "soon"})


def test_batch_max_above_the_api_limit_is_refused():
    """BRIDGE_BATCH_MAX over 1000 is refused: the API takes at most 1000 events."""
    with pytest.raises(ConfigError, match="1 to 1000"):
        config.load({"batch_max": 1001}, environ=VALID).check()


def test_unknown_override_is_refused():
    """create_app({'lingr_ms': 1}) fails instead of silently ignoring the typo."""
    with pytest.raises(ConfigError, match="lingr_ms"):
        config.load({"lingr_ms": 1}, environ=VALID)


def test_base_url_without_scheme_is_refused():
    """MEMORY_BASE_URL=memory.twilio.com is refused with how to write it."""
    with pytest.raises(ConfigError, match="MEMORY_BASE_URL"):
        config.load(environ={**VALID, "MEMORY_BASE_URL": "memory.twilio.com"}).check()


def test_readme_documents_every_setting():
    """Every setting has a row in README.md's configuration table."""
    readme = (ROOT / "README.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    for field in dataclasses.fields(config.Settings):
        assert config.env_name(field.name) in rows, field.name


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BRIDGE_UNKNOWN_PROFILE", "delete", "BRIDGE_UNKNOWN_PROFILE"),
        ("BRIDGE_RETRY_MAX_ATTEMPTS", "0", "BRIDGE_RETRY_MAX_ATTEMPTS"),
        ("BRIDGE_RATE_LIMIT_RPS", "-1", "BRIDGE_RATE_LIMIT_RPS"),
    ],
)
def test_failure_handling_settings_are_checked(variable, value, named):
    """A failure-handling setting out of range stops start-up, naming it."""
    with pytest.raises(ConfigError, match=named):
        config.load(environ={**VALID, variable: value}).check()
