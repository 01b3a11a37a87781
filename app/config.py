"""Settings: defaults, then the environment (and a ``.env`` file), then a mapping.

Every setting is one row of the configuration table in README.md. A required
setting that is missing stops start-up with a message naming the variable.
"""

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from app.errors import ConfigError

DEFAULT_MEMORY_BASE_URL = "https://memory.twilio.com"
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The token local mode signs and checks with; it guards nothing real.
LOCAL_AUTH_TOKEN = "local-mode-auth-token"


@dataclass(frozen=True)
class Settings:
    """What the web and worker processes need to know, read once at start-up."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    public_base_url: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_key_sid: str = ""
    twilio_api_key_secret: str = ""
    memory_base_url: str = DEFAULT_MEMORY_BASE_URL
    memory_store_id: str = ""
    # Long enough that the callbacks of one send (queued, sent, delivered arrive
    # within a second or two) share a POST; short enough that nobody waits.
    linger_ms: int = 1000
    batch_max: int = 1000
    delivery_concurrency: int = 16
    http_timeout_s: float = 10.0
    drain_seconds: float = 10.0
    poll_ms: int = 100
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    dedupe_ttl_s: int = 3 * 24 * 3600
    profile_cache_ttl_s: int = 24 * 3600
    dead_letter_ttl_s: int = 30 * 24 * 3600
    max_body_bytes: int = 64 * 1024
    key_prefix: str = "mb"
    queue_name: str = "memory-bridge"
    log_format: str = "text"
    log_level: str = "INFO"
    # Who may sign callbacks, and which peers may say what the public URL was
    # (README "Security"). TWILIO_AUTH_TOKENS is "AC…:token,AC…:token"; an account
    # listed twice (old and new token) is how its token rotates.
    twilio_auth_tokens: str = ""
    twilio_secondary_auth_token: str = ""
    # The same variable and default gunicorn reads (app/gunicorn_conf.py), so the
    # app trusts X-Forwarded-Host from exactly the peers gunicorn trusts.
    forwarded_allow_ips: str = "127.0.0.1"
    # Twilio's richest callbacks (inbound WhatsApp with ten media) carry under 100.
    max_form_fields: int = 256
    # Failure handling (README, "Failure handling"). A batch that keeps failing
    # becomes a dead letter after this many tries or this long, whichever is first;
    # both are long enough that an hour's outage of the Memory API loses nothing.
    retry_max_attempts: int = 100
    retry_max_age_s: float = 24 * 3600.0
    # Requests per second to the Memory API, shared by every worker (0: no limit).
    rate_limit_rps: float = 100.0
    # A phone the Lookup cannot find: "park" as a dead letter, or "create" a profile.
    unknown_profile: str = "park"
    # While the API refuses our credentials (401/403), one batch probes this often.
    auth_probe_s: float = 30.0
    # The operator pages (/status, /rq, /metrics): off unless credentials are set.
    dashboard_username: str = ""
    dashboard_password: str = ""
    dashboard_token: str = ""

    @property
    def memory_credentials(self) -> tuple[str, str]:
        """Return the Basic auth pair for the Memory API: API key first."""
        if self.twilio_api_key_sid and self.twilio_api_key_secret:
            return self.twilio_api_key_sid, self.twilio_api_key_secret

        return self.twilio_account_sid, self.twilio_auth_token

    @property
    def secrets(self) -> tuple[str, ...]:
        """Return the values that must never reach a log line."""
        values = [
            self.twilio_auth_token,
            self.twilio_secondary_auth_token,
            self.twilio_api_key_secret,
            self.dashboard_password,
            self.dashboard_token,
        ]
        for entry in self.twilio_auth_tokens.split(","):
            values.append(entry.partition(":")[2].strip())
        return tuple(v for v in values if v)

    @property
    def account_tokens(self) -> dict[str, tuple[str, ...]]:
        """Return TWILIO_AUTH_TOKENS as AccountSid to tokens, in the order given."""
        tokens: dict[str, tuple[str, ...]] = {}
        entries = [e.strip() for e in self.twilio_auth_tokens.split(",")]
        for number, entry in enumerate((e for e in entries if e), start=1):
            account, _, token = (part.strip() for part in entry.partition(":"))
            if not (ACCOUNT_SID.match(account) and token):
                # Never echo the entry: it holds a token.
                raise ConfigError(
                    f"TWILIO_AUTH_TOKENS entry {number} is not AccountSid:token: "
                    "write it like AC0123…:yourtoken, entries separated by commas."
                )
            tokens[account] = (*tokens.get(account, ()), token)

        return tokens

    @cached_property  # read on every callback; frozen fields never change
    def forwarded_networks(self) -> tuple[IpNetwork, ...]:
        """Return FORWARDED_ALLOW_IPS as networks; "*" is every address."""
        networks: list[IpNetwork] = []
        for entry in (e.strip() for e in self.forwarded_allow_ips.split(",")):
            if entry == "*":
                networks += [ipaddress.ip_network("0.0.0.0/0")]
                networks += [ipaddress.ip_network("::/0")]
            elif entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError as error:
                    raise ConfigError(
                        f"FORWARDED_ALLOW_IPS has {entry!r}, not an address: give "
                        "IP addresses or networks separated by commas, or *."
                    ) from error

        return tuple(networks)

    def check(self) -> "Settings":
        """Raise ConfigError naming the first setting that is missing or malformed."""
        if not (self.twilio_auth_token or self.twilio_auth_tokens):
            raise ConfigError(
                "TWILIO_AUTH_TOKEN is not set: the bridge needs it to check each "
                "callback's signature. Set it to your account's auth token (or "
                "TWILIO_AUTH_TOKENS for several accounts)."
            )
        if self.twilio_secondary_auth_token and not self.twilio_auth_token:
            raise ConfigError(
                "TWILIO_SECONDARY_AUTH_TOKEN is set without TWILIO_AUTH_TOKEN: set "
                "both while the token rotates, then only the new one."
            )
        # Parse the token map and the proxy list now: a mistake stops start-up.
        _ = (self.account_tokens, self.forwarded_networks)
        if self.max_form_fields < 1:
            raise ConfigError("BRIDGE_MAX_FORM_FIELDS must be at least 1.")
        user, password = self.memory_credentials
        if not (user and password):
            raise ConfigError(
                "No Memory API credentials: set TWILIO_API_KEY_SID and "
                "TWILIO_API_KEY_SECRET, or TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN."
            )
        if not 1 <= self.batch_max <= 1000:
            raise ConfigError("BRIDGE_BATCH_MAX must be 1 to 1000 (the API's limit).")
        self._check_failure_handling()
        if bool(self.dashboard_username) != bool(self.dashboard_password):
            raise ConfigError(
                "DASHBOARD_USERNAME and DASHBOARD_PASSWORD go together: set both "
                "(or neither, and DASHBOARD_TOKEN alone)."
            )
        for name in ("memory_base_url", "public_base_url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                raise ConfigError(
                    f"{env_name(name)}={value!r} is not a URL: "
                    "give it with its scheme, like https://bridge.example.com."
                )

        return self

    def _check_failure_handling(self) -> None:
        """Raise ConfigError for a retry, rate or unknown-profile setting amiss."""
        if self.unknown_profile not in ("park", "create"):
            raise ConfigError(
                f"BRIDGE_UNKNOWN_PROFILE={self.unknown_profile!r} is not a choice: "
                "set it to park (dead letters) or create (new profiles)."
            )
        if self.retry_max_attempts < 1 or self.retry_max_age_s <= 0:
            raise ConfigError(
                "BRIDGE_RETRY_MAX_ATTEMPTS and BRIDGE_RETRY_MAX_AGE_S must be "
                "positive: they bound how long a failing batch is tried."
            )
        if self.rate_limit_rps < 0 or self.auth_probe_s <= 0:
            raise ConfigError(
                "BRIDGE_RATE_LIMIT_RPS must be 0 (no limit) or more, and "
                "BRIDGE_AUTH_PROBE_S more than 0."
            )


_ENV_NAMES = {
    "redis_url": "REDIS_URL",
    "public_base_url": "PUBLIC_BASE_URL",
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_api_key_sid": "TWILIO_API_KEY_SID",
    "twilio_api_key_secret": "TWILIO_API_KEY_SECRET",
    "memory_base_url": "MEMORY_BASE_URL",
    "memory_store_id": "MEMORY_STORE_ID",
    "log_format": "LOG_FORMAT",
    "log_level": "LOG_LEVEL",
    "twilio_auth_tokens": "TWILIO_AUTH_TOKENS",
    "twilio_secondary_auth_token": "TWILIO_SECONDARY_AUTH_TOKEN",
    "forwarded_allow_ips": "FORWARDED_ALLOW_IPS",
    "dashboard_username": "DASHBOARD_USERNAME",
    "dashboard_password": "DASHBOARD_PASSWORD",
    "dashboard_token": "DASHBOARD_TOKEN",
}


def env_name(field: str) -> str:
    """Return the environment variable that sets ``field``."""
    return _ENV_NAMES.get(field, f"BRIDGE_{field.upper()}")


def load(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, then ``environ``, then ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = environ.get(env_name(field.name))
        if raw not in (None, ""):
            values[field.name] = _coerce(field.name, field.type, raw)
    for key, value in (overrides or {}).items():
        name = key.lower()
        if name not in {f.name for f in fields(Settings)}:
            raise ConfigError(f"Unknown setting {key!r}: see the table in README.md.")
        values[name] = value

    return Settings(**values)


def _coerce(name: str, kind: Any, raw: str) -> Any:
    """Turn the text of an environment variable into the setting's type."""
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError as error:
        raise ConfigError(
            f"{env_name(name)}={raw!r} is not a number: give a plain number."
        ) from error

    return raw.strip()
