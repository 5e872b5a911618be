"""Retention, enforced daily in small batches (no long locks on hot tables): message content,
canonical events and audit events older than each workspace's settings are removed."""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.context import Actor, acting_as
from controlplane.models import Event, Message
from workspaces.models import Workspace

BATCH = 1000


def _in_batches(queryset, apply):
    done = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return done
        with transaction.atomic():
            done += apply(ids)


def enforce(workspace: Workspace, now=None) -> dict:
    now = now or timezone.now()
    body_cutoff = now - dt.timedelta(days=workspace.message_body_retention_days)
    stale_bodies = Message.objects.filter(workspace=workspace, created_at__lt=body_cutoff).exclude(
        subject="", text="", html="")
    bodies = _in_batches(stale_bodies, lambda ids: Message.objects.filter(pk__in=ids).update(
        subject="", text="", html="", headers={}, metadata={}))
    event_cutoff = now - dt.timedelta(days=workspace.event_retention_days)
    events = _in_batches(Event.objects.filter(workspace=workspace, occurred_at__lt=event_cutoff),
                         lambda ids: Event.objects.filter(pk__in=ids).delete()[0])
    audit_removed = audit.cut_before(workspace=workspace,
                                     before=now - dt.timedelta(days=workspace.audit_retention_days))
    if bodies or events:
        with transaction.atomic():
            audit.record(workspace=workspace, action="retention.enforced", object_type="workspace",
                         object_id=workspace.pk, object_repr=workspace.slug,
                         after={"message_bodies": bodies, "events": events, "audit_events": audit_removed})
    return {"message_bodies": bodies, "events": events, "audit_events": audit_removed}


def enforce_all() -> dict:
    """The daily job."""
    totals = {"message_bodies": 0, "events": 0, "audit_events": 0}
    with acting_as(Actor("system", "", "retention")):
        for workspace in Workspace.objects.all():
            for key, value in enforce(workspace).items():
                totals[key] += value
    return totals
