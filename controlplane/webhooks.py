"""Webhooks out (Standard Webhooks): endpoints per workspace, signed deliveries retried with backoff.

Every event a workspace emits becomes one `WebhookDelivery` per subscribed endpoint, written in the
emitting transaction (an outbox: the event and its deliveries commit or roll back together) and sent
after commit by jobs on the "webhooks" queue, away from dispatch; `reconcile` re-queues any whose job
was lost. A delivery is signed anew on every attempt (`webhook-timestamp` moves on), keeps its
`webhook-id` (the event id), and is retried with backoff for more than 24 hours before it is
dead-lettered; dead letters are re-delivered on request, and `replay` sends a range of events again.
During a secret rotation's overlap every delivery carries a signature made with each secret. An
endpoint whose deliveries have all failed for three days is disabled; what arrives for a disabled
endpoint is dead-lettered, never dropped. Targets must be public addresses unless
`WEBHOOKS_ALLOW_PRIVATE`; they are checked when an endpoint is created and again, resolved and
pinned, at every attempt. See docs/webhooks.md.
"""

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
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
RECONCILER_ACTOR = Actor("system", "", "webhook reconciler")
# An endpoint whose every attempt has failed for this long (no success since the first failure) is disabled.
DISABLE_AFTER = dt.timedelta(days=3)
DEFAULT_OVERLAP_SECONDS = 24 * 3600
MAX_OVERLAP_SECONDS = 30 * 24 * 3600
REPLAY_MAX_EVENTS = 10_000
INSERT_BATCH = 1000
RECONCILE_BATCH = 10_000  # overdue deliveries re-queued per run; the rest on the next run
DISABLED_ERROR = "The endpoint is disabled"


class UnsafeTarget(ValueError):
    pass


class InvalidRequest(ValueError):
    """A request a service refuses, with the field it is about (for the contract's `fields`)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


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


def rotate_secret(*, endpoint: WebhookEndpoint, overlap_seconds: int = DEFAULT_OVERLAP_SECONDS) -> str:
    """A new signing secret, returned once. For `overlap_seconds` deliveries are signed with the current
    secret too, so receivers can switch without losing a delivery; a second rotation within an overlap
    keeps only the secret it replaces."""
    if isinstance(overlap_seconds, bool) or not isinstance(overlap_seconds, int) \
            or not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        raise InvalidRequest("overlap_seconds", f"Give a whole number of seconds from 0 to {MAX_OVERLAP_SECONDS}.")
    secret = new_secret()
    now = timezone.now()
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().select_related("workspace").get(pk=endpoint.pk)
        before = {"secret": "[set]", "previous_secret_expires_at": current.previous_secret_expires_at}
        replaced = endpoint_secret(current)
        current.secret, current.previous_secret_expires_at = {"key": secret}, None
        if overlap_seconds:
            current.secret["previous_key"] = replaced
            current.previous_secret_expires_at = now + dt.timedelta(seconds=overlap_seconds)
        current.save(update_fields=["secret", "previous_secret_expires_at", "updated_at"])
        audit.record(workspace=current.workspace, action="webhook.secret_rotated", obj=current, before=before,
                     after={"secret": "[changed]", "overlap_seconds": overlap_seconds,
                            "previous_secret_expires_at": current.previous_secret_expires_at})
    endpoint.previous_secret_expires_at = current.previous_secret_expires_at
    return secret


def endpoint_secret(endpoint) -> str:
    return (endpoint.secret or {}).get("key", "")


def signing_secrets(endpoint, now=None) -> list[str]:
    """The current secret, then the previous one while a rotation's overlap lasts."""
    now = now or timezone.now()
    secrets_now = [endpoint_secret(endpoint)]
    previous = (endpoint.secret or {}).get("previous_key")
    if previous and endpoint.previous_secret_expires_at and now < endpoint.previous_secret_expires_at:
        secrets_now.append(previous)
    return secrets_now


def signature_header(endpoint, webhook_id: str, timestamp: int, body: str) -> str:
    """Standard Webhooks' `webhook-signature`: space-separated `v1,<sig>`, one per valid secret."""
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in signing_secrets(endpoint))


def expire_previous_secrets(now=None) -> int:
    """Forgets previous secrets whose overlap is over (they no longer sign anything)."""
    now = now or timezone.now()
    count = 0
    for endpoint in WebhookEndpoint.objects.filter(previous_secret_expires_at__lte=now):
        endpoint.secret = {"key": endpoint_secret(endpoint)}
        endpoint.previous_secret_expires_at = None
        endpoint.save(update_fields=["secret", "previous_secret_expires_at"])
        count += 1
    return count


def disable_endpoint(*, endpoint: WebhookEndpoint, reason: str) -> int:
    """Stops deliveries to the endpoint; what is pending, and what arrives while disabled, is dead-lettered
    (re-deliverable, and recoverable by replay). Returns how many deliveries were dead-lettered now."""
    now = timezone.now()
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().select_related("workspace").get(pk=endpoint.pk)
        if not current.active:
            return 0
        WebhookEndpoint.objects.filter(pk=current.pk).update(active=False, disabled_at=now, disabled_reason=reason,
                                                             updated_at=now)
        dead = WebhookDelivery.objects.filter(endpoint_id=current.pk, status="pending").update(
            status="dead", next_attempt_at=None, error=f"{DISABLED_ERROR}: {reason}")
        audit.record(workspace=current.workspace, action="webhook.disabled", obj=current,
                     before={"active": True}, after={"active": False, "disabled_reason": reason, "dead_lettered": dead})
    endpoint.active, endpoint.disabled_at, endpoint.disabled_reason = False, now, reason
    logger.warning("Webhook endpoint %s disabled: %s", endpoint.pk, reason)
    return dead


def enable_endpoint(*, endpoint: WebhookEndpoint) -> int:
    """Delivers again from now on; returns the number of dead letters waiting for a re-delivery or replay."""
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().select_related("workspace").get(pk=endpoint.pk)
        dead = WebhookDelivery.objects.filter(endpoint_id=current.pk, status="dead").count()
        if current.active:
            return dead
        WebhookEndpoint.objects.filter(pk=current.pk).update(active=True, disabled_at=None, disabled_reason="",
                                                             failing_since=None, updated_at=timezone.now())
        audit.record(workspace=current.workspace, action="webhook.enabled", obj=current,
                     before={"active": False, "disabled_reason": current.disabled_reason},
                     after={"active": True, "dead_letters": dead})
    endpoint.active, endpoint.disabled_at, endpoint.disabled_reason, endpoint.failing_since = True, None, "", None
    return dead


def disable_failing_endpoints(now=None) -> list[str]:
    """Disables every active endpoint whose attempts have all failed for DISABLE_AFTER (a periodic job)."""
    now = now or timezone.now()
    disabled = []
    failing = WebhookEndpoint.objects.filter(active=True, failing_since__lte=now - DISABLE_AFTER)
    for endpoint in failing.select_related("workspace"):
        last_error = (WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, last_attempt_at__isnull=False)
                      .exclude(error="").order_by("-id").values_list("error", flat=True).first())
        reason = (f"Every delivery attempt failed for {DISABLE_AFTER.days} days (since "
                  f"{endpoint.failing_since:%Y-%m-%d %H:%M} UTC, no success since)")
        if last_error:
            reason += f"; last error: {last_error}"
        with acting_as(RECONCILER_ACTOR):
            disable_endpoint(endpoint=endpoint, reason=reason[:500])
        disabled.append(endpoint.pk)
    return disabled


# --- Fan-out (the outbox) -------------------------------------------------------------------------

def fan_out(event: Event) -> list:
    """One delivery per endpoint that wants `event`, written in the emitting transaction."""
    return fan_out_many([event])


def fan_out_many(events) -> list:
    """The deliveries of many saved events in one query for endpoints and one insert, queued after commit.
    Endpoints that are disabled get their deliveries dead-lettered at once. Returns the pending ids."""
    events = list(events)
    if not events:
        return []
    endpoints = list(WebhookEndpoint.objects.filter(workspace_id__in={e.workspace_id for e in events})
                     .only("id", "workspace_id", "event_types", "active", "disabled_reason"))
    if not endpoints:
        return []
    by_workspace = {}
    for endpoint in endpoints:
        by_workspace.setdefault(endpoint.workspace_id, []).append(endpoint)
    now = timezone.now()
    rows = []
    for event in events:
        for endpoint in by_workspace.get(event.workspace_id, ()):
            if endpoint.wants(event.type):
                rows.append(_delivery_row(endpoint, event.pk, now))
    return _insert_and_queue(rows)


def _delivery_row(endpoint, event_pk, now, *, replay=False):
    if endpoint.active:
        return WebhookDelivery(endpoint_id=endpoint.pk, event_id=event_pk, next_attempt_at=now, replay=replay)
    return WebhookDelivery(endpoint_id=endpoint.pk, event_id=event_pk, status="dead", replay=replay,
                           error=f"{DISABLED_ERROR}: {endpoint.disabled_reason}" if endpoint.disabled_reason
                           else f"{DISABLED_ERROR}.")


def _insert_and_queue(rows, batch_size=None) -> list:
    WebhookDelivery.objects.bulk_create(rows, batch_size=batch_size)
    ids = [row.pk for row in rows if row.status == "pending"]
    if ids:
        transaction.on_commit(lambda: _enqueue_many_safely(ids))
    return ids


def _enqueue_safely(delivery_id, when=None):
    try:
        enqueue(delivery_id, when)
    except Exception:  # noqa: BLE001 - Redis down: the delivery row waits for `reconcile`
        logger.warning("Could not queue webhook delivery %s now; the reconciler will.", delivery_id, exc_info=True)


def _enqueue_many_safely(ids):
    from controlplane.queues import queue

    try:
        q = queue(QUEUE)
        for start in range(0, len(ids), INSERT_BATCH):
            q.enqueue_many([q.prepare_data(deliver, (pk,), result_ttl=0) for pk in ids[start:start + INSERT_BATCH]])
    except Exception:  # noqa: BLE001 - Redis down: the delivery rows wait for `reconcile`
        logger.warning("Could not queue %d webhook deliveries now; the reconciler will.", len(ids), exc_info=True)


def enqueue(delivery_id, when=None):
    from controlplane.queues import queue

    q = queue(QUEUE)
    if when is not None and when > timezone.now() + dt.timedelta(seconds=1):
        q.enqueue_at(when, deliver, delivery_id, result_ttl=0)
    else:
        q.enqueue(deliver, delivery_id, result_ttl=0)


# --- Dead letters and replay ----------------------------------------------------------------------

def _range_bound(workspace_id, field, value):
    """("seq", n) for an event id of the workspace, ("time", datetime) for an ISO 8601 time (naive: UTC)."""
    value = (value or "").strip()
    if value.startswith("evt_"):
        seq = Event.objects.filter(workspace_id=workspace_id, id=value).values_list("seq", flat=True).first()
        if seq is None:
            raise InvalidRequest(field, f"No event {value} in this workspace.")
        return "seq", seq
    # A "+" in a query string arrives as a space: "09:00:00 01:00" is "09:00:00+01:00".
    value = re.sub(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", value)
    try:
        when = parse_datetime(value.replace("Z", "+00:00"))  # a date alone is its midnight
    except ValueError:
        when = None
    if when is None:
        raise InvalidRequest(field, "Give an ISO 8601 time (2025-01-31T09:00:00Z) or an event id (evt_…).")
    return "time", when if timezone.is_aware(when) else when.replace(tzinfo=dt.timezone.utc)


def replay_range(endpoint: WebhookEndpoint, since: str, until: str | None = None):
    """The endpoint's events from `since` (inclusive) to `until` (a time: exclusive; an event: inclusive)."""
    if not since:
        raise InvalidRequest("since", "Give the start of the range: an ISO 8601 time or an event id.")
    events = Event.objects.filter(workspace_id=endpoint.workspace_id)
    start = _range_bound(endpoint.workspace_id, "since", since)
    events = events.filter(seq__gte=start[1]) if start[0] == "seq" else events.filter(occurred_at__gte=start[1])
    if until:
        end = _range_bound(endpoint.workspace_id, "until", until)
        if end[0] == start[0] and (end[1] < start[1] or end[0] == "time" and end[1] == start[1]):
            raise InvalidRequest("until", "`until` must come after `since`.")
        events = events.filter(seq__lte=end[1]) if end[0] == "seq" else events.filter(occurred_at__lt=end[1])
    if endpoint.event_types:
        events = events.filter(type__in=endpoint.event_types)
    return events.order_by("seq")


def replay(*, endpoint: WebhookEndpoint, since: str, until: str | None = None) -> dict:
    """Delivers every event of the range the endpoint subscribes to again, in event order, as new
    deliveries (same event id, so receivers can de-duplicate). Audited."""
    events = replay_range(endpoint, since, until)
    count = events.count()
    if count > REPLAY_MAX_EVENTS:
        raise InvalidRequest("until", f"The range holds {count} events; replay at most {REPLAY_MAX_EVENTS} at a "
                                      "time (narrow it with `until`).")
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().select_related("workspace").get(pk=endpoint.pk)
        if not current.active:
            raise InvalidRequest("non_field_errors", "The endpoint is disabled; enable it before replaying.")
        now = timezone.now()
        found = list(events.values_list("seq", "id"))
        ids = _insert_and_queue([_delivery_row(current, seq, now, replay=True) for seq, _ in found], INSERT_BATCH)
        result = {"events": len(found), "first_event": found[0][1] if found else None,
                  "last_event": found[-1][1] if found else None, "since": since, "until": until}
        audit.record(workspace=current.workspace, action="webhook.replayed", obj=current, after=result)
    return {**result, "deliveries": len(ids)}


def redeliver_dead(*, endpoint: WebhookEndpoint) -> int:
    """Queues every dead letter of the endpoint for one more attempt each. Audited."""
    with transaction.atomic():
        ids = list(WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, status="dead")
                   .order_by("event_id").values_list("pk", flat=True))
        if not ids:
            return 0
        WebhookDelivery.objects.filter(pk__in=ids).update(status="pending", next_attempt_at=timezone.now())
        audit.record(workspace=endpoint.workspace, action="webhook.dead_letters_redelivered", obj=endpoint,
                     after={"deliveries": len(ids)})
        transaction.on_commit(lambda: _enqueue_many_safely(ids))
    return len(ids)


# --- Delivery -------------------------------------------------------------------------------------

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
            WebhookDelivery.objects.filter(pk=delivery.pk).update(status="dead", next_attempt_at=None,
                                                                   error=f"{DISABLED_ERROR}.")
            return "endpoint disabled"
        body = body_for(delivery.event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "outbound-control-plane-webhooks/1",
            "webhook-id": delivery.event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(endpoint, delivery.event.id, timestamp, body),
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
    endpoints = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if not error:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="succeeded", delivered_at=now,
                                                               next_attempt_at=None, **fields)
        endpoints.filter(failing_since__isnull=False).update(failing_since=None)  # the failure streak ends
        return "succeeded"
    endpoints.filter(failing_since__isnull=True).update(failing_since=now)  # a failure streak starts
    delays = retry_delays()
    if attempts > len(delays):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="dead", next_attempt_at=None, **fields)
        return "dead"
    when = now + dt.timedelta(seconds=delays[attempts - 1])
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=when, **fields)
    _enqueue_safely(delivery.pk, when)
    return "retrying"


def retry_delivery(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Sends a delivery again now (an operator's re-delivery); a dead letter gets one more attempt."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status="pending", next_attempt_at=timezone.now())
        audit.record(workspace=delivery.endpoint.workspace, action="webhook.delivery_retried", obj=delivery,
                     before={"status": delivery.status, "attempts": delivery.attempts}, after={"status": "pending"})
        transaction.on_commit(lambda: _enqueue_safely(delivery.pk))
    delivery.refresh_from_db()
    return delivery


def reconcile(now=None) -> int:
    """The periodic job: disables endpoints failing for DISABLE_AFTER, forgets secrets whose overlap is over,
    and queues pending deliveries whose attempt is overdue (a lost job, or Redis was down at commit)."""
    now = now or timezone.now()
    disable_failing_endpoints(now)
    expire_previous_secrets(now)
    overdue = WebhookDelivery.objects.filter(status="pending", next_attempt_at__lt=now - dt.timedelta(minutes=2))
    ids = list(overdue.order_by("next_attempt_at").values_list("pk", flat=True)[:RECONCILE_BATCH])
    for start in range(0, len(ids), INSERT_BATCH):
        chunk = ids[start:start + INSERT_BATCH]
        overdue.filter(pk__in=chunk).update(next_attempt_at=now)  # still overdue: not claimed meanwhile
        _enqueue_many_safely(chunk)
    return len(ids)
