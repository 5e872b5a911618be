"""Hand-off in RQ workers: claim, re-check policy, build MIME, send through the provider, record.

The database is the truth: a job carries a message id, claims the row with a lease, and
re-checks everything. `reconcile` re-enqueues due messages that have no live job and
releases expired leases, so a worker crash or a Redis flush loses nothing.
"""

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import services as audit
from audit.context import Actor, acting_as
from controlplane import events, mime, policy
from controlplane.models import Message
from controlplane.queues import queue, redis_connection
from mailboxes.models import Mailbox
from mailboxes.services import caps
from providers.base import OutgoingMessage, PermanentError, TransientError, transport_for

logger = logging.getLogger(__name__)

WAITING = ["queued", "scheduled", "deferred"]
WORKER_ACTOR = Actor("system", "", "dispatch worker")
# A provider's Retry-After is honoured up to this long; past it the regular retry schedule applies.
MAX_RETRY_AFTER_SECONDS = 3600


def retry_delays():
    return settings.DISPATCH_RETRY_DELAYS


def job_id(message_id: str, attempts: int) -> str:
    """One job id per message and attempt, so the reconciler can tell whether the next attempt is queued."""
    return f"dispatch-{message_id}-{attempts}"


def enqueue(message_id: str, when: dt.datetime | None = None, *, attempts: int = 0):
    """Queues the hand-off job (at `when` if later). Repeats are harmless: only one job claims the message."""
    q = queue("dispatch")
    now = timezone.now()
    ident = job_id(message_id, attempts)
    if when is not None and when > now + dt.timedelta(seconds=1):
        q.enqueue_at(when, dispatch_message, message_id, job_id=ident, result_ttl=0)
    else:
        q.enqueue(dispatch_message, message_id, job_id=ident, result_ttl=0)


def enqueue_many(items):
    """Queues many hand-offs in one Redis round trip; `items` are (message id, when, attempts)."""
    q = queue("dispatch")
    now = timezone.now()
    later = [(pk, when, attempts) for pk, when, attempts in items if when and when > now + dt.timedelta(seconds=1)]
    due = [(pk, attempts) for pk, when, attempts in items if not (when and when > now + dt.timedelta(seconds=1))]
    if due:
        q.enqueue_many([q.prepare_data(dispatch_message, (pk,), job_id=job_id(pk, attempts), result_ttl=0)
                        for pk, attempts in due])
    for pk, when, attempts in later:
        q.enqueue_at(when, dispatch_message, pk, job_id=job_id(pk, attempts), result_ttl=0)


def _claim(message_id: str):
    now = timezone.now()
    claimed = Message.objects.filter(pk=message_id, status__in=WAITING, scheduled_at__lte=now + dt.timedelta(seconds=1)).update(
        status="sending", lease_expires_at=now + dt.timedelta(seconds=settings.DISPATCH_LEASE_SECONDS), attempts=F("attempts") + 1,
        updated_at=now,
    )
    if not claimed:
        return None
    return Message.objects.select_related("workspace", "mailbox__domain", "mailbox__provider").get(pk=message_id)


def dispatch_message(message_id: str):
    with acting_as(WORKER_ACTOR):
        message = _claim(message_id)
        if message is None:
            return "not due or already handled"
        stop = policy.recheck_before_handoff(message)
        if stop is not None:
            return _stopped(message, stop)
        if not message.message_id_header:
            message.message_id_header = mime.message_id_header(message)
            Message.objects.filter(pk=message.pk).update(message_id_header=message.message_id_header)
        data = mime.build(message)
        outgoing = OutgoingMessage(mail_from=message.mailbox.address, rcpt_to=message.to_address, data=data,
                                   message_id=message.message_id_header, mailbox_id=message.mailbox_id)
        try:
            result = transport_for(message.mailbox.provider).send(outgoing)
        except TransientError as exc:
            return _transient(message, exc)
        except PermanentError as exc:
            return _failed(message, exc.reply, release=True)
        return _sent(message, result)


def _sent(message, result):
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(
            status="sent", sent_at=now, provider_message_id=result.provider_message_id,
            provider_response=result.response[:2000], lease_expires_at=None, updated_at=now)
        Mailbox.objects.filter(pk=message.mailbox_id).exclude(last_error="").update(last_error="")
        events.emit(workspace=message.workspace, type="message.sent", message=message,
                    data={"mailbox": message.mailbox_id, "provider": message.mailbox.provider.kind,
                          "provider_message_id": result.provider_message_id, "response": result.response[:500]})
    return "sent"


def _stopped(message, rejection):
    """Paused: back to waiting (resume re-enqueues). Suppressed: final, and the slot is given back."""
    with transaction.atomic():
        if rejection.error_code == "suppressed":
            Message.objects.filter(pk=message.pk).update(status="suppressed", lease_expires_at=None,
                                                         updated_at=timezone.now())
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day)
            events.emit(workspace=message.workspace, type="message.suppressed", message=message,
                        data={"stage": "before_handoff", "reason": rejection.details.get("reason")})
            audit.record(workspace=message.workspace, action="message.suppressed", obj=message,
                         before={"status": "queued"}, after={"status": "suppressed", "stage": "before_handoff"})
            return "suppressed"
        Message.objects.filter(pk=message.pk).update(status="queued", lease_expires_at=None,
                                                     attempts=F("attempts") - 1, updated_at=timezone.now())
    return f"waiting: {rejection.error_code}"


def _failed(message, reply, *, release):
    with transaction.atomic():
        Message.objects.filter(pk=message.pk).update(status="failed", provider_response=reply[:2000],
                                                     lease_expires_at=None, updated_at=timezone.now())
        if release:
            caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day)
        Mailbox.objects.filter(pk=message.mailbox_id).update(last_error=reply[:2000])
        events.emit(workspace=message.workspace, type="message.failed", message=message,
                    data={"mailbox": message.mailbox_id, "reply": reply[:500]})
        audit.record(workspace=message.workspace, action="message.failed", obj=message,
                     after={"mailbox": message.mailbox_id, "reply": reply[:500]})
    return "failed"


def _transient(message, exc):
    delays = retry_delays()
    attempt = message.attempts
    on_this_mailbox = attempt - message.decision.get("attempts_before", 0)
    if on_this_mailbox <= len(delays):
        wait = max(delays[attempt - 1], min(getattr(exc, "retry_after", None) or 0, MAX_RETRY_AFTER_SECONDS))
        when = timezone.now() + dt.timedelta(seconds=wait)
        with transaction.atomic():
            Message.objects.filter(pk=message.pk).update(status="deferred", scheduled_at=when,
                                                         provider_response=exc.reply[:2000], lease_expires_at=None,
                                                         updated_at=timezone.now())
            Mailbox.objects.filter(pk=message.mailbox_id).update(last_error=exc.reply[:2000])
            events.emit(workspace=message.workspace, type="message.deferred", message=message,
                        data={"mailbox": message.mailbox_id, "reply": exc.reply[:500], "attempt": attempt,
                              "retry_at": when.isoformat()})
            transaction.on_commit(lambda: enqueue(message.pk, when, attempts=attempt))
        return "deferred"
    if not message.pinned and _fail_over(message, exc):
        return "failed over"
    return _failed(message, exc.reply, release=True)


def _fail_over(message, exc) -> bool:
    """Moves an unpinned message (and its reservation) to another eligible mailbox of its pool."""
    from mailboxes.models import Pool

    pool = Pool.objects.filter(pk=message.pool_id).first()
    if pool is None:
        return False
    tried = set(message.decision.get("failed_mailboxes", [])) | {message.mailbox_id}
    request = policy.SendRequest(to=message.to_address, pool=pool, workload=message.workload)
    for _ in range(5):
        try:
            with transaction.atomic():
                decision = policy.decide(workspace=message.workspace, request=request, exclude=tried)
                caps.release_capacity(mailbox_id=message.mailbox_id, day=message.reserved_day)
                record = {**decision.as_dict(), "failed_mailboxes": sorted(tried),
                          "failover_from": message.mailbox_id, "failover_reply": exc.reply[:300],
                          "attempts_before": message.attempts}
                Message.objects.filter(pk=message.pk).update(
                    mailbox=decision.mailbox, from_address=decision.mailbox.address, reserved_day=decision.day,
                    scheduled_at=decision.scheduled_at, status="queued", message_id_header="",
                    lease_expires_at=None, decision=record, updated_at=timezone.now())
                events.emit(workspace=message.workspace, type="message.deferred", message=message,
                            data={"mailbox": message.mailbox_id, "reply": exc.reply[:500],
                                  "failover_to": decision.mailbox.pk})
                audit.record(workspace=message.workspace, action="message.failed_over", obj=message,
                             before={"mailbox": message.mailbox_id}, after=record)
                transaction.on_commit(lambda: enqueue(message.pk, decision.scheduled_at, attempts=message.attempts))
            return True
        except policy.LostRace:
            continue
        except policy.PolicyRejection:
            return False
    return False


def reconcile(now=None) -> dict:
    """Re-enqueues due waiting messages without a live job; returns expired leases to the queue."""
    from rq.job import Job, JobStatus

    now = now or timezone.now()
    with acting_as(Actor("system", "", "reconciler")):
        expired = Message.objects.filter(status="sending", lease_expires_at__lt=now).update(
            status="queued", lease_expires_at=None, updated_at=now)
        due = (Message.objects.filter(status__in=WAITING, scheduled_at__lte=now)
               .filter(workspace__paused=False, mailbox__status="active", mailbox__domain__paused=False)
               .values_list("pk", "attempts").order_by("scheduled_at"))
        connection = redis_connection()
        live = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
        enqueued = 0
        for message_id, attempts in due.iterator(chunk_size=1000):
            try:
                status = Job.fetch(job_id(message_id, attempts), connection=connection).get_status()
            except Exception:  # noqa: BLE001 - no such job (expired, flushed, never queued)
                status = None
            if status in live:
                continue
            enqueue(message_id, attempts=attempts)
            enqueued += 1
    return {"expired_leases": expired, "enqueued": enqueued}


def enqueue_waiting(*, workspace=None, mailbox=None, domain=None):
    """After a resume: queue what was waiting on it (after commit)."""
    q = Q(status__in=WAITING)
    if workspace is not None:
        q &= Q(workspace=workspace)
    if mailbox is not None:
        q &= Q(mailbox=mailbox)
    if domain is not None:
        q &= Q(mailbox__domain=domain)
    rows = list(Message.objects.filter(q).values_list("pk", "scheduled_at", "attempts"))
    transaction.on_commit(lambda: [enqueue(pk, when, attempts=attempts) for pk, when, attempts in rows])
    return len(rows)
