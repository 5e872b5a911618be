"""Pauses and resumes of mailboxes and domains: each audited, each with a reason."""

from django.db import transaction

from audit import services as audit
from controlplane import events
from mailboxes.models import Mailbox, SendingDomain
from mailboxes.services import breakers


def _enqueue_waiting(**scope):
    from controlplane.dispatch import enqueue_waiting

    enqueue_waiting(**scope)


@transaction.atomic
def pause_mailbox(*, mailbox: Mailbox, reason: str, rule: str = "", resume_at=None) -> Mailbox:
    """A pause by hand, or by the circuit breaker `rule` (then resumed automatically at `resume_at`)."""
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    before = {"status": mailbox.status, "paused_reason": mailbox.paused_reason}
    mailbox.status, mailbox.paused_reason = "paused", reason
    fields, breaker_before, breaker_after = breakers.pause_change(mailbox, paused=True, rule=rule, resume_at=resume_at)
    mailbox.save(update_fields=["status", "paused_reason", "updated_at", *fields])
    audit.record(workspace=mailbox.workspace, action="mailbox.paused", obj=mailbox, before={**before, **breaker_before},
                 after={"status": "paused", "paused_reason": reason, **breaker_after})
    events.emit(workspace=mailbox.workspace, type="mailbox.paused",
                data={"mailbox": mailbox.pk, "address": mailbox.address, "reason": reason,
                      **({"resume_at": resume_at.isoformat().replace("+00:00", "Z")} if resume_at else {})})
    return mailbox


@transaction.atomic
def resume_mailbox(*, mailbox: Mailbox, reason: str = "", now=None) -> Mailbox:
    """Resumes the mailbox; after a circuit-breaker pause its cap re-ramps (see breakers.pause_change)."""
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    before = {"status": mailbox.status, "paused_reason": mailbox.paused_reason}
    mailbox.status, mailbox.paused_reason = "active", ""
    fields, breaker_before, breaker_after = breakers.pause_change(mailbox, paused=False, now=now)
    mailbox.save(update_fields=["status", "paused_reason", "updated_at", *fields])
    noted = {"reason": reason} if reason else {}
    audit.record(workspace=mailbox.workspace, action="mailbox.resumed", obj=mailbox,
                 before={**before, **breaker_before},
                 after={"status": "active", "paused_reason": "", **breaker_after, **noted})
    events.emit(workspace=mailbox.workspace, type="mailbox.resumed",
                data={"mailbox": mailbox.pk, "address": mailbox.address, **noted})
    _enqueue_waiting(mailbox=mailbox)
    return mailbox


@transaction.atomic
def set_domain_paused(*, domain: SendingDomain, paused: bool, reason: str = "", rule: str = "", resume_at=None,
                      note: str = "", now=None) -> SendingDomain:
    """Pauses (by hand or by the breaker `rule`, until `resume_at`) or resumes; `note` says why it resumes."""
    domain = SendingDomain.objects.select_for_update().get(pk=domain.pk)
    before = {"paused": domain.paused, "paused_reason": domain.paused_reason}
    domain.paused, domain.paused_reason = paused, reason if paused else ""
    fields, breaker_before, breaker_after = breakers.pause_change(domain, paused=paused, rule=rule,
                                                                  resume_at=resume_at, now=now)
    domain.save(update_fields=["paused", "paused_reason", "updated_at", *fields])
    audit.record(workspace=domain.workspace, action="domain.paused" if paused else "domain.resumed", obj=domain,
                 before={**before, **breaker_before},
                 after={"paused": domain.paused, "paused_reason": domain.paused_reason, **breaker_after,
                        **({"reason": note} if note else {})})
    if not paused:
        _enqueue_waiting(domain=domain)
    return domain
