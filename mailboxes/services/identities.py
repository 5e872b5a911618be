"""Pauses and resumes of mailboxes and domains: each audited, each with a reason."""

from django.db import transaction

from audit import services as audit
from controlplane import events
from mailboxes.models import Mailbox, SendingDomain


def _enqueue_waiting(**scope):
    from controlplane.dispatch import enqueue_waiting

    enqueue_waiting(**scope)


@transaction.atomic
def pause_mailbox(*, mailbox: Mailbox, reason: str) -> Mailbox:
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    before = {"status": mailbox.status, "paused_reason": mailbox.paused_reason}
    mailbox.status, mailbox.paused_reason = "paused", reason
    mailbox.save(update_fields=["status", "paused_reason", "updated_at"])
    audit.record(workspace=mailbox.workspace, action="mailbox.paused", obj=mailbox, before=before,
                 after={"status": "paused", "paused_reason": reason})
    events.emit(workspace=mailbox.workspace, type="mailbox.paused",
                data={"mailbox": mailbox.pk, "address": mailbox.address, "reason": reason})
    return mailbox


@transaction.atomic
def resume_mailbox(*, mailbox: Mailbox) -> Mailbox:
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    before = {"status": mailbox.status, "paused_reason": mailbox.paused_reason}
    mailbox.status, mailbox.paused_reason = "active", ""
    mailbox.save(update_fields=["status", "paused_reason", "updated_at"])
    audit.record(workspace=mailbox.workspace, action="mailbox.resumed", obj=mailbox, before=before,
                 after={"status": "active", "paused_reason": ""})
    events.emit(workspace=mailbox.workspace, type="mailbox.resumed",
                data={"mailbox": mailbox.pk, "address": mailbox.address})
    _enqueue_waiting(mailbox=mailbox)
    return mailbox


@transaction.atomic
def set_domain_paused(*, domain: SendingDomain, paused: bool, reason: str = "") -> SendingDomain:
    domain = SendingDomain.objects.select_for_update().get(pk=domain.pk)
    before = {"paused": domain.paused, "paused_reason": domain.paused_reason}
    domain.paused, domain.paused_reason = paused, reason if paused else ""
    domain.save(update_fields=["paused", "paused_reason", "updated_at"])
    audit.record(workspace=domain.workspace, action="domain.paused" if paused else "domain.resumed", obj=domain,
                 before=before, after={"paused": domain.paused, "paused_reason": domain.paused_reason})
    if not paused:
        _enqueue_waiting(domain=domain)
    return domain
