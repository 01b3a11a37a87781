"""The web side: Twilio posts callbacks here, and each is stored or refused.

One callback takes five steps: verify the signature, translate the form into
lifecycle events, route them to a store and profile, admit them to Redis in one
round trip, and answer. A 2xx means the events are in Redis.
"""

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import contract, routing, signature
from app.errors import CallbackError
from app.form import parse_form
from app.logs import log, mask
from app.translate import Event, Translation, translate

if TYPE_CHECKING:
    from app import Bridge
    from app.config import Settings

logger = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__, url_prefix="/twilio")

FORM = "application/x-www-form-urlencoded"
# Inbound message webhooks expect TwiML back; an empty Response sends no reply.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@bp.post("/messaging")
def messaging() -> Response:
    """Take a Messaging status callback or an inbound message webhook."""
    return _take("messaging")


@bp.post("/voice")
def voice() -> Response:
    """Take a Voice call status callback."""
    return _take("voice")


def _take(kind: str) -> Response:
    """Verify, translate, route, admit and answer one callback."""
    started = time.perf_counter()
    received = datetime.now(UTC)
    bridge = current_app.extensions["memory_bridge"]
    form = _form(bridge.settings)

    _verify(bridge, form)

    routing.check(request.args)
    conversation = routing.conversation_for(request.args)
    translation = translate(kind, form, received, conversation)
    _check(translation.events)

    member, (admitted, duplicate, stale) = _admit(bridge, translation)

    log(
        logger,
        "callback.accepted",
        kind=kind,
        status=translation.status,
        sid=_sid(form),
        customer=mask(translation.customer),
        admitted=admitted,
        duplicate=duplicate,
        stale=stale,
        parked=admitted if translation.events and not member else 0,
        ignored=translation.ignored or None,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )

    outcome = translation.ignored or (
        f"admitted={admitted} duplicate={duplicate} stale={stale}"
        + ("" if member or not translation.events else " parked")
    )

    return _answer(translation.status, outcome)


def _verify(bridge: "Bridge", form: MultiDict[str, str]) -> None:
    """Check the signature against the public URL, with the account's tokens."""
    settings = bridge.settings
    url = signature.public_url(
        request.environ, settings.public_base_url, settings.forwarded_networks
    )
    header = request.headers.get(signature.HEADER, "")

    signature.verify_callback(url, form, header, bridge.tokens)


def _form(settings: "Settings") -> MultiDict[str, str]:
    """Return the callback's form; refuse other types, large bodies, bad encoding."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != FORM or charset not in ("utf-8", "utf8"):
        raise CallbackError(
            f"Content-Type {request.content_type or '(none)'!r:.100} is not {FORM} "
            "in UTF-8.",
            reason="content_type",
            status=415,
        )
    max_bytes = settings.max_body_bytes
    try:
        body = request.get_data(cache=True)
    except HTTPException:
        raise
    except Exception as error:  # the server's own parser: a malformed chunked body
        raise CallbackError(
            f"The body could not be read ({type(error).__name__}): send it whole, "
            "with a Content-Length or valid chunked encoding.",
            reason="unreadable_body",
        ) from error
    # Werkzeug stops a chunked body at the limit without a word; reaching it means
    # there was more, so refuse rather than check a signature over a cut form.
    if len(body) >= max_bytes:
        raise RequestEntityTooLarge()

    return parse_form(body, settings.max_form_fields)


def _admit(
    bridge: "Bridge", translation: Translation
) -> tuple[str, tuple[int, int, int]]:
    """Store the events for their profile; return the member and the admit counts."""
    if not translation.events:
        return "", (0, 0, 0)
    settings = bridge.settings
    store = routing.store_for(request.args, settings.memory_store_id)
    member = routing.member_for(request.args, store, translation.customer)
    rows = [(e.communication, e.status, e.rank, _json(e)) for e in translation.events]
    counts = bridge.buffer.admit(
        member,
        rows,
        linger_ms=settings.linger_ms,
        comm_ttl_s=settings.dedupe_ttl_s,
        park_ttl_s=settings.dead_letter_ttl_s,
    )

    return member, counts


def _check(events: list[Event]) -> None:
    """Refuse the callback if any event would not pass the Memory API's contract."""
    for event in events:
        found = contract.problems(event.body)
        if found:
            raise CallbackError(
                "The callback gives an event the Memory API would refuse: "
                + "; ".join(found),
                reason="invalid_event",
            )


def _json(event: Event) -> str:
    return json.dumps(event.body, separators=(",", ":"), ensure_ascii=False)


def _sid(form: dict[str, str]) -> str:
    return form.get("MessageSid") or form.get("SmsSid") or form.get("CallSid") or ""


def _answer(status: str, outcome: str) -> Response:
    """Answer 204, or empty TwiML to an inbound message webhook.

    The ``X-Memory-Bridge`` header says what became of the callback, for people
    debugging their setup (Twilio ignores it).
    """
    if status in ("received", "receiving"):
        response = Response(EMPTY_TWIML, status=200, mimetype="text/xml")
    else:
        response = Response(status=204)
        del response.headers["Content-Type"]
    response.headers["X-Memory-Bridge"] = outcome

    return response


def init_app(app: Flask) -> None:
    """Register the callback endpoints."""
    app.register_blueprint(bp)
