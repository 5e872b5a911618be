"""The charts' daily counts: written by the database for every writer, read in two queries, folded exactly once."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane import events
from controlplane.models import Message
from controlplane.stats import services as stats
from controlplane.stats.models import MailboxDay, PendingCount, WorkspaceDay
from mailboxes.models import Mailbox
from tests.admin.conftest import change_url

NOON = dt.time(12, 0)


def day_in(workspace, days_ago):
    return timezone.now().astimezone(workspace.tz).date() - dt.timedelta(days=days_ago)


def at_noon(workspace, day):
    return dt.datetime.combine(day, NOON, tzinfo=workspace.tz)


def send(workspace, mailbox, day, status="queued", n=1):
    return [Message.objects.create(workspace=workspace, mailbox=mailbox, to_address=f"p{i}@prospect.com",
                                   subject="Hi", text="Hello", status=status, scheduled_at=at_noon(workspace, day))
            for i in range(n)]


def counts(workspace, days, mailbox=None):
    return stats.daily(workspace, days, mailbox=mailbox)


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham"])
def test_messages_either_side_of_a_local_midnight_count_on_their_own_days(acme, zone):
    """Pending changes are summed per minute: in a zone whose offset is not whole hours, a message one
    second before local midnight still counts on its day, and one at midnight on the next."""
    ws, mailbox = acme.workspace, acme.mailbox
    ws.timezone = zone
    ws.save(update_fields=["timezone"])
    today, yesterday = day_in(ws, 0), day_in(ws, 1)
    midnight = dt.datetime.combine(today, dt.time(0, 0), tzinfo=ws.tz)
    Message.objects.bulk_create([
        Message(workspace=ws, mailbox=mailbox, to_address=f"e{i}@prospect.com", subject="Hi", text="Hello",
                status="queued", scheduled_at=midnight + dt.timedelta(seconds=offset))
        for i, offset in enumerate([-1, -1, 0, 59])])
    assert counts(ws, [yesterday, today]) == {yesterday: {"queued": 2}, today: {"queued": 2}}
    stats.fold()
    assert counts(ws, [yesterday, today]) == {yesterday: {"queued": 2}, today: {"queued": 2}}


@pytest.mark.django_db
def test_a_message_is_counted_under_its_current_status_and_day_through_every_change(acme):
    ws, mailbox = acme.workspace, acme.mailbox
    today, yesterday = day_in(ws, 0), day_in(ws, 1)
    [message] = send(ws, mailbox, yesterday)
    assert counts(ws, [yesterday, today]) == {yesterday: {"queued": 1}, today: {}}

    Message.objects.filter(pk=message.pk).update(status="deferred", scheduled_at=at_noon(ws, today))
    Message.objects.filter(pk=message.pk).update(status="sending")
    Message.objects.filter(pk=message.pk).update(status="sent")
    assert counts(ws, [yesterday, today]) == {yesterday: {}, today: {"sent": 1}}

    events.emit(workspace=ws, type="message.bounced", message=message, data={"bounce_type": "hard"})
    events.emit(workspace=ws, type="message.bounced", message=message, data={"bounce_type": "hard"})
    events.emit(workspace=ws, type="message.complained", message=message)
    expected = {yesterday: {}, today: {"complained": 1, "hard_bounce": 1, "complaint": 1}}
    assert counts(ws, [yesterday, today]) == expected
    assert counts(ws, [yesterday, today], mailbox=mailbox) == expected

    stats.fold()
    assert not PendingCount.objects.exists()
    assert counts(ws, [yesterday, today]) == expected
    assert counts(ws, [yesterday, today], mailbox=mailbox) == expected


@pytest.mark.django_db
def test_statements_that_write_many_messages_count_each_one(acme):
    """A batch insert and an update of many rows (a hand-off claim) count every row they change, and
    only those whose status, day or mailbox changed."""
    ws, mailbox = acme.workspace, acme.mailbox
    today = day_in(ws, 0)
    Message.objects.bulk_create([Message(workspace=ws, mailbox=mailbox, to_address=f"b{i}@prospect.com", subject="Hi",
                                         text="Hello", status="queued", scheduled_at=at_noon(ws, today))
                                 for i in range(5)])
    assert counts(ws, [today]) == {today: {"queued": 5}}
    # One pending row per mailbox, minute and status a statement changed, its changes summed.
    assert list(PendingCount.objects.values_list("metric", "change")) == [("queued", 5)]
    Message.objects.filter(workspace=ws).update(status="sending")
    Message.objects.filter(workspace=ws).update(subject="Changed")  # nothing counted changes
    Message.objects.filter(pk__in=list(Message.objects.values_list("pk", flat=True)[:2])).update(status="sent")
    assert counts(ws, [today]) == {today: {"sending": 3, "sent": 2}}
    assert sorted(PendingCount.objects.values_list("metric", "change")) == [
        ("queued", -5), ("queued", 5), ("sending", -2), ("sending", 5), ("sent", 2)]
    stats.fold()
    assert counts(ws, [today]) == {today: {"sending": 3, "sent": 2}}


@pytest.mark.django_db
def test_soft_bounces_do_not_count_as_hard_and_each_workspace_and_mailbox_counts_apart(acme, globex):
    ws = acme.workspace
    today = day_in(ws, 0)
    other = Mailbox.objects.create(workspace=ws, domain=acme.domain, provider=acme.provider,
                                   address="ops@mail.acme.com")
    soft = send(ws, acme.mailbox, today, status="sent", n=3)
    send(ws, other, today, status="sent", n=2)
    send(globex.workspace, globex.mailbox, day_in(globex.workspace, 0), status="sent", n=5)
    events.emit(workspace=ws, type="message.bounced", message=soft[0], data={"bounce_type": "soft"})
    stats.fold()

    assert counts(ws, [today]) == {today: {"sent": 4, "bounced": 1}}
    assert counts(ws, [today], mailbox=acme.mailbox) == {today: {"sent": 2, "bounced": 1}}
    assert counts(ws, [today], mailbox=other) == {today: {"sent": 2}}


@pytest.mark.django_db
def test_days_are_the_workspaces_local_days(acme):
    ws = acme.workspace  # Europe/Paris
    today = day_in(ws, 0)
    local_midnight = dt.datetime.combine(today, dt.time.min, tzinfo=ws.tz)
    for at in (local_midnight - dt.timedelta(minutes=1), local_midnight + dt.timedelta(minutes=1)):
        Message.objects.create(workspace=ws, mailbox=acme.mailbox, to_address="p@prospect.com", subject="Hi",
                               text="Hi", status="sent", scheduled_at=at)
    yesterday = today - dt.timedelta(days=1)

    assert counts(ws, [yesterday, today]) == {yesterday: {"sent": 1}, today: {"sent": 1}}
    stats.fold()
    assert counts(ws, [yesterday, today]) == {yesterday: {"sent": 1}, today: {"sent": 1}}


@pytest.mark.django_db
def test_reading_costs_two_queries_whatever_the_number_of_messages(acme):
    ws = acme.workspace
    days = [day_in(ws, n) for n in range(29, -1, -1)]
    send(ws, acme.mailbox, days[-1], status="sent", n=2)
    with CaptureQueriesContext(connection) as few:
        counts(ws, days)
    for day in days:
        send(ws, acme.mailbox, day, status="delivered", n=5)
    with CaptureQueriesContext(connection) as many:
        figures = counts(ws, days, mailbox=acme.mailbox)

    assert len(few) == len(many) == 2
    assert sum(f.get("delivered", 0) for f in figures.values()) == 150


@pytest.mark.django_db(transaction=True)
def test_folds_running_at_once_count_every_change_exactly_once(acme):
    ws = acme.workspace
    today = day_in(ws, 0)
    for status in ("sent", "delivered", "bounced"):
        send(ws, acme.mailbox, today, status=status, n=40)
    barrier = threading.Barrier(3)

    def fold():
        try:
            barrier.wait()
            stats.fold(batch=7)
        finally:
            connection.close()

    threads = [threading.Thread(target=fold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not PendingCount.objects.exists()
    folded = dict(WorkspaceDay.objects.filter(workspace=ws, day=today).values_list("metric", "count"))
    assert folded == {"sent": 40, "delivered": 40, "bounced": 40}
    assert dict(MailboxDay.objects.filter(mailbox=acme.mailbox, day=today).values_list("metric", "count")) == folded


@pytest.mark.django_db
def test_the_mailbox_page_charts_its_own_rates_against_the_thresholds(login, acme, globex):
    ws = acme.workspace
    today = day_in(ws, 0)
    sent = send(ws, acme.mailbox, today, status="sent", n=4)
    send(globex.workspace, globex.mailbox, day_in(globex.workspace, 0), status="sent", n=3)
    events.emit(workspace=ws, type="message.bounced", message=sent[0], data={"bounce_type": "hard"})

    page = login("viewer").get(change_url(acme.mailbox)).content.decode()

    charts = page[page.index('id="mailbox-health-charts"'):]
    assert "Hard-bounce rate per day" in charts and "Complaint rate per day" in charts
    assert "pause threshold 5.0%" in charts and "pause threshold 0.30%" in charts
    assert "25.00% (1 of 4)" in charts and "1 day above it" in charts
    assert "0.00% (0 of 4)" in charts
