"""Accepting sends: idempotency, the policy decision, the Message row, its events and audit, then enqueue."""

import hashlib
import json
import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from controlplane import events, policy
from controlplane.api.errors import PolicyRejection, error_body
from controlplane.models import WAITING_STATUSES, IdempotencyRecord, Message

logger = logging.getLogger(__name__)

MAX_RACE_RETRIES = 8


class IdempotencyConflict(Exception):
    pass


class _Replay(Exception):
    """Another request already holds this Idempotency-Key: answer with its response."""


def request_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _replay_or_conflict(workspace, key, digest):
    record = IdempotencyRecord.objects.filter(workspace=workspace, key=key).first()
    if record is None:
        return None
    if record.request_hash != digest:
        raise IdempotencyConflict("This Idempotency-Key was used with a different request body.")
    return record.response_status, record.response_body


def submit(*, workspace, data: dict, serialize, idempotency_key: str = "", now=None, enqueue_later=None):
    """Returns (http status, body). `data` is validated input; `serialize(message)` renders the 202 body.

    With `enqueue_later` (a list), accepted messages are appended to it for the caller to enqueue
    in one go (`flush_enqueue`) instead of one Redis round trip each."""
    digest = request_hash(data) if idempotency_key else ""
    if idempotency_key:
        replay = _replay_or_conflict(workspace, idempotency_key, digest)
        if replay:
            return replay
    request = policy.SendRequest(
        to=data["to"], from_address=data.get("from") or "", pool=data.get("pool"),
        workload=data.get("workload") or "cold", send_at=data.get("send_at"), thread_key=data.get("thread_key") or "",
    )
    for _ in range(MAX_RACE_RETRIES):
        try:
            with transaction.atomic():
                record = _claim_key(workspace, idempotency_key, digest)
                message = _accept(workspace=workspace, request=request, data=data, now=now)
                body = serialize(message)
                if record is not None:
                    IdempotencyRecord.objects.filter(pk=record.pk).update(response_status=202, response_body=body)
                if enqueue_later is None:
                    transaction.on_commit(lambda m=message: _enqueue([m]))
                else:
                    transaction.on_commit(lambda m=message: enqueue_later.append(m))
            return 202, body
        except policy.LostRace:
            continue
        except _Replay:
            return _replay_or_conflict(workspace, idempotency_key, digest)
        except PolicyRejection as rejection:
            return _reject(workspace, request, rejection, idempotency_key, digest)
    rejection = PolicyRejection("cap_exhausted", "Every candidate mailbox filled up while this send was placed; retry.",
                                next_available_at=None)
    return _reject(workspace, request, rejection, idempotency_key, digest)


def _claim_key(workspace, key, digest):
    if not key:
        return None
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(workspace=workspace, key=key, request_hash=digest)
    except IntegrityError:
        raise _Replay()


def _reject(workspace, request, rejection, key, digest):
    body = error_body(rejection.error_code, rejection.message, **rejection.details)
    try:
        with transaction.atomic():
            if key:
                IdempotencyRecord.objects.create(workspace=workspace, key=key, request_hash=digest,
                                                 response_status=422, response_body=body)
            audit.record(workspace=workspace, action="message.rejected", object_type="message",
                         object_repr=audit.pseudonym(request.to),
                         after={"to": audit.pseudonym(request.to), "from": request.from_address,
                                "workload": request.workload, "code": rejection.error_code, **rejection.details})
    except IntegrityError:
        return _replay_or_conflict(workspace, key, digest)
    return 422, body


def _accept(*, workspace, request, data, now=None) -> Message:
    now = now or timezone.now()
    decision = policy.decide(workspace=workspace, request=request, now=now)
    mailbox = decision.mailbox
    status = "queued" if decision.scheduled_at <= now else "scheduled"
    message = Message.objects.create(
        workspace=workspace, mailbox=mailbox, pool=decision.pool, pinned=bool(request.from_address),
        to_address=request.to, from_address=mailbox.address, workload=request.workload,
        subject=data["subject"], text=data["text"], html=data.get("html") or "", headers=data.get("headers") or {},
        metadata=data.get("metadata") or {}, thread_key=request.thread_key, status=status,
        scheduled_at=decision.scheduled_at, reserved_day=decision.day, decision=decision.as_dict(),
    )
    message.mailbox = mailbox
    events.emit(workspace=workspace, type="message.accepted", message=message,
                data={"mailbox": mailbox.pk, "scheduled_at": message.scheduled_at.isoformat()})
    if status == "scheduled":
        events.emit(workspace=workspace, type="message.scheduled", message=message,
                    data={"scheduled_at": message.scheduled_at.isoformat(),
                          "reason": _wait_reason(request, decision, now)})
    audit.record(workspace=workspace, action="message.accepted", obj=message, after=message.decision)
    return message


def _wait_reason(request, decision, now):
    """Why a message waits: its own `send_at`, the mailbox's send window, or pacing between sends."""
    from mailboxes.services import caps

    if request.send_at and decision.scheduled_at == request.send_at:
        return "send_at"
    bounds = caps.window_bounds(decision.mailbox, decision.day)
    if bounds and decision.scheduled_at == bounds[0]:
        return "send_window"
    return "pacing"


def _enqueue(messages):
    """After commit. If Redis is unreachable the messages stay queued in the database and the
    reconciler enqueues them later: the request still succeeds."""
    from controlplane import dispatch

    if not messages:
        return
    try:
        dispatch.enqueue_many([(m.pk, m.scheduled_at, 0) for m in messages])
    except Exception:  # noqa: BLE001
        logger.warning("Could not enqueue %d message(s) now; the reconciler will.", len(messages), exc_info=True)


flush_enqueue = _enqueue


def cancel(*, message: Message) -> Message:
    """Cancels a message that has not been handed off, freeing its reservation."""
    from mailboxes.services import caps

    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message.pk)
        if message.status not in WAITING_STATUSES:
            raise PolicyRejection("not_cancellable", f"The message is {message.status}; only a message that has not "
                                  "been handed off can be cancelled.")
        before = message.status
        message.status = "cancelled"
        message.save(update_fields=["status", "updated_at"])
        if message.mailbox_id and message.reserved_day:
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day)
        events.emit(workspace=message.workspace, type="message.cancelled", message=message)
        audit.record(workspace=message.workspace, action="message.cancelled", obj=message,
                     before={"status": before}, after={"status": "cancelled"})
    return message
