"""Accepting sends: idempotency, the policy decision, the Message row, its events and audit, then enqueue."""

import hashlib
import json
import logging

from django.db import connection, transaction
from django.utils import timezone

from audit import services as audit
from controlplane import bulk, events, policy
from controlplane.api.errors import PolicyRejection, error_body
from controlplane.models import WAITING_STATUSES, IdempotencyRecord, Message

logger = logging.getLogger(__name__)

MAX_RACE_RETRIES = 8


class IdempotencyConflict(Exception):
    pass


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
    """Returns (http status, body) for one send; raises IdempotencyConflict. See `submit_many`."""
    result = submit_many(workspace=workspace, items=[(data, idempotency_key)], serialize=serialize, now=now,
                         enqueue_later=enqueue_later)[0]
    if isinstance(result, IdempotencyConflict):
        raise result
    return result


def submit_many(*, workspace, items, serialize, now=None, enqueue_later=None) -> list:
    """Accepts many sends; `items` are (validated data, Idempotency-Key or "") pairs. One result per item,
    in order: (http status, body), or an IdempotencyConflict.

    Each round is one transaction: the policy places every pending send at once (`policy.decide_many`),
    then the messages, their events, idempotency records and audit entries are written in a few
    statements. Sends whose candidate mailboxes were all locked by other intakes go to the next round.
    `serialize(message)` renders a 202 body. With `enqueue_later` (a list), accepted messages are
    appended to it for the caller to enqueue (`flush_enqueue`); otherwise they are enqueued after commit."""
    results = [None] * len(items)
    requests, digests = [], []
    for data, key in items:
        requests.append(policy.SendRequest(
            to=data["to"], from_address=data.get("from") or "", pool=data.get("pool"),
            workload=data.get("workload") or "cold", send_at=data.get("send_at"),
            thread_key=data.get("thread_key") or ""))
        digests.append(request_hash(data) if key else "")
    pending = _replays(workspace, items, digests, results)
    for attempt in range(MAX_RACE_RETRIES):
        if not pending:
            break
        with transaction.atomic():
            pending = _claim_keys(workspace, items, digests, pending, results)
            decisions = policy.decide_many(workspace=workspace, requests=[requests[i] for i in pending], now=now,
                                           wait=len(pending) == 1 or attempt > 0)
            placed = [(i, d) for i, d in zip(pending, decisions) if d is not None]
            lost = [i for i, d in zip(pending, decisions) if d is None]
            _release_keys(workspace, [items[i][1] for i in lost])
            accepted = _write(workspace, placed, items, requests, serialize, results, now)
            if accepted:
                if enqueue_later is None:
                    transaction.on_commit(lambda a=accepted: _enqueue(a))
                else:
                    transaction.on_commit(lambda a=accepted: enqueue_later.extend(a))
        pending = lost
    if pending:
        rejection = PolicyRejection("cap_exhausted", "Every candidate mailbox filled up while this send was placed; "
                                    "retry.", next_available_at=None)
        with transaction.atomic():
            pending = _claim_keys(workspace, items, digests, pending, results)
            _write(workspace, [(i, rejection) for i in pending], items, requests, serialize, results, now)
    return results


def _replays(workspace, items, digests, results) -> list:
    """Fills in the answers already given to these Idempotency-Keys; returns the indexes still to decide."""
    keys = [key for _, key in items if key]
    records = {r.key: r for r in IdempotencyRecord.objects.filter(workspace=workspace, key__in=keys)} if keys else {}
    pending = []
    for i, (_, key) in enumerate(items):
        record = records.get(key) if key else None
        if record is None:
            pending.append(i)
        elif record.request_hash != digests[i]:
            results[i] = IdempotencyConflict("This Idempotency-Key was used with a different request body.")
        elif record.response_status is None:
            results[i] = (409, error_body("idempotency_conflict", "A request with this Idempotency-Key is still "
                                          "being processed; retry."))
        else:
            results[i] = (record.response_status, record.response_body)
    return pending


def _claim_keys(workspace, items, digests, pending, results) -> list:
    """Claims the pending sends' keys (one insert); a key another request holds is answered as a replay."""
    keyed = [i for i in pending if items[i][1]]
    if not keyed:
        return pending
    q = connection.ops.quote_name
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {q(IdempotencyRecord._meta.db_table)} ({q('workspace_id')}, {q('key')}, {q('request_hash')}, "
            f"{q('created_at')}) VALUES " + ", ".join(["(%s, %s, %s, %s)"] * len(keyed))
            + f" ON CONFLICT ({q('workspace_id')}, {q('key')}) DO NOTHING RETURNING {q('key')}",
            [v for i in keyed for v in (workspace.pk, items[i][1], digests[i], now)])
        claimed = {row[0] for row in cursor.fetchall()}
    taken = [i for i in keyed if items[i][1] not in claimed]
    if taken:
        answered = [None] * len(items)
        _replays(workspace, items, digests, answered)
        for i in taken:
            results[i] = answered[i] or (409, error_body("idempotency_conflict", "A request with this "
                                                         "Idempotency-Key was just withdrawn; retry."))
    return [i for i in pending if i not in set(taken)]


def _release_keys(workspace, keys):
    keys = [k for k in keys if k]
    if keys:
        IdempotencyRecord.objects.filter(workspace=workspace, key__in=keys, response_status__isnull=True).delete()


def _write(workspace, placed, items, requests, serialize, results, now=None) -> list:
    """Messages, events, idempotency answers and audit entries for decided sends, in a few statements."""
    now = now or timezone.now()
    messages, audit_entries, answers = [], [], {}
    for i, decision in placed:
        data, key = items[i]
        request = requests[i]
        if isinstance(decision, PolicyRejection):
            body = error_body(decision.error_code, decision.message, **decision.details)
            results[i] = (422, body)
            audit_entries.append(dict(
                action="message.rejected", object_type="message", object_repr=audit.pseudonym(request.to),
                after={"to": audit.pseudonym(request.to), "from": request.from_address, "workload": request.workload,
                       "code": decision.error_code, **decision.details}))
        else:
            message = _message(workspace, request, data, decision, now)
            messages.append((i, message, decision))
    if messages:
        bulk.insert(Message, [m for _, m, _ in messages])
        emitted = []
        for i, message, decision in messages:
            emitted.append(("message.accepted", message, {"mailbox": message.mailbox_id,
                                                          "scheduled_at": message.scheduled_at.isoformat()}))
            if message.status == "scheduled":
                emitted.append(("message.scheduled", message, {"scheduled_at": message.scheduled_at.isoformat(),
                                                               "reason": decision.wait_reason or "pacing"}))
            audit_entries.append(dict(action="message.accepted", obj=message, after=message.decision))
            results[i] = (202, serialize(message))
        events.emit_many(workspace=workspace, items=emitted)
    for i, _ in placed:
        if items[i][1]:
            answers[items[i][1]] = results[i]
    if answers:
        records = list(IdempotencyRecord.objects.filter(workspace=workspace, key__in=list(answers)))
        for record in records:
            record.response_status, record.response_body = answers[record.key]
        IdempotencyRecord.objects.bulk_update(records, ["response_status", "response_body"])
    if audit_entries:
        audit.record_many(workspace=workspace, entries=audit_entries)
    return [m for _, m, _ in messages]


def _message(workspace, request, data, decision, now) -> Message:
    mailbox = decision.mailbox
    return bulk.new(
        Message, workspace=workspace, mailbox=mailbox, pool=decision.pool, pinned=bool(request.from_address),
        to_address=request.to, from_address=mailbox.address, workload=request.workload,
        subject=data["subject"], text=data["text"], html=data.get("html") or "", headers=data.get("headers") or {},
        metadata=data.get("metadata") or {}, thread_key=request.thread_key,
        status="queued" if decision.scheduled_at <= now else "scheduled",
        scheduled_at=decision.scheduled_at, reserved_day=decision.day, reserved_hour=decision.hour,
        decision=decision.as_dict(), created_at=now, updated_at=now,
    )


def _enqueue(messages):
    """After commit. If Redis is unreachable the messages stay queued in the database and the
    reconciler enqueues them later: the request still succeeds."""
    from controlplane import dispatch

    if not messages:
        return
    try:
        dispatch.enqueue_many([(m.pk, m.scheduled_at, 0, m.mailbox_id) for m in messages])
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
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day,
                                  hour=message.reserved_hour)
        events.emit(workspace=message.workspace, type="message.cancelled", message=message)
        audit.record(workspace=message.workspace, action="message.cancelled", obj=message,
                     before={"status": before}, after={"status": "cancelled"})
    return message
