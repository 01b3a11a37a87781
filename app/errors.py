"""The bridge's exception tree.

    BridgeError
    ├── ConfigError          a setting is missing or malformed; start-up stops
    ├── CallbackError        a callback we refuse with a 4xx (carries the status)
    │   ├── SignatureError   403: the request is not signed by a known Twilio account
    │   └── UnroutableError  400: no store to send the events to
    └── StoreUnavailable     503: Redis did not answer, nothing was stored

Foreign errors (redis, urllib3) are mapped into it where they are raised, with
``raise ... from`` so the cause stays in the traceback.
"""


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A setting is missing or malformed."""


class CallbackError(BridgeError):
    """A callback the bridge refuses; ``status`` is the HTTP answer."""

    status = 400

    def __init__(
        self, message: str, *, reason: str = "bad_request", status: int = 0
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status or self.status


class SignatureError(CallbackError):
    """The X-Twilio-Signature header is missing or does not match."""

    status = 403


class UnroutableError(CallbackError):
    """The callback names no Memory store and none is configured."""


class StoreUnavailable(BridgeError):
    """Redis could not be reached; the callback was not stored."""
