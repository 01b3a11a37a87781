"""Turn Event Streams CloudEvents into lifecycle events.

An Event Streams webhook sink posts JSON: one CloudEvent, or an array of them
("Webhook Quickstart" in Twilio's Event Streams docs). Message and call status
types are read as the callbacks of the same name, through the same table
(``app.translate.EVENT_TYPES``); the CloudEvent ``id`` is kept so that a
redelivered event is stored once.
"""

import json
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from app.errors import CallbackError
from app.lifecycle import Event, Translation
from app.translate import CALL_MOMENTS, CONVERSATION_EVENTS, EVENT_TYPES, translate

KIND = "events"
# CloudEvents ids are free text; ours end up in a Redis key, so keep them tame.
_ID = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
# Event sources name their account: /2010-04-01/Accounts/AC…/Messages/SM….json
_SOURCE_ACCOUNT = re.compile(r"/Accounts/(AC[0-9a-fA-F]{32})(?:/|$)")
_SID_NAMES = {"messaging": "MessageSid", "voice": "CallSid"}


def parse(raw: bytes) -> list[dict[str, Any]]:
    """Return the CloudEvents of a body: one object or an array of objects."""
    return cloudevents(decode(raw))


def cloudevents(items: list[Any]) -> list[dict[str, Any]]:
    """Return decoded items as CloudEvents, or refuse the first that is not one."""
    for number, event in enumerate(items):
        if not isinstance(event, dict):
            raise CallbackError(
                f"Item {number} is not a CloudEvent: it must be a JSON object.",
                reason="bad_cloudevent",
            )
        for name in ("type", "id"):
            if not isinstance(event.get(name), str) or not event[name]:
                raise CallbackError(
                    f"Item {number}'s {name} must be a non-empty string: every "
                    "CloudEvent carries one.",
                    reason="bad_cloudevent",
                )
        if not _ID.fullmatch(event["id"]):
            raise CallbackError(
                f"Item {number}'s id {event['id'][:60]!r} is not a CloudEvent id "
                "this bridge can keep (at most 128 letters, digits and ._:/@+=-).",
                reason="bad_cloudevent",
            )

    return items


def decode(raw: bytes) -> list[Any]:
    """Return a JSON body as a list of items, or refuse it as not JSON."""
    try:
        found = json.loads(raw)
    # RecursionError: nesting deeper than the parser goes, well under the body limit.
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CallbackError(
            f"The body is not JSON ({error}): an Event Streams sink sends "
            "CloudEvents as JSON.",
            reason="bad_json",
        ) from error

    return found if isinstance(found, list) else [found]


def accounts_of(items: list[Any]) -> set[str]:
    """Return the AccountSids a decoded body's CloudEvents name.

    Read before the signature is checked, only to choose the token. Events that
    name no account (error logs) are passed over; a body that names none, or
    several, gets no account's token (only a token shared by every account: see
    Tokens.for_accounts).
    """
    return {_account(item) if isinstance(item, dict) else "" for item in items} - {""}


def _account(event: dict[str, Any]) -> str:
    """Return the AccountSid of one CloudEvent: its data's, or its source's."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    request = data.get("request")
    parameters = request.get("parameters") if isinstance(request, dict) else None
    places = [data, parameters if isinstance(parameters, dict) else {}]
    for place in places:
        for name in ("accountSid", "AccountSid", "account_sid"):
            if isinstance(place.get(name), str):
                return str(place[name])
    source = _SOURCE_ACCOUNT.search(str(event.get("source", "")))

    return source.group(1) if source else ""


def translate_event(
    event: dict[str, Any], received: datetime, conversation_id: str = ""
) -> Translation:
    """Translate one CloudEvent; unknown types give no event and are counted."""
    name = event["type"]
    if name not in EVENT_TYPES:
        return Translation.unknown_value("event-type", name, "unknown_event_type")
    kind, status = EVENT_TYPES[name]

    form = form_of(kind, name, status, event)
    translation = translate(kind, form, received, conversation_id)
    events = [_with_id(e, event["id"], name) for e in translation.events]

    return replace(translation, events=events)


def form_of(kind: str, name: str, status: str, event: dict[str, Any]) -> dict[str, str]:
    """Return the callback form a CloudEvent's data stands for."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    form = _flat(data)
    request = data.get("request")
    if isinstance(request, dict) and isinstance(request.get("parameters"), dict):
        form |= _flat(request["parameters"])  # voice: the status callback it made
    if "Sid" in form and kind in _SID_NAMES:
        form.setdefault(_SID_NAMES[kind], form["Sid"])
    if isinstance(event.get("time"), str):
        form.setdefault("Timestamp", event["time"])
    if kind == "messaging":
        form["MessageStatus"] = status
    elif kind == "voice" and not form.get("CallStatus"):
        moment = name.rsplit(".", 1)[-1]
        form["CallStatus"] = CALL_MOMENTS.get(moment, moment)
    elif kind == "conversations":
        form["EventType"] = CONVERSATION_EVENTS[name]

    return form


def _flat(data: dict[str, Any]) -> dict[str, str]:
    """Return the plain values of ``data`` under callback names (call_sid: CallSid)."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict | list) or value is None:
            continue
        name = "".join(p[:1].upper() + p[1:] for p in str(key).split("_"))
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not _is_unicode(text):
            raise CallbackError(
                f"data.{key[:40]!r} holds a lone surrogate (an unpaired \\uD800-"
                "\\uDFFF escape): it is not Unicode text and cannot be forwarded.",
                reason="bad_unicode",
            )
        flat[name] = text

    return flat


def _is_unicode(text: str) -> bool:
    """Tell whether ``text`` is real Unicode: JSON can escape lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False

    return True


def _with_id(event: Event, cloud_id: str, name: str) -> Event:
    """Return ``event`` remembering its CloudEvent id, and saying where it came from."""
    why = f"Event Streams {name} (id {cloud_id}): {event.why}"

    return Event(
        event.communication,
        event.status,
        event.rank,
        event.body,
        dedupe=cloud_id,
        order=event.order,
        why=why,
    )
