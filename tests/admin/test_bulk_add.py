"""“Add mailboxes in bulk”: a CSV is checked row by row on a preview page, then created all at once or not at
all."""

import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from audit.models import AuditEvent
from mailboxes.models import Mailbox
from mailboxes.services import onboarding
from tests.admin.conftest import changelist_url, messages_of, url

HEADER = "address,display_name,provider,daily_cap,weekly_cap,warmup_profile,pools\n"
GOOD = HEADER + ("alex@mail.acme.com,Alex at Acme,acme-relay,30,150,acme-ramp,acme-cold\n"
                 "blair@mail.acme.com,Blair at Acme,acme-relay,25,100,,\n")


def bulk(client, text=None, *, workspace, confirm=False, upload=None):
    data = {"workspace": workspace.pk, "text": text or ""}
    if confirm:
        data["confirm"] = "yes"
    if upload is not None:
        data["file"] = upload
    return client.post(url("mailboxes_mailbox_bulk_add"), data, follow=True)


def outcomes(response):
    """{line: ["will be created"] or [error, ...]} from the preview page's context."""
    plan = response.context["plan"]
    return {row.line: (["will be created"] if row.ok else row.errors) for row in plan.rows}


@pytest.mark.django_db
def test_the_preview_says_what_each_row_will_do_and_creates_nothing(login, acme):
    response = bulk(login("operator"), GOOD, workspace=acme.workspace)

    page = response.content.decode()
    assert outcomes(response) == {2: ["will be created"], 3: ["will be created"]}
    assert "2 mailboxes will be created. Nothing has been created yet." in page
    assert 'value="Create these 2 mailboxes"' in page
    assert not Mailbox.objects.filter(address__in=["alex@mail.acme.com", "blair@mail.acme.com"]).exists()


@pytest.mark.django_db
def test_confirming_creates_every_mailbox_with_its_caps_warm_up_and_pools_and_audits_each(login, acme):
    client = login("operator")

    response = bulk(client, GOOD, workspace=acme.workspace, confirm=True)

    assert response.redirect_chain[-1][0] == changelist_url(Mailbox) + f"?workspace__id__exact={acme.workspace.pk}"
    assert "Added 2 mailboxes to Acme." in messages_of(response)
    alex = Mailbox.objects.get(address="alex@mail.acme.com")
    blair = Mailbox.objects.get(address="blair@mail.acme.com")
    assert (alex.display_name, alex.daily_cap, alex.weekly_cap, alex.provider, alex.domain) == (
        "Alex at Acme", 30, 150, acme.provider, acme.domain)
    assert alex.warmup_profile == acme.warmup and alex.warmup_started_on is not None
    assert list(alex.pools.all()) == [acme.pool] and list(blair.pools.all()) == []
    assert blair.warmup_profile is None and (blair.daily_cap, blair.weekly_cap) == (25, 100)
    created = AuditEvent.objects.filter(action="mailbox.created", workspace=acme.workspace)
    assert sorted(created.values_list("object_id", flat=True)) == sorted([alex.pk, blair.pk])
    assert created.get(object_id=alex.pk).after["pools"] == [acme.pool.pk]
    assert created.get(object_id=alex.pk).actor_label == "operator"


@pytest.mark.django_db
def test_every_wrong_row_says_why_and_nothing_is_created(login, acme, globex):
    text = HEADER + "\n".join([
        "sales@mail.acme.com,Taken,acme-relay,10,50,,",                # already a mailbox
        "new@mail.globex.com,Elsewhere,acme-relay,10,50,,",             # another workspace's domain
        "not-an-address,X,acme-relay,10,50,,",
        "dup@mail.acme.com,One,acme-relay,10,50,,",
        "dup@mail.acme.com,Two,globex-relay,ten,5,globex-ramp,acme-cold;nope",
        "ok@mail.acme.com,Fine,acme-relay,10,50,,",
    ]) + "\n"

    response = bulk(login("operator"), text, workspace=acme.workspace, confirm=True)

    rows = outcomes(response)
    assert rows[2] == ["sales@mail.acme.com is already a mailbox of Acme."]
    assert rows[3] == ["mail.globex.com is not a sending domain of Acme; add the domain first."]
    assert rows[4] == ["“not-an-address” is not an email address."]
    assert rows[5] == ["will be created"]
    assert rows[6] == ["dup@mail.acme.com is also on line 5.",
                       "No provider “globex-relay” in Acme (providers: acme-relay).",
                       "The daily cap must be a whole number, not “ten”.",
                       "No warm-up profile “globex-ramp” in Acme.",
                       "No pool “nope” in Acme."]
    assert rows[7] == ["will be created"]
    page = response.content.decode()
    assert "4 rows have errors: nothing will be created until every row is right." in page
    assert "Create these" not in page
    assert Mailbox.objects.filter(workspace=acme.workspace).count() == 1


@pytest.mark.django_db
def test_a_weekly_cap_below_the_daily_cap_is_refused(login, acme):
    text = HEADER + "alex@mail.acme.com,Alex,acme-relay,50,20,,\n"

    rows = outcomes(bulk(login("operator"), text, workspace=acme.workspace))

    assert rows[2] == ["The weekly cap (20) must be at least the daily cap (50)."]


@pytest.mark.parametrize("text, message", [
    ("", "Choose a CSV file or paste its rows."),
    ("address,provider\nalex@mail.acme.com,acme-relay\n", "The header row lacks daily_cap, weekly_cap"),
    (HEADER, "The file has a header row but no mailbox rows."),
])
@pytest.mark.django_db
def test_a_file_that_cannot_be_read_is_explained(login, acme, text, message):
    response = bulk(login("operator"), text, workspace=acme.workspace)

    assert message in response.content.decode()
    assert response.context["plan"] is None


@pytest.mark.django_db
def test_an_uploaded_spreadsheet_export_with_semicolons_and_a_bom_is_read(login, acme):
    content = ("\ufeffAddress;Display name;Provider;Daily cap;Weekly cap;Pools\n"
               "alex@mail.acme.com;Alex;acme-relay;30;150;acme-cold\n").encode("utf-8")
    upload = SimpleUploadedFile("mailboxes.csv", content, content_type="text/csv")

    response = bulk(login("operator"), workspace=acme.workspace, upload=upload)

    assert outcomes(response) == {2: ["will be created"]}
    assert "alex@mail.acme.com;Alex;acme-relay" in response.context["csv_text"]


@pytest.mark.django_db
def test_a_file_that_is_not_utf8_is_refused_with_a_hint(login, acme):
    upload = SimpleUploadedFile("mailboxes.csv", "address,café\n".encode("latin-1"), content_type="text/csv")

    response = bulk(login("operator"), workspace=acme.workspace, upload=upload)

    assert "The file is not UTF-8 text" in response.content.decode()


@pytest.mark.django_db
def test_a_row_that_became_wrong_after_the_preview_stops_the_whole_file(login, acme):
    client = login("operator")
    bulk(client, GOOD, workspace=acme.workspace)
    Mailbox.objects.create(workspace=acme.workspace, domain=acme.domain, provider=acme.provider,
                           address="blair@mail.acme.com")

    response = bulk(client, GOOD, workspace=acme.workspace, confirm=True)

    assert outcomes(response)[3] == ["blair@mail.acme.com is already a mailbox of Acme."]
    assert not Mailbox.objects.filter(address="alex@mail.acme.com").exists()
    assert not AuditEvent.objects.filter(action="mailbox.created").exists()


@pytest.mark.django_db
def test_viewers_and_other_workspaces_cannot_add(login, acme, globex):
    viewer = login("viewer")
    assert viewer.get(url("mailboxes_mailbox_bulk_add")).status_code == 403
    assert "Add in bulk" not in viewer.get(changelist_url(Mailbox)).content.decode()

    operator = login("operator")
    response = bulk(operator, GOOD.replace("mail.acme.com", "mail.globex.com"), workspace=globex.workspace,
                    confirm=True)

    assert "Select a valid choice" in response.content.decode()
    assert Mailbox.objects.filter(workspace=globex.workspace).count() == 1
    assert "Add in bulk" in operator.get(changelist_url(Mailbox)).content.decode()


@pytest.mark.django_db(transaction=True)
def test_two_people_adding_the_same_file_at_once_add_it_once(acme):
    plans = [onboarding.plan(workspace=acme.workspace, text=GOOD) for _ in range(2)]
    barrier = threading.Barrier(2)
    results = []

    def apply(plan):
        try:
            barrier.wait()
            results.append(len(onboarding.create(plan=plan)))
        except onboarding.Conflict as conflict:
            results.append(str(conflict))
        finally:
            connection.close()

    threads = [threading.Thread(target=apply, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results, key=str) == [2, "Another change added one of these mailboxes meanwhile; check the file "
                                           "again."]
    assert Mailbox.objects.filter(address__in=["alex@mail.acme.com", "blair@mail.acme.com"]).count() == 2
    assert AuditEvent.objects.filter(action="mailbox.created").count() == 2
