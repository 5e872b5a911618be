"""The do-not-contact list in the admin: exact search, CSV import, additions through the one writer."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from suppression import services
from suppression.models import Suppression
from tests.admin.conftest import add_url, change_url, changelist_url, form_errors, messages_of, url

pytestmark = pytest.mark.django_db


def listed(response):
    return [str(entry) for entry in response.context["cl"].result_list]


def test_search_finds_an_exact_address_in_any_case(login, acme, globex):
    client = login("viewer")
    value = acme.suppression.value

    assert listed(client.get(changelist_url(Suppression), {"q": f"  {value.upper()} "})) == [value]
    assert listed(client.get(changelist_url(Suppression), {"q": value.split("@")[0]})) == []
    assert listed(client.get(changelist_url(Suppression), {"q": globex.suppression.value})) == []


def test_search_finds_a_domain_entry(login, workspace):
    services.suppress(workspace=workspace, value="@competitor.com")

    assert listed(login("viewer").get(changelist_url(Suppression), {"q": "@Competitor.com"})) == ["@competitor.com"]


def test_an_erased_entry_is_still_found_by_its_address(login, workspace):
    entry, _ = services.suppress(workspace=workspace, value="gone@prospect.com")
    Suppression.objects.filter(pk=entry.pk).update(value="")

    assert listed(login("viewer").get(changelist_url(Suppression), {"q": "gone@prospect.com"})) == [str(
        Suppression.objects.get(pk=entry.pk))]


def test_csv_import_reports_created_existing_and_invalid(login, acme):
    client = login("operator")
    existing = acme.suppression.value
    upload = SimpleUploadedFile("crm-export.csv", (
        "name,email\n"
        "Jane,jane@prospect.com\n"
        f"Old,{existing.upper()}\n"
        "Bob,not-an-address\n"
        "Dup,JANE@prospect.com\n"
        "Whole domain,@rival.com\n"
    ).encode(), content_type="text/csv")

    response = client.post(url("suppression_suppression_import"),
                           {"workspace": acme.workspace.pk, "file": upload, "reason": "dnc", "note": "CRM export"},
                           follow=True)

    notes = messages_of(response)
    assert ("Imported crm-export.csv into Acme: 2 created, 1 already present, 1 invalid.") in notes
    assert "Not imported (not an address or @domain): not-an-address." in notes
    assert set(Suppression.objects.filter(workspace=acme.workspace, reason="dnc").values_list("value", flat=True)) == {
        "jane@prospect.com", "@rival.com"}
    event = AuditEvent.objects.get(action="suppression.imported")
    assert event.actor == "user:operator" and event.after["created"] == 2


def test_a_plain_list_imports_one_value_per_line(login, acme):
    upload = SimpleUploadedFile("list.txt", b"one@prospect.com\n\ntwo@prospect.com\n")
    response = login("operator").post(url("suppression_suppression_import"),
                                      {"workspace": acme.workspace.pk, "file": upload, "reason": "import"},
                                      follow=True)

    assert "Imported list.txt into Acme: 2 created, 0 already present, 0 invalid." in messages_of(response)


def test_import_cannot_target_another_workspace(login, acme, globex):
    upload = SimpleUploadedFile("list.txt", b"one@prospect.com\n")
    response = login("operator").post(url("suppression_suppression_import"),
                                      {"workspace": globex.workspace.pk, "file": upload, "reason": "import"})

    assert "Select a valid choice" in response.content.decode()
    assert not Suppression.objects.filter(value="one@prospect.com").exists()


def test_adding_an_address_already_on_the_list_explains_itself(login, acme):
    response = login("operator").post(add_url(Suppression), {"workspace": acme.workspace.pk,
                                                             "value": acme.suppression.value.upper(),
                                                             "reason": "manual"})

    [error] = form_errors(response)["value"]
    assert error.startswith(f"{acme.suppression.value} is already suppressed in Acme (reason: manual, since ")


def test_adding_something_that_is_not_an_address_is_refused(login, acme):
    response = login("operator").post(add_url(Suppression), {"workspace": acme.workspace.pk, "value": "jane at acme",
                                                             "reason": "manual"})

    assert form_errors(response)["value"] == ["“jane at acme” is not an email address or @domain."]


def test_a_suppression_cannot_be_edited(login, acme):
    client = login("admin")
    page = client.get(change_url(acme.suppression)).content.decode()
    response = client.post(change_url(acme.suppression), {"value": "other@prospect.com", "reason": "manual"})

    assert 'name="_save"' not in page
    assert response.status_code == 403
    acme.suppression.refresh_from_db()
    assert acme.suppression.value.startswith("blocked@")
