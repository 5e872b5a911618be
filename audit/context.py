"""Who is acting, for the current request, API call, command or job (contextvars)."""

import contextlib
import contextvars
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    type: str  # "user", "api_key", "system"
    id: str = ""
    label: str = ""


SYSTEM = Actor("system", "", "system")

_actor = contextvars.ContextVar("audit_actor", default=SYSTEM)
_request_id = contextvars.ContextVar("audit_request_id", default="")
_ip = contextvars.ContextVar("audit_ip", default=None)


def current_actor() -> Actor:
    return _actor.get()


def current_request_id() -> str:
    return _request_id.get()


def current_ip():
    return _ip.get()


def set_actor(actor: Actor):
    _actor.set(actor)


def actor_for_user(user) -> Actor:
    return Actor("user", str(user.pk), user.get_username())


def actor_for_api_key(key) -> Actor:
    return Actor("api_key", key.prefix, f"{key.name} ({key.prefix})")


@contextlib.contextmanager
def acting_as(actor: Actor, *, request_id: str | None = None, ip=None):
    tokens = [
        (_actor, _actor.set(actor)),
        (_request_id, _request_id.set(request_id or uuid.uuid4().hex)),
        (_ip, _ip.set(ip)),
    ]
    try:
        yield actor
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def client_ip(request):
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    """Gives every request a request id (echoed as X-Request-Id) and its user as actor.

    API-key requests replace the actor once DRF authenticates the key.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.META.get("HTTP_X_REQUEST_ID", "")[:64] or uuid.uuid4().hex
        request.request_id = request_id
        user = getattr(request, "user", None)
        actor = actor_for_user(user) if user is not None and user.is_authenticated else SYSTEM
        with acting_as(actor, request_id=request_id, ip=client_ip(request)):
            response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response
