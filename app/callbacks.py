"""The web side: Twilio posts callbacks here, and each is stored or refused.

One callback takes five steps: verify the signature, translate the form (or an
Event Streams sink's CloudEvents) into lifecycle events, route them to a store and
profile, admit them to Redis in one round trip per profile, and answer. A 2xx
means the events are in Redis.
"""

import json
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import contract, eventstreams, routing, signature, unknowns
from app.errors import CallbackError, StoreUnavailable
from app.eventstreams import translate_event
from app.form import parse_form
from app.lifecycle import Event, Translation, in_order
from app.logs import log, mask
from app.translate import translate

if TYPE_CHECKING:
    from app import Bridge
    from app.config import Settings

logger = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__, url_prefix="/twilio")
# Twilio only POSTs; Flask's automatic OPTIONS would be a 2xx that stored nothing.

FORM = "application/x-www-form-urlencoded"
# Event Streams posts CloudEvents as JSON (structured or batched mode).
JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)
# Inbound message webhooks expect TwiML back; an empty Response sends no reply.
INBOUND_STATUSES = ("received", "receiving")
# Callbacks that give no event and are not unknown (onParticipantAdded), counted.
_COUNTED = {
    "learned": "learned:conversation",
    "participant_without_address": "ignored:participant_without_address",
}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@bp.post("/messaging", provide_automatic_options=False)
def messaging() -> Response:
    """Take a Messaging status callback or an inbound message webhook."""
    return _take("messaging")


@bp.post("/voice", provide_automatic_options=False)
def voice() -> Response:
    """Take a Voice call status callback."""
    return _take("voice")


@bp.post("/conversations", provide_automatic_options=False)
def conversations() -> Response:
    """Take a Conversations webhook (onDeliveryUpdated, onMessageAdded, …)."""
    return _take("conversations")


@bp.post("/events", provide_automatic_options=False)
def events() -> Response:
    """Take the CloudEvents an Event Streams webhook sink posts."""
    started = time.perf_counter()
    received = datetime.now(UTC)
    bridge = current_app.extensions["memory_bridge"]
    body = _json_body(bridge.settings)
    items = eventstreams.decode(body)  # not JSON at all: a 400 before the check

    _verify(bridge, body, eventstreams.accounts_of(items))

    routing.check(request.args)
    conversation = routing.conversation_for(request.args)
    translations = [
        translate_event(event, received, conversation)
        for event in eventstreams.cloudevents(items)
    ]

    return _store(bridge, "events", translations, started, sid="")


def _take(kind: str) -> Response:
    """Verify, translate, route, admit and answer one form callback."""
    started = time.perf_counter()
    received = datetime.now(UTC)
    bridge = current_app.extensions["memory_bridge"]
    form = _form(bridge.settings)

    _verify(bridge, form)

    routing.check(request.args)
    conversation = routing.conversation_for(request.args)
    # The first value of each name, as a plain dict: translation only reads, and a
    # MultiDict raises (and catches) an exception for every name it lacks.
    translation = translate(kind, form.to_dict(), received, conversation)

    return _store(bridge, kind, [translation], started, sid=_sid(form))


def _verify(
    bridge: "Bridge",
    signed: MultiDict[str, str] | bytes,
    accounts: set[str] | None = None,
) -> None:
    """Check the request's signature: over the form, or over a JSON body's hash.

    The token is the one of the account the callback names (a JSON body's
    ``accounts``); the one place that reads the signing tokens.
    """
    settings = bridge.settings
    url = signature.public_url(
        request.environ, settings.public_base_url, settings.forwarded_networks
    )
    given = request.headers.get(signature.HEADER, "")
    if isinstance(signed, bytes):
        if not given:
            signature.verify_json(url, signed, given, ())  # raises: no header
        tokens = bridge.tokens.for_accounts(accounts or set())
        signature.verify_json(url, signed, given, tokens)
    else:
        signature.verify_callback(url, signed, given, bridge.tokens)


def _store(
    bridge: "Bridge",
    kind: str,
    translations: list[Translation],
    started: float,
    sid: str,
) -> Response:
    """Check the events, admit them per profile, count the unknown, and answer."""
    checked, shortened = _check(translations)
    unknown = [t.unknown for t in translations if t.unknown]
    counters = _counters(kind, unknown, shortened, translations)
    admitted, duplicate, stale, parked = _admit(bridge, checked, translations, counters)

    # Unknown values are Twilio's text (a newline, anything): shown as counted.
    statuses = sorted({unknowns.clean(t.status) for t in translations if t.status})
    ignored = sorted({t.ignored for t in translations if t.ignored})
    customers = {t.customer for t in translations if t.customer}
    log(
        logger,
        "callback.accepted",
        kind=kind,
        status=",".join(statuses)[:200],
        sid=sid or None,
        cloudevents=len(translations) if kind == "events" else None,
        customer=mask(next(iter(customers))) if len(customers) == 1 else None,
        admitted=admitted,
        duplicate=duplicate,
        stale=stale,
        parked=parked,
        ignored=",".join(ignored) or None,
        shortened=",".join(shortened) or None,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )

    counts = f"admitted={admitted} duplicate={duplicate} stale={stale}"
    if len(translations) == 1 and translations[0].ignored:
        outcome = translations[0].ignored
    else:
        outcome = counts + (" parked" if parked else "")
        outcome += f" ignored={len(unknown)}" if kind == "events" else ""
    inbound = kind == "messaging" and translations[0].status in INBOUND_STATUSES

    return _answer(inbound, outcome)


def _form(settings: "Settings") -> MultiDict[str, str]:
    """Return the callback's form; refuse other types, large bodies, bad encoding."""
    body = _read_body(settings.max_body_bytes, (FORM,))

    return parse_form(body, settings.max_form_fields)


def _json_body(settings: "Settings") -> bytes:
    """Return a JSON callback's raw body, refusing other types and large bodies."""
    return _read_body(settings.max_body_bytes, JSON_TYPES)


def _read_body(max_bytes: int, types: tuple[str, ...]) -> bytes:
    """Return the raw body, refusing other content types and large bodies."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype not in types or charset not in ("utf-8", "utf8"):
        raise CallbackError(
            f"Content-Type {request.content_type or '(none)'!r:.100} is not "
            f"{types[0]} in UTF-8.",
            reason="content_type",
            status=415,
        )
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

    return body


def _check(
    translations: list[Translation],
) -> tuple[list[tuple[Event, Translation]], list[str]]:
    """Fit every event to the contract, or refuse the callback naming the field.

    Returns each event with its translation, and the names of the fields cut.
    """
    checked, shortened = [], []
    for translation in translations:
        for event in translation.events:
            body, cut = contract.conform(event.body)
            found = contract.problems(body)
            if found:
                raise CallbackError(
                    "The callback gives an event the Memory API would refuse: "
                    + "; ".join(found),
                    reason="invalid_event",
                )
            shortened += cut
            checked.append((replace(event, body=body), translation))

    return checked, shortened


def _admit(
    bridge: "Bridge",
    checked: list[tuple[Event, Translation]],
    translations: list[Translation],
    counters: dict[str, int],
) -> tuple[int, int, int, int]:
    """Store the events per profile; return admitted, duplicate, stale, parked.

    A call's events go in ``SequenceNumber`` order (then ``Timestamp``), whatever
    order they came in, so that an earlier status is not taken for a late one.
    What a callback teaches the routing memory, and its counters, are written
    with its events, in the same round trip.
    """
    settings = bridge.settings
    learned = _learned(translations)
    if not checked:
        bridge.buffer.remember(learned, settings.dedupe_ttl_s)
        _count(bridge, counters)
        return 0, 0, 0, 0
    store = routing.store_for(request.args, settings.memory_store_id)
    recalled = {**_recall(bridge, translations), **learned}
    groups: dict[str, tuple[list[Event], dict[str, str]]] = {}
    for event, translation in checked:
        customer = recalled.get(translation.recall) or translation.customer
        member = routing.member_for(request.args, store, customer)
        events, learn = groups.setdefault(member, ([], {}))
        events.append(event)
        if translation.learn in learned:
            learn[translation.learn] = learned[translation.learn]
    totals = [0, 0, 0, 0]
    for number, (member, (events, learn)) in enumerate(groups.items()):
        rows = [
            (e.communication, e.status, e.rank, _json(e), e.dedupe)
            for e in in_order(events)
        ]
        counts = bridge.buffer.admit(
            member,
            rows,
            linger_ms=settings.linger_ms,
            comm_ttl_s=settings.dedupe_ttl_s,
            park_ttl_s=settings.dead_letter_ttl_s,
            learn=learn,
            count=None if number else counters,  # once, with the first profile
        )
        for i, count in enumerate(counts):
            totals[i] += count
        totals[3] += counts[0] if not member else 0

    return totals[0], totals[1], totals[2], totals[3]


def _learned(translations: list[Translation]) -> dict[str, str]:
    """Return the customers this callback teaches, by routing memory key."""
    return {t.learn: t.customer for t in translations if t.learn and t.customer}


def _recall(bridge: "Bridge", translations: list[Translation]) -> dict[str, str]:
    """Return the remembered customers events of this callback are routed to.

    One Redis read, only for callbacks that ask (a Conversations receipt, a call's
    child leg) and only when the URL names no profile, which would win anyway.
    """
    if routing.given(request.args, "profileId"):
        return {}
    keys = sorted({t.recall for t in translations if t.recall and t.events})

    return bridge.buffer.recall(keys)


def _counters(
    kind: str,
    unknown: list[tuple[str, str]],
    shortened: list[str],
    translations: list[Translation],
) -> dict[str, int]:
    """Return what a stored callback adds to this minute's counters.

    That is the callback itself (``/metrics`` counts refusals on its own), its
    unknown values, shortened fields, and what taught the routing memory. Logs
    each unknown value once.
    """
    counters = {f"callbacks:{kind}:stored": 1}
    for translation in translations:
        if not translation.events and translation.ignored in _COUNTED:
            name = _COUNTED[translation.ignored]
            counters[name] = counters.get(name, 0) + 1
    for kind_of, value in unknown:
        name = unknowns.field(kind_of, value)
        counters[name] = counters.get(name, 0) + 1
        unknowns.log_once(logger, kind_of, value)
    for field in shortened:
        counters[f"shortened:{field}"] = counters.get(f"shortened:{field}", 0) + 1

    return counters


def _count(bridge: "Bridge", counters: dict[str, int]) -> None:
    """Add the counters of a callback that stored no event (best effort)."""
    try:
        bridge.buffer.count(counters)
    except StoreUnavailable as error:  # only counters: nothing was to be stored
        log(logger, "callback.uncounted", logging.WARNING, detail=str(error))


def _json(event: Event) -> str:
    return json.dumps(event.body, separators=(",", ":"), ensure_ascii=False)


def _sid(form: dict[str, str]) -> str:
    return form.get("MessageSid") or form.get("SmsSid") or form.get("CallSid") or ""


def _answer(inbound: bool, outcome: str) -> Response:
    """Answer 204, or empty TwiML to an inbound message webhook.

    The ``X-Memory-Bridge`` header says what became of the callback, for people
    debugging their setup (Twilio ignores it).
    """
    if inbound:
        response = Response(EMPTY_TWIML, status=200, mimetype="text/xml")
    else:
        response = Response(status=204)
        del response.headers["Content-Type"]
    response.headers["X-Memory-Bridge"] = outcome

    return response


def init_app(app: Flask) -> None:
    """Register the callback endpoints."""
    app.register_blueprint(bp)
