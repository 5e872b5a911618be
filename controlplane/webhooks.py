"""Webhooks out (Standard Webhooks): endpoints per workspace, signed deliveries retried with backoff.

Every event a workspace emits becomes one `WebhookDelivery` per subscribed endpoint, written in
the emitting transaction (so none is lost) and sent after commit by jobs on the "webhooks" queue,
away from dispatch. A delivery is signed anew on every attempt (`webhook-timestamp` moves on),
keeps its `webhook-id` (the event id), and is retried with backoff for more than 24 hours before
it is marked failed. Targets must be public addresses unless `WEBHOOKS_ALLOW_PRIVATE`; they are
checked when an endpoint is created and again, resolved and pinned, at every attempt.
"""

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from requests.adapters import HTTPAdapter

from audit import services as audit
from audit.context import Actor, acting_as
from controlplane.models import Event, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

# Standard Webhooks' suggested schedule: ~27.6 hours from the first failure to the last attempt.
DEFAULT_RETRY_DELAYS = [5, 300, 1800, 7200, 18000, 36000, 36000]
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 10
SECRET_PREFIX = "whsec_"
QUEUE = "webhooks"
WORKER_ACTOR = Actor("system", "", "webhook worker")


class UnsafeTarget(ValueError):
    pass


def retry_delays() -> list:
    return list(getattr(settings, "WEBHOOK_RETRY_DELAYS", DEFAULT_RETRY_DELAYS))


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with the base64-decoded secret."""
    key = base64.b64decode(secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret)
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# --- Where deliveries may go -----------------------------------------------------------------------

def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_target(url: str) -> list[str]:
    """The addresses `url` may be sent to; raises UnsafeTarget with a message for the user."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeTarget("Must be an https:// URL.")
    if parts.scheme == "http" and not settings.DEBUG:
        raise UnsafeTarget("Must be an https:// URL (plain http is allowed only in DEBUG).")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("The URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("The URL's port is not valid.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeTarget(f"{host} does not resolve.")
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not getattr(settings, "WEBHOOKS_ALLOW_PRIVATE", False):
        private = [a for a in addresses if not _is_public(a)]
        if private:
            raise UnsafeTarget(f"{host} resolves to a private, loopback or link-local address ({private[0]}); "
                               "webhooks go only to public addresses.")
    return addresses


class _PinnedHostAdapter(HTTPAdapter):
    """Connects to an address we checked while TLS still verifies the URL's host name."""

    def __init__(self, hostname, **kwargs):
        self.hostname = hostname
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["server_hostname"] = self.hostname
        pool_kwargs["assert_hostname"] = self.hostname
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def _post_pinned(url, address, *, data, headers):
    parts = urlsplit(url)
    host_for_url = f"[{address}]" if ":" in address else address
    netloc = host_for_url + (f":{parts.port}" if parts.port else "")
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    with requests.Session() as session:
        session.trust_env = False  # a proxy would see the pinned address, not the host: go direct
        if parts.scheme == "https":
            session.mount("https://", _PinnedHostAdapter(parts.hostname))
        return session.post(pinned, data=data, headers=headers, auth=auth, allow_redirects=False,
                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))


# --- Endpoints ------------------------------------------------------------------------------------

def create_endpoint(*, workspace, url: str, event_types=(), description: str = "") -> tuple[WebhookEndpoint, str]:
    """Returns (endpoint, secret): the secret is shown once."""
    secret = new_secret()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=url, event_types=list(event_types),
                                                  description=description, secret={"key": secret})
        audit.record(workspace=workspace, action="webhook.created", obj=endpoint,
                     after={"url": url, "event_types": list(event_types), "description": description,
                            "secret": "[set]"})
    return endpoint, secret


def delete_endpoint(*, endpoint: WebhookEndpoint):
    with transaction.atomic():
        audit.record(workspace=endpoint.workspace, action="webhook.deleted", obj=endpoint,
                     before={"url": endpoint.url, "event_types": endpoint.event_types})
        endpoint.delete()


# --- Fan-out and delivery -------------------------------------------------------------------------

def fan_out(event: Event) -> list:
    """One pending delivery per endpoint that wants `event`, queued once the emitting transaction commits."""
    endpoints = [e for e in WebhookEndpoint.objects.filter(workspace_id=event.workspace_id, active=True)
                 .only("id", "event_types") if e.wants(event.type)]
    if not endpoints:
        return []
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(endpoint_id=e.pk, event=event, next_attempt_at=now) for e in endpoints])
    ids = [d.pk for d in deliveries]
    transaction.on_commit(lambda: [_enqueue_safely(pk) for pk in ids])
    return ids


def _enqueue_safely(delivery_id, when=None):
    try:
        enqueue(delivery_id, when)
    except Exception:  # noqa: BLE001 - Redis down: the delivery row waits for `reconcile`
        logger.warning("Could not queue webhook delivery %s now; the reconciler will.", delivery_id, exc_info=True)


def enqueue(delivery_id, when=None):
    from controlplane.queues import queue

    q = queue(QUEUE)
    if when is not None and when > timezone.now() + dt.timedelta(seconds=1):
        q.enqueue_at(when, deliver, delivery_id, result_ttl=0)
    else:
        q.enqueue(deliver, delivery_id, result_ttl=0)


def body_for(event: Event) -> str:
    from controlplane.events import serialize

    return json.dumps(serialize(event), separators=(",", ":"), ensure_ascii=False, default=str)


def _claim(delivery_id):
    """Takes the delivery for one attempt (a lease on next_attempt_at), or None if it isn't ours to send."""
    now = timezone.now()
    lease = now + dt.timedelta(seconds=CONNECT_TIMEOUT + READ_TIMEOUT + 60)
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status="pending", next_attempt_at__lte=now + dt.timedelta(
        seconds=1)).update(next_attempt_at=lease)
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("endpoint", "event__message").get(pk=delivery_id)


def deliver(delivery_id: str) -> str:
    """One attempt (an RQ job on the "webhooks" queue)."""
    with acting_as(WORKER_ACTOR):
        delivery = _claim(delivery_id)
        if delivery is None:
            return "not due or already handled"
        endpoint = delivery.endpoint
        if not endpoint.active:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None,
                                                                   error="The endpoint is disabled.")
            return "endpoint disabled"
        body = body_for(delivery.event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "outbound-control-plane-webhooks/1",
            "webhook-id": delivery.event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(endpoint.secret["key"], delivery.event.id, timestamp, body),
        }
        started = time.monotonic()
        status_code, response_body, error = None, "", ""
        try:
            address = resolve_target(endpoint.url)[0]
            response = _post_pinned(endpoint.url, address, data=body.encode(), headers=headers)
            status_code, response_body = response.status_code, response.text[:1000]
            if not 200 <= status_code < 300:
                error = f"The endpoint answered {status_code}."
        except UnsafeTarget as exc:
            error = f"Refused target: {exc}"
        except requests.Timeout:
            error = f"No answer within {READ_TIMEOUT} seconds."
        except requests.RequestException as exc:
            error = f"Could not reach the endpoint: {exc.__class__.__name__}."
        latency_ms = int((time.monotonic() - started) * 1000)
        return _record_attempt(delivery, status_code, response_body, error, latency_ms)


def _record_attempt(delivery, status_code, response_body, error, latency_ms):
    now = timezone.now()
    attempts = delivery.attempts + 1
    log = (delivery.attempt_log or [])[-49:] + [
        {"at": now.isoformat(), "status": status_code, "latency_ms": latency_ms, "error": error}]
    fields = {"attempts": attempts, "last_attempt_at": now, "response_status": status_code,
              "response_body": response_body, "latency_ms": latency_ms, "error": error, "attempt_log": log}
    if not error:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="succeeded", delivered_at=now,
                                                               next_attempt_at=None, **fields)
        return "succeeded"
    delays = retry_delays()
    if attempts > len(delays):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None, **fields)
        return "failed"
    when = now + dt.timedelta(seconds=delays[attempts - 1])
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=when, **fields)
    _enqueue_safely(delivery.pk, when)
    return "retrying"


def retry_delivery(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Sends a delivery again now (an operator's retry); a failed one gets one more attempt."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="pending", next_attempt_at=timezone.now())
        audit.record(workspace=delivery.endpoint.workspace, action="webhook.delivery_retried", obj=delivery,
                     before={"status": delivery.status, "attempts": delivery.attempts}, after={"status": "pending"})
        transaction.on_commit(lambda: _enqueue_safely(delivery.pk))
    delivery.refresh_from_db()
    return delivery


def reconcile(now=None) -> int:
    """Queues pending deliveries whose attempt is overdue (a lost job, or Redis was down at commit)."""
    now = now or timezone.now()
    overdue = WebhookDelivery.objects.filter(status="pending", next_attempt_at__lt=now - dt.timedelta(minutes=2))
    count = 0
    for pk in overdue.values_list("pk", flat=True).iterator(chunk_size=1000):
        WebhookDelivery.objects.filter(pk=pk, status="pending").update(next_attempt_at=now)
        _enqueue_safely(pk)
        count += 1
    return count
