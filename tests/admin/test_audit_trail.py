"""Every admin write lands in the audit log with its actor; the log itself is read-only and exportable."""

import hashlib

import pytest

from audit import services as audit
from audit.models import AuditEvent
from mailboxes.models import Mailbox, SendingDomain, WarmupProfile
from suppression.models import Suppression
from tests.admin.conftest import add_url, change_url, changelist_url, url
from tests.admin.test_forms import mailbox_data
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def events(action, obj=None):
    qs = AuditEvent.objects.filter(action=action)
    if obj is not None:
        qs = qs.filter(object_id=str(obj.pk))
    return list(qs.order_by("seq"))


def test_creating_changing_and_deleting_a_mailbox_is_audited_with_the_user_as_actor(login, users, acme):
    client = login("operator")
    client.post(add_url(Mailbox), mailbox_data(acme))
    mailbox = Mailbox.objects.get(address="jane@mail.acme.com")
    data = mailbox_data(acme, daily_cap=10, weekly_cap=40)
    data.pop("workspace")
    client.post(change_url(mailbox), data)
    client.post(change_url(mailbox).replace("/change/", "/delete/"), {"post": "yes"})

    [created], [updated], [deleted] = events("mailbox.created", mailbox), events("mailbox.updated", mailbox), \
        events("mailbox.deleted", mailbox)
    assert {e.actor for e in (created, updated, deleted)} == {"user:operator"}
    assert created.after["address"] == "jane@mail.acme.com" and created.workspace == acme.workspace
    assert updated.before == {"daily_cap": 30, "weekly_cap": 150}
    assert updated.after == {"daily_cap": 10, "weekly_cap": 40}
    assert deleted.before["address"] == "jane@mail.acme.com"
    assert audit.verify(acme.workspace).ok


def test_saving_without_changes_writes_no_update_event(login, acme):
    data = mailbox_data(acme, address=acme.mailbox.address, daily_cap=20, weekly_cap=80, send_window_timezone="UTC",
                        display_name="", pools=[acme.pool.pk])
    data.pop("workspace")
    login("operator").post(change_url(acme.mailbox), data)

    assert events("mailbox.updated", acme.mailbox) == []


def test_a_change_to_pool_membership_is_audited_on_the_mailbox(login, acme):
    data = mailbox_data(acme, address=acme.mailbox.address, daily_cap=20, weekly_cap=80, send_window_timezone="UTC",
                        display_name="")
    data.pop("workspace")
    login("operator").post(change_url(acme.mailbox), data)

    [event] = events("mailbox.updated", acme.mailbox)
    assert event.before == {"pools": [acme.pool.pk]} and event.after == {"pools": []}


def test_pause_and_resume_actions_are_audited_with_the_reason(login, acme):
    client = login("operator")
    confirm = client.post(changelist_url(Mailbox), {"action": "pause_mailboxes", "_selected_action": [acme.mailbox.pk],
                                                    "index": 0})
    assert "Reason" in confirm.content.decode()
    acme.mailbox.refresh_from_db()
    assert acme.mailbox.status == "active"

    client.post(changelist_url(Mailbox), {"action": "pause_mailboxes", "_selected_action": [acme.mailbox.pk],
                                          "apply": "yes", "reason": "complaints from acme.org"})
    client.post(changelist_url(Mailbox), {"action": "resume_mailboxes", "_selected_action": [acme.mailbox.pk],
                                          "index": 0})

    [paused], [resumed] = events("mailbox.paused", acme.mailbox), events("mailbox.resumed", acme.mailbox)
    assert paused.after == {"status": "paused", "paused_reason": "complaints from acme.org"}
    assert paused.actor == resumed.actor == "user:operator"


def test_a_pause_without_a_reason_is_not_applied(login, acme):
    response = login("operator").post(changelist_url(SendingDomain), {
        "action": "pause_domains", "_selected_action": [acme.domain.pk], "apply": "yes", "reason": ""})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    acme.domain.refresh_from_db()
    assert not acme.domain.paused


def test_domain_pause_is_audited(login, acme):
    login("admin").post(changelist_url(SendingDomain), {"action": "pause_domains", "_selected_action": [acme.domain.pk],
                                                        "apply": "yes", "reason": "listed on Spamhaus"})

    acme.domain.refresh_from_db()
    assert acme.domain.paused and acme.domain.paused_reason == "listed on Spamhaus"
    assert events("domain.paused", acme.domain)[0].actor == "user:admin"


def test_deleting_several_objects_at_once_audits_each(login, acme, workspace):
    second = WarmupProfile.objects.create(workspace=workspace, name="second", start=1, step=1)
    login("operator").post(changelist_url(WarmupProfile), {
        "action": "delete_selected", "_selected_action": [acme.warmup.pk, second.pk], "post": "yes", "index": 0})

    assert not WarmupProfile.objects.filter(workspace=workspace).exists()
    assert {e.object_id for e in events("warmup_profile.deleted")} == {acme.warmup.pk, second.pk}


def test_admin_deletion_of_a_suppression_goes_through_the_service(login, acme):
    login("admin").post(change_url(acme.suppression).replace("/change/", "/delete/"), {"post": "yes"})

    [event] = events("suppression.deleted", acme.suppression)
    assert event.before["reason"] == "manual"
    assert event.actor == "user:admin"
    assert not Suppression.objects.filter(pk=acme.suppression.pk).exists()


@pytest.mark.parametrize("who", ["owner", "superuser"])
def test_nobody_adds_changes_or_deletes_audit_events(login, acme, who):
    client = login(who)
    event = AuditEvent.objects.filter(workspace=acme.workspace).first()

    page = client.get(change_url(event))
    listing = client.get(changelist_url(AuditEvent)).content.decode()

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change_url(event), {"action": "tampered"}).status_code == 403
    assert client.get(add_url(AuditEvent)).status_code == 403
    assert client.post(change_url(event).replace("/change/", "/delete/"), {"post": "yes"}).status_code == 403
    assert 'name="action"' not in listing
    assert AuditEvent.objects.get(pk=event.pk).action == event.action


def test_audit_list_filters_by_action_and_actor_type(login, users, acme):
    client = login("reviewer")
    by_action = client.get(changelist_url(AuditEvent), {"action": "provider.created"}).context["cl"].result_list
    by_actor = client.get(changelist_url(AuditEvent), {"actor_type": "system"}).context["cl"].result_list

    assert [e.object_repr for e in by_action] == [str(acme.provider)]
    assert by_actor and {e.actor_type for e in by_actor} == {"system"}
    assert "role.granted" in {e.action for e in client.get(changelist_url(AuditEvent)).context["cl"].result_list}


def test_export_streams_the_workspaces_events_with_their_digest(login, acme, globex):
    response = login("reviewer").post(url("audit_auditevent_export"), {"workspace": acme.workspace.pk,
                                                                       "format": "csv"})

    body = b"".join(response.streaming_content)
    assert response["X-Audit-Digest"] == f"sha256={hashlib.sha256(body).hexdigest()}"
    text = body.decode()
    assert text.splitlines()[0].startswith("id,workspace,seq,occurred_at")
    assert "provider.created" in text
    assert globex.workspace.pk not in text
    assert "Globex" not in text
    [exported] = events("audit.exported")
    assert exported.actor == "user:reviewer" and exported.workspace == acme.workspace


def test_export_refuses_another_workspace(login, acme, globex):
    response = login("reviewer").post(url("audit_auditevent_export"), {"workspace": globex.workspace.pk,
                                                                       "format": "csv"})

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert events("audit.exported") == []


def test_workspace_settings_change_is_audited(login, acme):
    ws = acme.workspace
    login("admin").post(change_url(ws), {
        "name": ws.name, "timezone": ws.timezone, "sender_identification": ws.sender_identification,
        "postal_address": ws.postal_address, "paused": "on", "paused_reason": "DNS migration",
        "hard_bounce_threshold": "0.02", "complaint_threshold": "0.003", "health_min_sends": 20,
    })

    [updated] = events("workspace.updated", ws)
    [paused] = events("workspace.paused", ws)
    assert updated.before == {"hard_bounce_threshold": "0.0500"}
    assert updated.after == {"hard_bounce_threshold": "0.0200"}
    assert paused.after == {"paused": True, "paused_reason": "DNS migration"}
    assert Workspace.objects.get(pk=ws.pk).paused


def test_suppression_added_in_the_admin_is_audited(login, acme):
    login("operator").post(add_url(Suppression), {"workspace": acme.workspace.pk, "value": "Jane@Prospect.com",
                                                  "reason": "dnc", "note": "asked by phone"})

    entry = Suppression.objects.get(value="jane@prospect.com")
    assert entry.source == "admin" and entry.created_by == "operator"
    [event] = events("suppression.created", entry)
    assert event.actor == "user:operator"
