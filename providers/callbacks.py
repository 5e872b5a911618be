"""Provider callbacks: `POST /hooks/{kind}/{provider_id}/` verified the provider's way, turned into canonical events.

Each kind's module parses its own payloads into `ProviderEvent`s (see `providers/esp.py`); this
module finds the connection, bounds the body, and records every event against the message it
belongs to, only inside the connection's workspace. The IMAP bounce reader records through
`record` too. Effects (suppression, status, health) follow from the events (`controlplane/effects.py`).
"""

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from audit.context import Actor, acting_as
from controlplane import events
from controlplane.api.errors import error_body
from controlplane.models import Event, Message
from providers.models import ProviderConnection

logger = logging.getLogger(__name__)

CANONICAL_TYPES = {"message.delivered", "message.deferred", "message.bounced", "message.complained",
                   "message.unsubscribed"}


def max_body_bytes() -> int:
    return getattr(settings, "PROVIDER_CALLBACK_MAX_BYTES", 1024 * 1024)


class CallbackError(Exception):
    """An answer other than 200: the payload changes nothing."""

    def __init__(self, status: int, code: str, message: str, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def malformed(message):
    return CallbackError(400, "malformed_payload", message)


def bad_signature(message="The payload's signature does not verify."):
    return CallbackError(403, "invalid_signature", message)


@dataclass
class ProviderEvent:
    """One provider report about one recipient of one message, in the canonical language."""

    type: str
    recipient: str = ""
    provider_message_id: str = ""
    message_id_header: str = ""
    bounce_type: str = ""  # hard | soft, for message.bounced
    occurred_at: dt.datetime | None = None
    provider_event_id: str = ""
    description: str = ""
    diagnostic: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Parsed:
    events: list = field(default_factory=list)
    note: str = ""  # e.g. "subscription confirmed": a valid call that carries no event


def _variants(value: str) -> set:
    value = (value or "").strip()
    if not value:
        return set()
    bare = value.strip("<>")
    return {value, bare, f"<{bare}>"}


def match_message(workspace, event: ProviderEvent, *, mailbox=None):
    """Our message this report is about: by the provider's id or our Message-ID, never outside `workspace`."""
    query = Q()
    ids = _variants(event.provider_message_id)
    headers = _variants(event.message_id_header) | (ids if "@" in event.provider_message_id else set())
    if ids:
        query |= Q(provider_message_id__in=ids)
    if headers:
        query |= Q(message_id_header__in=headers)
    if not query:
        return None
    candidates = Message.objects.for_workspace(workspace).filter(query)
    if mailbox is not None:
        candidates = candidates.filter(mailbox=mailbox)
    if event.recipient:
        exact = candidates.filter(to_address__iexact=event.recipient.strip()).order_by("-id").first()
        if exact is not None:
            return exact
    return candidates.order_by("-id").first()


def record(*, workspace, event: ProviderEvent, source: str, mailbox=None, message=None):
    """Emits the canonical event for `event` on its message; returns the message, or None when none matches.

    A report seen before (same provider event id, type and message) is not recorded twice.
    """
    if event.type not in CANONICAL_TYPES:
        return None
    message = message or match_message(workspace, event, mailbox=mailbox)
    if message is None:
        return None
    with transaction.atomic():
        message = Message.objects.select_for_update().select_related("workspace").get(pk=message.pk)
        if event.provider_event_id and Event.objects.filter(
                message=message, type=event.type, data__provider_event_id=event.provider_event_id).exists():
            return message
        data = {"source": source, "recipient": (event.recipient or message.to_address).lower()}
        if event.type == "message.bounced":
            data["bounce_type"] = event.bounce_type if event.bounce_type in ("hard", "soft") else "hard"
        for key in ("provider_event_id", "description", "diagnostic"):
            value = getattr(event, key)
            if value:
                data[key] = str(value)[:1000]
        data.update(event.extra)
        events.emit(workspace=message.workspace, type=event.type, message=message, data=data,
                    occurred_at=event.occurred_at)
    return message


def _handlers():
    from providers import esp

    return {"ses": esp.parse_ses, "mailgun": esp.parse_mailgun, "sendgrid": esp.parse_sendgrid,
            "postmark": esp.parse_postmark}


def _error(status, code, message, headers=None):
    response = JsonResponse(error_body(code, message), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _read_body(request):
    limit = max_body_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise malformed("Content-Length is not a number.")
    if declared > limit:
        raise CallbackError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise CallbackError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    request._body = body  # what the parsers (and anymail's views) read as request.body
    return body


@csrf_exempt
def provider_callback(request, kind, provider_id):
    if request.method == "HEAD":
        return HttpResponse()
    if request.method != "POST":
        return _error(405, "method_not_allowed", "Callbacks are POSTed.", {"Allow": "POST, HEAD"})
    handler = _handlers().get(kind)
    connection = ProviderConnection.objects.select_related("workspace").filter(pk=provider_id, kind=kind).first()
    if handler is None or connection is None:
        return _error(404, "not_found", "Not found.")
    actor = Actor("system", connection.pk, f"{kind} callback ({connection.name})")
    with acting_as(actor, request_id=getattr(request, "request_id", None), ip=request.META.get("REMOTE_ADDR")):
        try:
            _read_body(request)
            parsed = handler(connection, request)
        except CallbackError as exc:
            if exc.status >= 500:
                logger.warning("Callback for %s failed: %s", connection.pk, exc.message)
            return _error(exc.status, exc.code, exc.message, exc.headers)
        if parsed.note and not parsed.events:
            return JsonResponse({"received": 0, "matched": 0, "note": parsed.note})
        matched = 0
        relevant = [e for e in parsed.events if e.type in CANONICAL_TYPES]
        for event in relevant:
            if record(workspace=connection.workspace, event=event, source=f"{kind}:{connection.pk}") is not None:
                matched += 1
        if relevant and not matched:
            return _error(404, "not_found", "No message of this connection's workspace matches the payload.")
    return JsonResponse({"received": len(parsed.events), "matched": matched})
