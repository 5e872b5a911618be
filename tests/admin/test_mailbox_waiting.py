"""The mailbox page lists what is waiting, when each goes and why, and warns of caps above the provider's."""

import datetime as dt

import pytest
from django.utils import timezone
from django.utils.html import escape

from controlplane.models import Message
from mailboxes.models import Mailbox
from providers.services import create_connection
from tests.admin.conftest import change_url

pytestmark = pytest.mark.django_db


def page_of(client, mailbox):
    response = client.get(change_url(mailbox))
    assert response.status_code == 200
    return response.content.decode()


def waiting(workspace, mailbox, n, status, at, **fields):
    return Message.objects.create(workspace=workspace, mailbox=mailbox, to_address=f"lead{n}@example.com",
                                  from_address=mailbox.address, subject="Hi", text="Hello", status=status,
                                  scheduled_at=at, **fields)


def test_waiting_messages_are_listed_soonest_first_with_their_reasons(login, acme):
    now = timezone.now()
    later = waiting(acme.workspace, acme.mailbox, 1, "scheduled", now + dt.timedelta(hours=1),
                    decision={"wait_reason": "hourly_cap"})
    soon = waiting(acme.workspace, acme.mailbox, 2, "scheduled", now + dt.timedelta(minutes=1),
                   decision={"wait_reason": "per_minute_cap"})
    retry = waiting(acme.workspace, acme.mailbox, 3, "deferred", now + dt.timedelta(minutes=30),
                    provider_response="421 4.7.0 Try again later")
    waiting(acme.workspace, acme.mailbox, 4, "sent", now)

    page = page_of(login("viewer"), acme.mailbox)
    table = page[page.index('id="sending-waiting"'):]
    table = table[:table.index("</table>")]
    assert "Waiting to send (3)" in page
    assert table.index(soon.id) < table.index(retry.id) < table.index(later.id)
    assert "the per-minute cap" in table and "the hourly cap" in table
    assert "a retry after a provider error (421 4.7.0 Try again later)" in table
    assert "lead4@example.com" not in table


def test_nothing_waiting_says_so(login, acme):
    assert "Nothing is waiting." in page_of(login("viewer"), acme.mailbox)


def test_caps_above_the_providers_limits_are_flagged(login, acme):
    google = create_connection(workspace=acme.workspace, kind="google_workspace", name="gw", settings={},
                               credentials={"service_account_json": "{}"})
    Mailbox.objects.filter(pk=acme.mailbox.pk).update(provider=google, daily_cap=2500, weekly_cap=10000,
                                                      per_minute_cap=20, hourly_cap=100)
    acme.mailbox.refresh_from_db()

    page = page_of(login("viewer"), acme.mailbox)
    assert escape("The daily cap of 2,500 is above the provider's limit of 2,000 (Google Workspace sending limits: "
                  "2,000 messages per user per day).") in page
    assert "at most 100 per clock hour; at most 20 hand-offs in any 60 seconds" in page
