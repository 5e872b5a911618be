"""Bulk mailbox changes with confirmation pages, and the workspace setup checklist."""

import pytest
from django.contrib.admin.utils import quote
from django.utils import timezone

from audit.models import AuditEvent
from controlplane.models import WebhookEndpoint
from mailboxes.models import Mailbox, Pool, SendingDomain
from tests.admin.conftest import changelist_url, messages_of, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_mailboxes(acme):
    second = Mailbox.objects.create(workspace=acme.workspace, domain=acme.domain, provider=acme.provider,
                                    address="ops@mail.acme.com", daily_cap=10, weekly_cap=40)
    return [acme.mailbox, second]


def act(client, action, mailboxes, **data):
    return client.post(changelist_url(Mailbox), {"action": action, "_selected_action": [m.pk for m in mailboxes],
                                                 **data}, follow=True)


def test_changing_caps_asks_first_then_changes_every_selected_mailbox_and_audits_it(login, acme, two_mailboxes):
    client = login("operator")

    confirmation = act(client, "change_caps", two_mailboxes)
    done = act(client, "change_caps", two_mailboxes, apply="yes", daily_cap=35, weekly_cap="")

    page = confirmation.content.decode()
    assert "Change these caps" in page and "sales@mail.acme.com" in page and "ops@mail.acme.com" in page
    assert sorted(Mailbox.objects.values_list("daily_cap", "weekly_cap")) == [(35, 40), (35, 80)]
    assert "Updated 2 mailboxes." in messages_of(done)
    changed = AuditEvent.objects.filter(action="mailbox.updated")
    assert changed.count() == 2
    assert {e.after["daily_cap"] for e in changed} == {35} and {e.before["daily_cap"] for e in changed} == {20, 10}


def test_caps_that_make_no_sense_are_refused_on_the_confirmation_page(login, acme, two_mailboxes):
    client = login("operator")

    response = act(client, "change_caps", two_mailboxes, apply="yes", daily_cap=50, weekly_cap=10)

    assert "Must be at least the daily cap (50)." in response.content.decode()
    assert sorted(Mailbox.objects.values_list("daily_cap", flat=True)) == [10, 20]


def test_assigning_a_warm_up_profile_starts_the_ramp_today(login, acme, two_mailboxes):
    client = login("operator")

    page = act(client, "assign_warmup_profile", two_mailboxes).content.decode()
    act(client, "assign_warmup_profile", two_mailboxes, apply="yes", warmup_profile=acme.warmup.pk)

    assert "acme-ramp" in page
    for mailbox in Mailbox.objects.all():
        assert mailbox.warmup_profile == acme.warmup and mailbox.warmup_started_on == timezone.now().date()
    assert AuditEvent.objects.filter(action="mailbox.updated").count() == 2


def test_another_workspaces_profile_cannot_be_assigned(login, acme, globex, two_mailboxes):
    client = login("operator")

    page = act(client, "assign_warmup_profile", two_mailboxes).content.decode()
    response = act(client, "assign_warmup_profile", two_mailboxes, apply="yes", warmup_profile=globex.warmup.pk)

    assert "globex-ramp" not in page
    assert "Select a valid choice" in response.content.decode()
    assert not Mailbox.objects.filter(warmup_profile=globex.warmup).exists()


def test_moving_to_a_pool_takes_mailboxes_out_of_their_other_pools(login, acme, two_mailboxes):
    warm = Pool.objects.create(workspace=acme.workspace, name="warm", workloads=["warm"])
    client = login("operator")

    act(client, "move_to_pool", two_mailboxes, apply="yes", pool=warm.pk)

    for mailbox in two_mailboxes:
        assert list(mailbox.pools.values_list("name", flat=True)) == ["warm"]
    moved = AuditEvent.objects.get(action="mailbox.updated", object_id=acme.mailbox.pk)
    assert moved.before["pools"] == [acme.pool.pk] and moved.after["pools"] == [warm.pk]


def test_moving_can_keep_the_other_pools(login, acme, two_mailboxes):
    warm = Pool.objects.create(workspace=acme.workspace, name="warm")

    act(login("operator"), "move_to_pool", [acme.mailbox], apply="yes", pool=warm.pk, keep_other_pools="on")

    assert sorted(acme.mailbox.pools.values_list("name", flat=True)) == ["acme-cold", "warm"]


def test_pool_moves_across_workspaces_are_refused(login, users, acme, globex):
    response = act(login("superuser"), "move_to_pool", [acme.mailbox, globex.mailbox])

    assert any("one workspace" in m for m in messages_of(response))
    assert acme.mailbox.pools.count() == 1 and globex.mailbox.pools.count() == 1


def test_retiring_keeps_the_mailbox_and_its_history_and_stops_new_sends(login, acme, two_mailboxes, api):
    client = login("operator")

    act(client, "retire_mailboxes", [acme.mailbox], apply="yes", reason="Brand retired")

    acme.mailbox.refresh_from_db()
    assert acme.mailbox.status == "retired" and acme.mailbox.paused_reason == "Brand retired"
    assert AuditEvent.objects.get(action="mailbox.retired", object_id=acme.mailbox.pk).after["status"] == "retired"
    response = api.post("/api/v1/messages", {"to": "lead@prospect.com", "from": acme.mailbox.address,
                                             "subject": "Hi", "text": "Hello"}, format="json")
    assert response.status_code == 422


def test_a_viewer_is_offered_no_bulk_change(login, acme, two_mailboxes):
    client = login("viewer")
    page = client.get(changelist_url(Mailbox)).content.decode()

    act(client, "change_caps", two_mailboxes, apply="yes", daily_cap=99)
    act(client, "retire_mailboxes", two_mailboxes, apply="yes", reason="x")

    for action in ("change_caps", "assign_warmup_profile", "move_to_pool", "retire_mailboxes"):
        assert action not in page
    assert not Mailbox.objects.filter(daily_cap=99).exists() and not Mailbox.objects.filter(status="retired").exists()


def test_an_operator_cannot_bulk_change_another_workspaces_mailboxes(login, acme, globex):
    act(login("operator"), "change_caps", [globex.mailbox], apply="yes", daily_cap=99)

    globex.mailbox.refresh_from_db()
    assert globex.mailbox.daily_cap == 20


# The setup checklist --------------------------------------------------------------------------------


def checklist(client, workspace):
    response = client.get(url("workspaces_workspace_onboarding", workspace.pk))
    assert response.status_code == 200
    return {step["key"]: step for step in response.context["steps"]}, response.content.decode()


def test_a_new_workspace_starts_with_every_step_to_do_and_a_link_to_each(login, workspace):
    steps, page = checklist(login("admin"), workspace)

    assert [s["done"] for s in steps.values()] == [False] * 6
    assert "0 of 6 steps done." in page
    assert url("mailboxes_sendingdomain_add") in page
    assert url("workspaces_workspaceapikey_add") in page and url("controlplane_webhookendpoint_add") in page


def test_steps_are_done_as_the_workspace_is_set_up(login, acme):
    client = login("admin")
    steps, _ = checklist(client, acme.workspace)
    assert steps["domains"]["done"] and steps["mailboxes"]["done"] and steps["api_key"]["done"]
    assert not steps["authentication"]["done"] and not steps["warmup"]["done"] and not steps["webhook"]["done"]

    SendingDomain.objects.filter(pk=acme.domain.pk).update(status="pass")
    Mailbox.objects.filter(pk=acme.mailbox.pk).update(warmup_profile=acme.warmup)
    WebhookEndpoint.objects.create(workspace=acme.workspace, url="https://hooks.example.com/", secret={"key": "k"})
    steps, page = checklist(client, acme.workspace)

    assert all(step["done"] for step in steps.values())
    assert "6 of 6 steps done." in page


def test_the_checklist_is_linked_from_the_dashboard_and_closed_to_other_workspaces(login, acme, globex):
    client = login("operator")
    index = client.get(url("index")).content.decode()

    assert url("workspaces_workspace_onboarding", quote(acme.workspace.pk)) in index
    assert client.get(url("workspaces_workspace_onboarding", globex.workspace.pk)).status_code == 302
