"""Each role does exactly its part in the admin, and nothing more."""

import pytest

from audit.models import AuditEvent
from mailboxes.models import Mailbox, SendingDomain
from providers.models import ProviderConnection
from suppression.models import Suppression
from tests.admin.conftest import add_url, change_url, changelist_url, url
from workspaces import roles
from workspaces.models import Workspace, WorkspaceAPIKey

pytestmark = pytest.mark.django_db


def view_identities(client, acme):
    pages = [client.get(changelist_url(Mailbox)), client.get(change_url(acme.mailbox)),
             client.get(changelist_url(SendingDomain)), client.get(changelist_url(ProviderConnection))]
    return all(p.status_code == 200 for p in pages) and acme.mailbox.address in pages[0].content.decode()


def add_domain(client, acme):
    client.post(add_url(SendingDomain), {"workspace": acme.workspace.pk, "name": "new.acme.com"})
    return SendingDomain.objects.filter(name="new.acme.com").exists()


def change_mailbox(client, acme):
    mailbox = acme.mailbox
    client.post(change_url(mailbox), {
        "address": mailbox.address, "provider": acme.provider.pk, "daily_cap": 7, "weekly_cap": 70,
        "min_interval_seconds": 60, "jitter_seconds": 0, "send_window_days": [1, 2, 3, 4, 5],
        "send_window_start": "08:00", "send_window_end": "18:00", "send_window_timezone": "UTC",
        "priority": 0, "weight": 1,
    })
    mailbox.refresh_from_db()
    return mailbox.daily_cap == 7


def pause_mailbox(client, acme):
    client.post(changelist_url(Mailbox), {"action": "pause_mailboxes", "_selected_action": [acme.mailbox.pk],
                                          "apply": "yes", "reason": "warming too fast"})
    acme.mailbox.refresh_from_db()
    return acme.mailbox.status == "paused"


def add_suppression(client, acme):
    client.post(add_url(Suppression), {"workspace": acme.workspace.pk, "value": "no@prospect.com",
                                       "reason": "manual"})
    return Suppression.objects.filter(value="no@prospect.com").exists()


def delete_suppression(client, acme):
    client.post(change_url(acme.suppression).replace("/change/", "/delete/"), {"post": "yes"})
    return not Suppression.objects.filter(pk=acme.suppression.pk).exists()


def change_workspace_settings(client, acme):
    ws = acme.workspace
    client.post(change_url(ws), {
        "name": ws.name, "timezone": ws.timezone, "sender_identification": ws.sender_identification,
        "postal_address": ws.postal_address, "hard_bounce_threshold": "0.02", "complaint_threshold": "0.001",
        "health_min_sends": 50,
    })
    ws.refresh_from_db()
    return ws.health_min_sends == 50


def pause_workspace(client, acme):
    client.post(changelist_url(Workspace), {"action": "pause_workspaces", "_selected_action": [acme.workspace.pk],
                                            "apply": "yes", "reason": "incident"})
    acme.workspace.refresh_from_db()
    return acme.workspace.paused


def read_audit(client, acme):
    response = client.get(changelist_url(AuditEvent))
    return response.status_code == 200 and "provider.created" in response.content.decode()


def export_audit(client, acme):
    response = client.post(url("audit_auditevent_export"), {"workspace": acme.workspace.pk, "format": "csv"})
    return response.status_code == 200 and response["Content-Type"].startswith("text/csv")


def create_api_key(client, acme):
    client.post(add_url(WorkspaceAPIKey), {"workspace": acme.workspace.pk, "name": "crm", "role": "sequencer"})
    return WorkspaceAPIKey.objects.filter(name="crm").exists()


def grant_role(client, acme, users):
    client.post(url("workspaces_workspace_members", acme.workspace.pk),
                {"operation": "grant", "grant-username": users["no_role"].username, "grant-role": "viewer"})
    return roles.role_of(users["no_role"], acme.workspace) == "viewer"


ALL = {"owner", "admin", "operator", "reviewer", "viewer", "superuser"}
CAPABILITIES = [
    (view_identities, ALL),
    (add_domain, {"owner", "admin", "operator", "superuser"}),
    (change_mailbox, {"owner", "admin", "operator", "superuser"}),
    (pause_mailbox, {"owner", "admin", "operator", "superuser"}),
    (add_suppression, {"owner", "admin", "operator", "superuser"}),
    (delete_suppression, {"owner", "admin", "superuser"}),
    (change_workspace_settings, {"owner", "admin", "superuser"}),
    (pause_workspace, {"owner", "admin", "superuser"}),
    (read_audit, {"owner", "admin", "operator", "reviewer", "superuser"}),
    (export_audit, {"owner", "admin", "reviewer", "superuser"}),
    (create_api_key, {"owner", "admin", "superuser"}),
    (grant_role, {"owner", "superuser"}),
]


@pytest.mark.parametrize("role", sorted(ALL))
@pytest.mark.parametrize("capability, holders", CAPABILITIES, ids=[c.__name__ for c, _ in CAPABILITIES])
def test_each_role_can_do_exactly_its_part(login, users, acme, globex, role, capability, holders):
    client = login(role)
    args = (client, acme, users) if capability is grant_role else (client, acme)

    assert capability(*args) is (role in holders)


@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_read_only_roles_get_pages_without_save_buttons(login, acme, role):
    client = login(role)
    page = client.get(change_url(acme.mailbox)).content.decode()
    index = client.get(url("index")).content.decode()

    assert 'name="_save"' not in page
    assert "Delete" not in page
    assert "Add mailbox" not in client.get(changelist_url(Mailbox)).content.decode()
    assert add_url(Mailbox) not in index
    assert client.get(add_url(Mailbox)).status_code == 403


def test_operator_sees_no_delete_for_suppressions_nor_an_api_key_form(login, acme):
    client = login("operator")
    listing = client.get(changelist_url(Suppression)).content.decode()

    assert "Delete selected" not in listing
    assert "Import CSV" in listing
    assert client.get(add_url(WorkspaceAPIKey)).status_code == 403


def test_viewer_has_no_audit_log_nor_import(login, acme):
    client = login("viewer")

    assert "Audit events" not in client.get(url("index")).content.decode()
    assert client.get(url("suppression_suppression_import")).status_code == 403
    assert "Import CSV" not in client.get(changelist_url(Suppression)).content.decode()


def test_export_link_is_shown_only_to_those_who_may_export(login, acme):
    assert "Export" in login("reviewer").get(changelist_url(AuditEvent)).content.decode()
    assert ">Export<" not in login("operator").get(changelist_url(AuditEvent)).content.decode()


def test_owner_of_one_workspace_is_a_stranger_in_the_other(login, acme, globex):
    client = login("globex_owner")

    assert client.get(change_url(acme.workspace)).status_code == 302
    assert not change_workspace_settings(client, acme)
    assert not delete_suppression(client, acme)
