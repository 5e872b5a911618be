"""Changelists cost the same number of queries whatever the page holds."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import services as audit
from audit.models import AuditEvent
from mailboxes.models import Mailbox, MailboxDailyUsage, Pool, SendingDomain, WarmupProfile
from providers import services as provider_services
from providers.models import ProviderConnection
from suppression import services as suppression_services
from suppression.models import Suppression
from tests.admin.conftest import changelist_url

pytestmark = pytest.mark.django_db


class Rows:
    """Adds rows of one model to a workspace, numbered from where it left off."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.made = 0
        self.domain = SendingDomain.objects.create(workspace=workspace, name="send.acme.com")
        self.provider = provider_services.create_connection(
            workspace=workspace, kind="smtp", name="relay", settings={"host": "h", "port": 25, "security": "none"})
        self.warmup = WarmupProfile.objects.create(workspace=workspace, name="ramp", start=5, step=5)
        self.pool = Pool.objects.create(workspace=workspace, name="cold")

    def numbers(self, count):
        start, self.made = self.made, self.made + count
        return range(start, self.made)

    def mailboxes(self, count):
        today = timezone.now().date()
        for n in self.numbers(count):
            mailbox = Mailbox.objects.create(
                workspace=self.workspace, domain=self.domain, provider=self.provider, address=f"rep{n}@send.acme.com",
                warmup_profile=self.warmup if n % 2 else None, warmup_started_on=today - dt.timedelta(days=n),
            )
            self.pool.mailboxes.add(mailbox)
            MailboxDailyUsage.objects.create(mailbox=mailbox, day=today, count=n)

    def domains(self, count):
        for n in self.numbers(count):
            SendingDomain.objects.create(workspace=self.workspace, name=f"d{n}.acme.com")

    def suppressions(self, count):
        for n in self.numbers(count):
            suppression_services.suppress(workspace=self.workspace, value=f"lead{n}@prospect.com")

    def audit_events(self, count):
        for n in self.numbers(count):
            audit.record(workspace=self.workspace, action="note.added", object_type="note", object_id=str(n))

    def providers(self, count):
        for n in self.numbers(count):
            provider_services.create_connection(workspace=self.workspace, kind="sendgrid", name=f"esp{n}",
                                                credentials={"api_key": f"key{n}"})


def queries_for(client, model, params):
    client.get(changelist_url(model), params)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(changelist_url(model), params)
    assert response.status_code == 200
    return len(captured), len(response.context["cl"].result_list)


CASES = [
    (Mailbox, "mailboxes", {}),
    (SendingDomain, "domains", {}),
    (Suppression, "suppressions", {"reason": "manual"}),
    (AuditEvent, "audit_events", {"action": "note.added"}),
    (ProviderConnection, "providers", {"kind": "sendgrid"}),
]


@pytest.mark.parametrize("model, make, params", CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("who", ["operator", "superuser"])
def test_changelist_query_count_does_not_grow_with_the_page(login, workspace, other_workspace, model, make, params,
                                                            who):
    client = login(who)
    rows = Rows(workspace)
    Rows(other_workspace)
    grow = getattr(rows, make)

    grow(2)
    small, shown_small = queries_for(client, model, params)
    grow(18)
    large, shown_large = queries_for(client, model, params)

    assert shown_small >= 2 and shown_large == shown_small + 18
    assert small == large


def test_mailbox_changelist_shows_each_rows_usage_and_cap(login, workspace):
    Rows(workspace).mailboxes(3)
    page = login("viewer").get(changelist_url(Mailbox)).content.decode()

    assert "0 / 30" in page
    assert "1 / 10" in page
    assert "2 / 30" in page


def page_queries(client, path):
    client.get(path)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, path
    return len(captured)


def sends(mailbox, count, *, bounced=0):
    from controlplane import events
    from controlplane.models import Message

    now = timezone.now()
    made = [Message.objects.create(workspace=mailbox.workspace, mailbox=mailbox, to_address=f"p{n}@prospect.com",
                                   subject="Hi", text="Hi", status="sent", scheduled_at=now, sent_at=now)
            for n in range(count)]
    for message in made[:bounced]:
        events.emit(workspace=mailbox.workspace, type="message.bounced", message=message,
                    data={"bounce_type": "hard"})


@pytest.mark.parametrize("who", ["operator", "superuser"])
def test_the_mailbox_page_and_the_setup_checklist_cost_the_same_with_2_or_20_of_everything(login, workspace, who):
    from tests.admin.conftest import change_url, url

    client = login(who)
    rows = Rows(workspace)
    rows.mailboxes(2)
    mailbox = Mailbox.objects.filter(workspace=workspace).order_by("address").first()
    sends(mailbox, 2)
    pages = [change_url(mailbox), url("workspaces_workspace_onboarding", workspace.pk), url("index")]
    few = [page_queries(client, page) for page in pages]

    rows.mailboxes(18)
    rows.domains(18)
    sends(mailbox, 18, bounced=1)
    many = [page_queries(client, page) for page in pages]

    assert Mailbox.objects.filter(workspace=workspace).count() == 20
    assert few == many
