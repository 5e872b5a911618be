"""Retention removes old content, events and audit events; the audit chain still verifies after the cut."""

import datetime as dt

import pytest
from django.utils import timezone

from audit import services as audit
from audit.models import AuditEvent
from controlplane import retention
from controlplane.models import Event, Message

pytestmark = pytest.mark.django_db(transaction=True)


def test_retention_cuts_content_events_and_audit(api, workspace, sending_setup, run_workers):
    ids = [api.post("/api/v1/messages", {"to": f"r{n}@example.com", "subject": "Secret plan", "text": "Body"},
                    format="json").json()["id"] for n in range(3)]
    run_workers()
    old = timezone.now() - dt.timedelta(days=500)
    Message.objects.filter(pk__in=ids[:2]).update(created_at=old)
    Event.objects.filter(message_id=ids[0]).update(occurred_at=old)
    early = list(AuditEvent.objects.filter(workspace=workspace).order_by("seq")[:5])
    workspace.audit_retention_days = 365
    workspace.save()
    now = early[4].occurred_at + dt.timedelta(days=365, microseconds=1)

    result = retention.enforce(workspace, now=now)
    assert result["audit_events"] == 5
    assert result["message_bodies"] == 3  # with `now` a year ahead, every body is past 30 days
    assert set(Message.objects.filter(pk__in=ids).values_list("subject", flat=True)) == {""}
    assert result["events"] >= 2
    assert not Event.objects.filter(message_id=ids[0]).exists()
    assert Message.objects.filter(pk__in=ids).count() == 3  # the evidence of sending stays
    verified = audit.verify(workspace)
    assert verified.ok, verified.problem
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in early]).exists()
    assert AuditEvent.objects.filter(workspace=workspace, action="audit.retention_cut").count() == 1
    assert retention.enforce(workspace, now=now)["audit_events"] == 0
