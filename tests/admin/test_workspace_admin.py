"""Workspace settings, the kill switch, and who holds which role."""

import re

import pytest

from audit.models import AuditEvent
from tests.admin.conftest import change_url, changelist_url, messages_of, url
from workspaces import roles
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


def members_url(workspace):
    return url("workspaces_workspace_members", workspace.pk)


def grant(client, workspace, username, role):
    return client.post(members_url(workspace), {"operation": "grant", "grant-username": username,
                                                "grant-role": role}, follow=True)


def revoke(client, workspace, username):
    return client.post(members_url(workspace), {"operation": "revoke", "username": username}, follow=True)


def test_owner_grants_and_revokes_roles_and_both_are_audited(login, users, acme):
    client = login("owner")
    newcomer = users["no_role"]

    granted = grant(client, acme.workspace, newcomer.username, "operator")
    assert f"{newcomer.username} is now operator of Acme." in messages_of(granted)
    assert roles.role_of(newcomer, acme.workspace) == "operator"
    assert client.get(members_url(acme.workspace)).content.decode().count(newcomer.username) >= 1

    revoke(client, acme.workspace, newcomer.username)
    assert roles.role_of(newcomer, acme.workspace) is None

    actions = list(AuditEvent.objects.filter(object_repr=newcomer.username, actor_type="user")
                   .order_by("seq").values_list("action", "after"))
    assert actions == [("role.granted", {"user": newcomer.username, "role": "operator"}),
                       ("role.revoked", {"user": newcomer.username, "role": None})]


def test_granting_to_an_unknown_user_explains_itself(login, acme):
    response = grant(login("owner"), acme.workspace, "ghost", "viewer")

    assert "No active user is named “ghost”" in response.content.decode()


def test_the_last_owner_cannot_be_removed(login, users, acme):
    client = login("owner")
    owner = users["owner"]

    demoted = grant(client, acme.workspace, owner.username, "viewer")
    revoked = revoke(client, acme.workspace, owner.username)

    assert "is the last owner of Acme" in demoted.content.decode()
    assert any("is the last owner of Acme" in m for m in messages_of(revoked))
    assert roles.role_of(owner, acme.workspace) == "owner"


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_only_owners_reach_members_and_roles(login, users, acme, role):
    client = login(role)
    settings_page = client.get(change_url(acme.workspace)).content.decode()

    assert "Members &amp; roles" not in settings_page
    assert client.get(members_url(acme.workspace)).status_code == 403
    assert grant(client, acme.workspace, users[role].username, "owner").status_code == 403
    assert roles.role_of(users[role], acme.workspace) == role


def test_owners_find_members_and_roles_from_the_workspace_page(login, acme):
    client = login("owner")
    page = client.get(change_url(acme.workspace)).content.decode()
    link = re.search(r'href="([^"]+)">Members &amp; roles<', page).group(1)

    assert "Who holds a role in Acme" in client.get(link).content.decode()


def test_members_of_another_workspace_are_out_of_sight(login, acme, globex):
    response = login("owner").get(members_url(globex.workspace))

    assert response.status_code == 302 and response.url == url("index")


def test_the_kill_switch_pauses_and_resumes_with_a_reason(login, acme):
    client = login("admin")
    client.post(changelist_url(Workspace), {"action": "pause_workspaces", "_selected_action": [acme.workspace.pk],
                                            "apply": "yes", "reason": "complaint spike"})
    acme.workspace.refresh_from_db()
    assert acme.workspace.paused and acme.workspace.paused_reason == "complaint spike"
    assert "complaint spike" in client.get(changelist_url(Workspace)).content.decode()

    client.post(changelist_url(Workspace), {"action": "resume_workspaces", "_selected_action": [acme.workspace.pk],
                                            "index": 0})
    acme.workspace.refresh_from_db()
    assert not acme.workspace.paused
    assert list(AuditEvent.objects.filter(workspace=acme.workspace, action__in=["workspace.paused",
                                                                                 "workspace.resumed"])
                .order_by("seq").values_list("action", "actor_label")) == [("workspace.paused", "admin"),
                                                                           ("workspace.resumed", "admin")]


def test_only_superusers_create_workspaces_and_nobody_deletes_one(login, acme):
    assert login("owner").get(url("workspaces_workspace_add")).status_code == 403
    superuser = login("superuser")
    response = superuser.post(url("workspaces_workspace_add"), {
        "slug": "initech", "name": "Initech", "timezone": "UTC", "sender_identification": "Initech",
        "postal_address": "", "hard_bounce_threshold": "0.05", "complaint_threshold": "0.003",
        "health_min_sends": 20})
    assert response.status_code == 302
    initech = Workspace.objects.get(slug="initech")
    assert AuditEvent.objects.get(action="workspace.created", workspace=initech).actor == "user:root"
    assert superuser.get(change_url(initech).replace("/change/", "/delete/")).status_code == 403


def test_a_bad_time_zone_is_refused(login, acme):
    ws = acme.workspace
    response = login("admin").post(change_url(ws), {
        "name": ws.name, "timezone": "Mars/Olympus", "sender_identification": "", "postal_address": "",
        "hard_bounce_threshold": "0.05", "complaint_threshold": "0.003", "health_min_sends": 20})

    assert "is not a known IANA time zone" in response.content.decode()
