"""A user sees and touches only the workspaces they hold a role in; anything else looks nonexistent."""

import pytest
from django.contrib.admin.utils import quote

from audit.models import AuditEvent
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from providers.models import ProviderConnection
from suppression.models import Suppression
from tests.admin.conftest import add_url, change_url, changelist_url, messages_of, url
from workspaces.models import Workspace, WorkspaceAPIKey

pytestmark = pytest.mark.django_db

LISTED = {
    SendingDomain: lambda ids: ids.domain.name,
    ProviderConnection: lambda ids: ids.provider.name,
    WarmupProfile: lambda ids: ids.warmup.name,
    Pool: lambda ids: ids.pool.name,
    Mailbox: lambda ids: ids.mailbox.address,
    Suppression: lambda ids: ids.suppression.value,
    WorkspaceAPIKey: lambda ids: ids.key.name,
    Workspace: lambda ids: ids.workspace.slug,
    AuditEvent: lambda ids: ids.provider.name,
}

OBJECTS = ["domain", "provider", "warmup", "pool", "mailbox", "suppression", "workspace"]


@pytest.mark.parametrize("model", LISTED, ids=lambda m: m.__name__)
def test_changelists_list_only_the_users_workspaces(login, acme, globex, model):
    page = login("owner").get(changelist_url(model)).content.decode()

    assert LISTED[model](acme) in page
    assert LISTED[model](globex) not in page


@pytest.mark.parametrize("model", LISTED, ids=lambda m: m.__name__)
def test_superuser_lists_every_workspace(login, acme, globex, model):
    page = login("superuser").get(changelist_url(model)).content.decode()

    assert LISTED[model](acme) in page
    assert LISTED[model](globex) in page


def _missing_like(obj):
    """The change URL of an id that exists nowhere, for the same model."""
    return change_url(obj).replace(quote(obj.pk), quote(f"{obj.pk}x"))


@pytest.mark.parametrize("attr", OBJECTS)
@pytest.mark.parametrize("view", ["change", "delete", "history"])
def test_another_workspaces_object_answers_like_a_missing_one(login, acme, globex, attr, view):
    client = login("owner")
    foreign = getattr(globex, attr)
    target = change_url(foreign).replace("/change/", f"/{view}/")
    missing = _missing_like(foreign).replace("/change/", f"/{view}/")

    seen, unseen = client.get(target), client.get(missing)

    assert seen.status_code == unseen.status_code
    if attr == "workspace" and view == "delete":
        assert seen.status_code == 403
        return
    assert seen.status_code == 302
    assert seen.url == unseen.url == url("index")
    notice = client.get(seen.url)
    assert "doesn’t exist. Perhaps it was deleted?" in " ".join(messages_of(notice))


def test_api_key_of_another_workspace_answers_like_a_missing_one(login, acme, globex):
    client = login("owner")
    seen = client.get(url("workspaces_workspaceapikey_change", globex.key.prefix))
    unseen = client.get(url("workspaces_workspaceapikey_change", "nokey123"))

    assert seen.status_code == unseen.status_code == 302
    assert seen.url == unseen.url == url("index")


def test_posting_a_change_to_another_workspaces_mailbox_changes_nothing(login, acme, globex):
    client = login("owner")
    response = client.post(change_url(globex.mailbox), {"address": globex.mailbox.address, "daily_cap": 1,
                                                         "weekly_cap": 1})

    assert response.status_code == 302 and response.url == url("index")
    globex.mailbox.refresh_from_db()
    assert globex.mailbox.daily_cap == 20


def test_deleting_another_workspaces_suppression_is_impossible(login, acme, globex):
    client = login("owner")
    client.post(change_url(globex.suppression).replace("/change/", "/delete/"), {"post": "yes"})
    client.post(changelist_url(Suppression), {"action": "delete_selected", "_selected_action": [globex.suppression.pk],
                                              "post": "yes", "index": 0})

    assert Suppression.objects.filter(pk=globex.suppression.pk).exists()


def test_actions_skip_another_workspaces_objects(login, acme, globex):
    client = login("owner")
    client.post(changelist_url(Mailbox), {"action": "pause_mailboxes", "_selected_action": [globex.mailbox.pk],
                                          "apply": "yes", "reason": "spam trap"})
    client.post(changelist_url(SendingDomain), {"action": "pause_domains", "_selected_action": [globex.domain.pk],
                                                "apply": "yes", "reason": "blocklisted"})
    client.post(changelist_url(WorkspaceAPIKey), {"action": "revoke_keys", "_selected_action": [globex.key.prefix],
                                                  "index": 0})

    globex.mailbox.refresh_from_db()
    globex.domain.refresh_from_db()
    globex.key.refresh_from_db()
    assert globex.mailbox.status == "active"
    assert not globex.domain.paused
    assert not globex.key.revoked


def test_autocomplete_offers_only_the_users_mailboxes(login, acme, globex):
    response = login("owner").get(url("autocomplete"), {"app_label": "mailboxes", "model_name": "pool",
                                                        "field_name": "mailboxes", "term": "sales"})

    assert response.status_code == 200
    offered = {result["text"] for result in response.json()["results"]}
    assert offered == {acme.mailbox.address}


def test_autocomplete_is_closed_to_a_user_without_a_role(login, acme, globex):
    response = login("no_role").get(url("autocomplete"), {"app_label": "mailboxes", "model_name": "pool",
                                                          "field_name": "mailboxes", "term": "sales"})

    assert response.status_code == 403


def test_form_choices_offer_only_the_users_objects(login, acme, globex):
    page = login("owner").get(add_url(Mailbox)).content.decode()

    assert acme.provider.name in page and acme.warmup.name in page and acme.pool.name in page
    assert globex.provider.name not in page
    assert globex.warmup.name not in page
    assert globex.pool.name not in page
    assert "Globex" not in page


def test_changelist_filters_offer_only_the_users_objects(login, make_user, acme, globex, workspace):
    second = SendingDomain.objects.create(workspace=workspace, name="news.acme.com")
    page = login("owner").get(changelist_url(Mailbox)).content.decode()

    assert second.name in page
    assert globex.domain.name not in page
    assert globex.provider.name not in page


def test_a_posted_choice_from_another_workspace_is_rejected(login, acme, globex):
    client = login("owner")
    response = client.post(add_url(Pool), {"workspace": acme.workspace.pk, "name": "leaky", "strategy": "round_robin",
                                           "workloads": "cold", "mailboxes": [globex.mailbox.pk]})

    assert response.status_code == 200
    assert "mailboxes" in response.context["adminform"].form.errors
    assert not Pool.objects.filter(name="leaky").exists()


def test_a_user_in_two_workspaces_cannot_link_them(make_user, client, acme, globex):
    from workspaces import roles

    both = make_user("consultant", workspace=acme.workspace, role="operator")
    roles.grant_role(user=both, workspace=globex.workspace, role="operator")
    client.force_login(both)

    response = client.post(add_url(Mailbox), {
        "workspace": acme.workspace.pk, "address": "new@mail.acme.com", "provider": globex.provider.pk,
        "daily_cap": 10, "weekly_cap": 50, "min_interval_seconds": 60, "jitter_seconds": 0,
        "send_window_days": [1, 2, 3], "send_window_start": "08:00", "send_window_end": "18:00",
        "send_window_timezone": "UTC", "priority": 0, "weight": 1, "pools": [globex.pool.pk],
    })

    errors = response.context["adminform"].form.errors
    assert "belongs to another workspace" in errors["provider"][0]
    assert "belongs to another workspace" in errors["pools"][0]
    assert not Mailbox.objects.filter(address="new@mail.acme.com").exists()


def test_staff_user_without_a_role_sees_nothing(login, acme, globex):
    client = login("no_role")
    index = client.get(url("index"))

    assert "You don’t have permission to view or edit anything." in index.content.decode()
    for model in LISTED:
        assert client.get(changelist_url(model)).status_code == 403
    assert client.get(change_url(acme.mailbox)).status_code == 403
