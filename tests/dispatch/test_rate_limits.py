"""Hourly and per-minute caps: one reservation ledger at intake, a sliding minute at hand-off, and every
wait stated with the limit that caused it. Provider presets propose and bound the caps."""

import datetime as dt
import threading
import zoneinfo

import pytest
from django.utils import timezone

from controlplane import dispatch
from controlplane.models import Event, Message
from tests.api.helpers import assert_error, midday_zone

pytestmark = pytest.mark.django_db(transaction=True)


def _send(api, mailbox, n):
    return api.post("/api/v1/messages", {"to": f"lead{n}@example.com", "from": mailbox.address, "subject": "Hi",
                                         "text": "Hello"}, format="json")


def test_per_minute_cap_paces_intake_and_says_so(api, sending_setup):
    mailbox = sending_setup["mailboxes"][0]
    mailbox.per_minute_cap = 30
    mailbox.save()
    bodies = [_send(api, mailbox, n).json() for n in range(3)]
    times = [dt.datetime.fromisoformat(b["scheduled_at"].replace("Z", "+00:00")) for b in bodies]
    assert all((later - earlier).total_seconds() >= 2 for earlier, later in zip(times, times[1:])), times
    assert bodies[1]["status"] == "scheduled" and bodies[1]["decision"]["wait_reason"] == "per_minute_cap"
    scheduled = Event.objects.get(message_id=bodies[1]["id"], type="message.scheduled")
    assert scheduled.data["reason"] == "per_minute_cap"


def test_hourly_cap_defers_to_the_next_hour_with_its_reason(api, sending_setup):
    mailbox = sending_setup["mailboxes"][0]
    mailbox.hourly_cap = 2
    mailbox.save()
    now = timezone.now()
    for n in range(2):
        assert _send(api, mailbox, n).json()["status"] == "queued"
    third = _send(api, mailbox, 2)
    next_hour = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    if next_hour.date() == now.date():  # the mailbox's window (UTC, all day) still has a later hour today
        body = third.json()
        assert third.status_code == 202 and body["status"] == "scheduled"
        assert body["scheduled_at"] == next_hour.isoformat().replace("+00:00", "Z")
        assert body["decision"]["wait_reason"] == "hourly_cap"
        assert Event.objects.get(message_id=body["id"], type="message.scheduled").data["reason"] == "hourly_cap"
    else:
        error = assert_error(third, 422, "cap_exhausted")
        assert error["limit"] == "hourly_cap"


def test_hourly_usage_is_given_back_when_a_waiting_send_is_cancelled(api, sending_setup):
    mailbox = sending_setup["mailboxes"][0]
    mailbox.hourly_cap = 1
    mailbox.save()
    first = _send(api, mailbox, 0).json()
    assert api.post(f"/api/v1/messages/{first['id']}/cancel").status_code == 200
    again = _send(api, mailbox, 1).json()
    assert again["status"] == "queued", "the cancelled send's hour slot is free again"


def test_per_minute_cap_holds_at_hand_off_under_concurrent_workers(api, sending_setup, smtp_sink):
    """A backlog of 80 due messages (as after a resume) and four workers at once: 30 go, the rest wait for the
    minute to pass, with that reason; after it, 30 more, never more than 30 in any 60 seconds."""
    mailbox = sending_setup["mailboxes"][0]
    mailbox.daily_cap, mailbox.weekly_cap = 200, 1000
    mailbox.save()
    ids = [_send(api, mailbox, n).json()["id"] for n in range(80)]
    mailbox.per_minute_cap = 30
    mailbox.save()
    Message.objects.filter(pk__in=ids).update(scheduled_at=timezone.now() - dt.timedelta(seconds=1))

    def work():
        from django.db import connection

        try:
            dispatch.dispatch_mailboxes([mailbox.pk])
        finally:
            connection.close()

    def burst():
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    burst()
    assert len(smtp_sink.messages) == 30
    held = Message.objects.filter(pk__in=ids, status="scheduled")
    assert held.count() == 50
    first_sends = sorted(Message.objects.filter(pk__in=ids, status="sent").values_list("sent_at", flat=True))
    expected = first_sends[0] + dt.timedelta(seconds=60)
    assert all(abs((m.scheduled_at - expected).total_seconds()) < 1 for m in held)
    assert Event.objects.filter(message_id__in=ids, type="message.scheduled", data__reason="per_minute_cap").count() == 50

    burst()  # the minute has not passed: nothing more goes
    assert len(smtp_sink.messages) == 30

    # A minute later (the first hand-offs are moved back rather than sleeping through it).
    Message.objects.filter(pk__in=ids, status="sent").update(sent_at=timezone.now() - dt.timedelta(seconds=61))
    Message.objects.filter(pk__in=ids, status="scheduled").update(scheduled_at=timezone.now())
    burst()
    assert len(smtp_sink.messages) == 60
    recent = Message.objects.filter(pk__in=ids, sent_at__gt=timezone.now() - dt.timedelta(seconds=60)).count()
    assert recent == 30
    assert len(set(smtp_sink.recipients())) == 60, "no message handed off twice"


def test_provider_presets_propose_and_bound_caps(api, workspace, sending_setup):
    from providers.services import create_connection

    m365 = create_connection(workspace=workspace, kind="microsoft_365", name="m365",
                             settings={}, credentials={"tenant_id": "t", "client_id": "c", "client_secret": "s"})
    created = api.post("/api/v1/mailboxes", {"address": "dan@mail.acme.com", "provider": m365.pk,
                                                   "daily_cap": 20, "weekly_cap": 100}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["per_minute_cap"] == 30 and body["hourly_cap"] is None
    assert body["provider_limits"]["limits"] == {"daily_cap": 10000, "per_minute_cap": 30}
    assert body["provider_limits"]["warnings"] == []

    over = api.patch(f"/api/v1/mailboxes/{body['id']}", {"per_minute_cap": 60}, format="json").json()
    assert over["per_minute_cap"] == 60
    assert over["provider_limits"]["warnings"] == [
        "The per-minute cap of 60 is above the provider's limit of 30 (Exchange Online limits: 30 messages per "
        "minute, 10,000 recipients per day)."]


def test_a_pinned_send_refused_by_its_hourly_cap_names_that_limit(api, sending_setup):
    """The last hour of the window is full: nothing is left today, and the 422 says which limit bound it."""
    import datetime as dt_module

    mailbox = sending_setup["mailboxes"][0]
    now = timezone.now()
    mailbox.hourly_cap = 1
    mailbox.send_window_timezone = midday_zone(now)  # the next hour starts on the same local day
    local = now.astimezone(zoneinfo.ZoneInfo(mailbox.send_window_timezone))
    mailbox.send_window_start = dt_module.time(0, 0)
    mailbox.send_window_end = dt_module.time(local.hour + 1, 0)  # the window ends when the current hour does
    mailbox.save()
    assert _send(api, mailbox, 0).json()["status"] == "queued"
    error = assert_error(_send(api, mailbox, 1), 422, "cap_exhausted")
    assert error["limit"] == "hourly_cap"
    assert "hourly cap" in error["message"]
