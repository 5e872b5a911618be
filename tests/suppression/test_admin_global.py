"""The agency-wide list in the admin: superusers maintain it; workspace staff see it, read-only."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from suppression import services
from suppression.models import Suppression
from tests.admin.conftest import add_url, change_url, changelist_url, form_errors, messages_of, url

pytestmark = pytest.mark.django_db


def listed(response):
    return [str(entry) for entry in response.context["cl"].result_list]


def delete_url(obj):
    return change_url(obj).replace("/change/", "/delete/")


def test_a_superuser_adds_an_agency_wide_entry_by_leaving_the_workspace_empty(login, acme, globex):
    client = login("superuser")
    page = client.get(add_url(Suppression)).content.decode()
    assert "Agency-wide (every workspace)" in page

    response = client.post(add_url(Suppression), {"workspace": "", "value": "@*.Competitor.com", "reason": "dnc"})

    assert response.status_code == 302, form_errors(response)
    entry = Suppression.objects.get(value="@*.competitor.com")
    assert entry.workspace is None and entry.kind == "subdomain"
    assert services.is_suppressed(acme.workspace, "ceo@eu.competitor.com")
    assert services.is_suppressed(globex.workspace, "ceo@eu.competitor.com")
    event = AuditEvent.objects.get(action="suppression.created", chain="global")
    assert event.actor == "user:root" and event.workspace_id is None


def test_workspace_staff_must_choose_a_workspace(login, acme):
    response = login("owner").post(add_url(Suppression), {"workspace": "", "value": "@competitor.com",
                                                          "reason": "dnc"})

    assert form_errors(response)["workspace"] == ["Choose a workspace: only superusers add agency-wide entries."]
    assert not Suppression.objects.filter(value="@competitor.com").exists()


def test_workspace_staff_see_agency_wide_entries_read_only(login, acme, globex):
    entry, _ = services.suppress(workspace=None, value="@competitor.com", reason="dnc")
    client = login("owner")

    changelist = client.get(changelist_url(Suppression))
    assert set(listed(changelist)) == {"@competitor.com", acme.suppression.value}
    assert "Agency-wide (every workspace)" in changelist.content.decode()
    assert listed(client.get(changelist_url(Suppression), {"scope": "global"})) == ["@competitor.com"]
    page = client.get(change_url(entry))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()

    client.post(delete_url(entry), {"post": "yes"})
    client.post(changelist_url(Suppression), {"action": "delete_selected", "_selected_action": [entry.pk],
                                              "post": "yes", "index": 0})
    assert Suppression.objects.filter(pk=entry.pk).exists()


def test_a_superuser_removes_an_agency_wide_entry(login, acme):
    entry, _ = services.suppress(workspace=None, value="@competitor.com", reason="dnc")

    login("superuser").post(delete_url(entry), {"post": "yes"})

    assert not Suppression.objects.filter(pk=entry.pk).exists()
    assert AuditEvent.objects.get(action="suppression.deleted").chain == "global"


def test_a_user_without_any_role_sees_no_agency_wide_entry(login, acme):
    entry, _ = services.suppress(workspace=None, value="@competitor.com")
    client = login("no_role")

    assert client.get(change_url(entry)).status_code in (302, 403, 404)


def test_a_superuser_imports_into_the_agency_wide_list(login, acme):
    upload = SimpleUploadedFile("agency.txt", b"@rival.com\n@*.rival.org\nnot-an-address\n")

    response = login("superuser").post(url("suppression_suppression_import"),
                                       {"workspace": "", "file": upload, "reason": "dnc"}, follow=True)

    assert ("Imported agency.txt into the agency-wide list: 2 created, 0 already present, 1 invalid."
            in messages_of(response))
    assert set(Suppression.objects.filter(workspace=None).values_list("value", flat=True)) == {"@rival.com",
                                                                                              "@*.rival.org"}
    assert AuditEvent.objects.get(action="suppression.imported").chain == "global"


def test_an_operator_cannot_import_into_the_agency_wide_list(login, acme):
    upload = SimpleUploadedFile("agency.txt", b"@rival.com\n")

    response = login("operator").post(url("suppression_suppression_import"),
                                      {"workspace": "", "file": upload, "reason": "dnc"})

    assert "only superusers add agency-wide entries" in response.content.decode()
    assert not Suppression.objects.filter(value="@rival.com").exists()


def test_the_change_page_shows_the_unsubscribe_evidence(login, acme):
    entry, _ = services.suppress(workspace=acme.workspace, value="jane@prospect.com", reason="unsubscribe",
                                 evidence={"method": "one_click_post", "at": "2026-11-23T10:00:00Z",
                                           "ip": "203.0.113.7", "user_agent": "Mail/1.0", "message": "msg_1"})

    page = login("viewer").get(change_url(entry)).content.decode()

    assert "one click post at 2026-11-23T10:00:00Z from IP 203.0.113.7" in page and "Mail/1.0" in page
