"""Bulk import: all or nothing, exact counts, safe beside concurrent additions, and the agency-wide list."""

import threading
import time

import pytest
from django.core.management.base import CommandError
from django.db import connections, transaction

from audit.models import AuditEvent
from controlplane import events
from suppression import services
from suppression.models import Suppression
from tests.commands.helpers import run

pytestmark = pytest.mark.django_db


def test_counts_kinds_and_the_one_audit_event(workspace):
    services.suppress(workspace=workspace, value="old@acme.com")
    services.suppress(workspace=None, value="agency@acme.com")  # another list: does not count as present

    result = services.bulk_import(workspace=workspace, values=[
        " New@Acme.com ", "new@acme.com", "old@acme.com", "agency@acme.com", "@acme.org", "@*.acme.net",
        "mailto:Jane@Acme.com", "<bob@acme.com>", "@*.com", "nope", None, "", 42])

    assert result.as_dict() == {"created": 6, "existing": 1, "invalid": ["@*.com", "nope", "42"]}
    kinds = dict(Suppression.objects.filter(workspace=workspace).values_list("value", "kind"))
    assert kinds == {"old@acme.com": "address", "new@acme.com": "address", "agency@acme.com": "address",
                     "@acme.org": "domain", "@*.acme.net": "subdomain", "jane@acme.com": "address",
                     "bob@acme.com": "address"}
    entry = Suppression.objects.get(workspace=workspace, value="@*.acme.net")
    assert entry.value_hash == services.value_hash("@*.acme.net") and entry.is_domain
    assert services.is_suppressed(workspace, "x@mail.acme.net") and not services.is_suppressed(workspace, "x@acme.net")
    [event] = AuditEvent.objects.filter(action="suppression.imported")
    assert (event.after["created"], event.after["existing"], event.after["invalid"]) == (6, 1, 3)
    ids = list(Suppression.objects.filter(workspace=workspace, source="import").values_list("id", flat=True))
    assert len(set(ids)) == 6 and all(i.startswith("sup_") and len(i) == 30 for i in ids)


def test_an_empty_import_changes_nothing_but_is_recorded(workspace):
    assert services.bulk_import(workspace=workspace, values=["", " ", "bad"]).as_dict() == {
        "created": 0, "existing": 0, "invalid": ["bad"]}
    assert not Suppression.objects.exists()
    assert AuditEvent.objects.filter(action="suppression.imported").count() == 1


def test_progress_counts_every_line(workspace):
    seen = []
    services.bulk_import(workspace=workspace, values=[f"p{n}@acme.com" for n in range(25000)] + ["bad", ""],
                         progress=seen.append)
    assert sum(seen) == 25002


@pytest.mark.django_db(transaction=True)
def test_an_import_racing_an_unsubscribe_of_the_same_address_neither_fails_nor_duplicates(workspace):
    """The unsubscribe's row is written, not yet committed, when the import's insert reaches it: the
    import waits for it, then skips that address instead of failing."""
    holding = threading.Event()
    release = threading.Event()

    def unsubscribe():
        try:
            with transaction.atomic():
                services.suppress(workspace=workspace, value="race@acme.com", reason="unsubscribe")
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=unsubscribe)
    thread.start()
    assert holding.wait(10)
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()

    result = services.bulk_import(workspace=workspace, values=["first@acme.com", "race@acme.com", "last@acme.com"])

    thread.join()
    assert time.monotonic() - started >= 0.9  # it did wait for the other transaction
    assert result.as_dict() == {"created": 2, "existing": 1, "invalid": []}
    assert Suppression.objects.get(value="race@acme.com").reason == "unsubscribe"
    assert Suppression.objects.filter(workspace=workspace).count() == 3


def test_the_command_imports_into_the_agency_wide_list(workspace, tmp_path):
    path = tmp_path / "agency.txt"
    path.write_text("@rival.com\n@*.rival.org\nnope\n")

    out, _ = run("importsuppressions", "--global", str(path))

    assert "created: 2" in out and "invalid: 1" in out
    assert set(Suppression.objects.filter(workspace=None).values_list("value", flat=True)) == {"@rival.com",
                                                                                              "@*.rival.org"}
    assert services.is_suppressed(workspace, "x@eu.rival.org")
    assert AuditEvent.objects.get(action="suppression.imported").chain == "global"
    with pytest.raises(CommandError, match="only the file"):
        run("importsuppressions", "--global", workspace.slug, str(path))
    with pytest.raises(CommandError, match="slug and the file"):
        run("importsuppressions", workspace.slug)


def test_a_hard_bounce_entry_names_the_event_behind_it(api, workspace, sending_setup):
    from controlplane.models import Message

    created = api.post("/api/v1/messages", {"to": "gone@prospect.example", "subject": "s", "text": "t"},
                       format="json").json()
    message = Message.objects.get(pk=created["id"])
    Message.objects.filter(pk=message.pk).update(status="sent")

    event = events.emit(workspace=workspace, type="message.bounced", message=message,
                        data={"bounce_type": "hard", "source": "test"})

    entry = services.find(workspace, "gone@prospect.example")
    assert (entry.reason, entry.source_event) == ("hard_bounce", event.id)
