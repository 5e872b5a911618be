"""The mailbox page answers "can this mailbox send, and if not, why?"; domains get a "Check DNS now" action."""

import datetime as dt

import pytest
from django.utils import timezone

from controlplane.models import Event, Message
from controlplane.ids import new_id
from mailboxes import admin as mailbox_admin
from mailboxes.models import Mailbox, MailboxDailyUsage, SendingDomain
from tests.admin.conftest import change_url, changelist_url, messages_of

pytestmark = pytest.mark.django_db

ALWAYS = {"send_window_days": [1, 2, 3, 4, 5, 6, 7], "send_window_start": dt.time(0, 0),
          "send_window_end": dt.time(23, 59, 59), "send_window_timezone": "UTC", "min_interval_seconds": 0}


def verdict_of(client, mailbox):
    response = client.get(change_url(mailbox))
    assert response.status_code == 200
    page = response.content.decode()
    start = page.index('id="sending-verdict"')
    return page[start:page.index("</table>", start)]


def update(mailbox, **fields):
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
    mailbox.refresh_from_db()
    return mailbox


def test_an_idle_mailbox_in_its_window_can_send_now(login, acme):
    update(acme.mailbox, **ALWAYS)

    verdict = verdict_of(login("viewer"), acme.mailbox)

    assert "Can send now" in verdict
    assert "20: the daily cap of 20 (no warm-up profile)" in verdict
    assert "0 today" in verdict and "20 left" in verdict and "0 this week of 80" in verdict
    assert "Mon, Tue, Wed, Thu, Fri, Sat, Sun, 00:00–23:59 UTC" in verdict
    assert "mail.acme.com: unchecked" in verdict
    assert "Last provider error" in verdict and ">none<" in verdict


def test_warm_up_sets_the_cap_and_a_full_day_says_when_it_can_send_again(login, acme):
    today = timezone.now().date()
    update(acme.mailbox, **ALWAYS, warmup_profile=acme.warmup, warmup_started_on=today - dt.timedelta(days=2))
    MailboxDailyUsage.objects.create(mailbox=acme.mailbox, day=today, count=15)

    verdict = verdict_of(login("operator"), acme.mailbox)

    assert "Cannot send now" in verdict
    assert "15: warm-up day 3 of “acme-ramp” allows 15 (below the daily cap of 20)" in verdict
    assert "cap of 15 is used up (15 sent today)." in verdict
    tomorrow = today + dt.timedelta(days=1)
    assert f"next allowed send at <strong id=\"sending-next-at\">{tomorrow:%a} {tomorrow.day} {tomorrow:%b %Y}, 00:00 UTC" in verdict


def test_the_weekly_cap_is_named_when_it_is_what_stops_the_mailbox(login, acme):
    today = timezone.now().date()
    update(acme.mailbox, **ALWAYS, weekly_cap=20)
    MailboxDailyUsage.objects.create(mailbox=acme.mailbox, day=today, count=20)

    verdict = verdict_of(login("operator"), acme.mailbox)

    assert "The weekly cap of 20 is used up (20 sent this week)." in verdict


def test_a_paused_mailbox_on_a_paused_domain_gives_every_reason_and_the_last_error(login, acme):
    update(acme.mailbox, **ALWAYS, status="paused", paused_reason="Complaint rate 1.2% passes 0.3%",
           last_error="535 5.7.8 Authentication credentials invalid")
    SendingDomain.objects.filter(pk=acme.domain.pk).update(paused=True, paused_reason="DKIM fails")

    verdict = verdict_of(login("viewer"), acme.mailbox)

    assert "Cannot send" in verdict
    assert "The mailbox is paused: Complaint rate 1.2% passes 0.3%." in verdict
    assert "Its domain mail.acme.com is paused: DKIM fails." in verdict
    assert "535 5.7.8 Authentication credentials invalid" in verdict


def test_outside_the_window_the_page_says_so_and_when_the_window_opens(login, acme):
    now = timezone.now()
    closed_today = [d for d in range(1, 8) if d != now.isoweekday()]
    update(acme.mailbox, **{**ALWAYS, "send_window_days": closed_today})

    verdict = verdict_of(login("viewer"), acme.mailbox)

    tomorrow = now.date() + dt.timedelta(days=1)
    assert "It is outside the send window now." in verdict
    assert f"{tomorrow:%a} {tomorrow.day} {tomorrow:%b %Y}, 00:00 UTC" in verdict


def test_health_rates_are_shown_against_the_workspace_thresholds(login, acme):
    update(acme.mailbox, **ALWAYS)
    now = timezone.now()
    for n in range(20):
        message = Message.objects.create(workspace=acme.workspace, mailbox=acme.mailbox, to_address=f"p{n}@x.com",
                                         subject="Hi", text="Hi", status="sent", scheduled_at=now, sent_at=now)
        if n < 2:
            Event.objects.create(id=new_id("evt"), workspace=acme.workspace, message=message, type="message.bounced",
                                 occurred_at=now, data={"bounce_type": "hard"})

    verdict = verdict_of(login("viewer"), acme.mailbox)

    assert "Health (last 20 sends)" in verdict
    assert "hard bounces 10.00% (2), pause above 5.00%" in verdict and "over the threshold" in verdict
    assert "complaints 0.00% (0), pause above 0.30%" in verdict


def test_the_add_page_has_no_verdict(login, acme):
    from tests.admin.conftest import add_url

    page = login("operator").get(add_url(Mailbox)).content.decode()

    assert 'id="sending-verdict"' not in page and "Can this mailbox send?" not in page


# Check DNS now ------------------------------------------------------------------------------------


@pytest.fixture
def queued(monkeypatch):
    calls = []
    monkeypatch.setattr(mailbox_admin.jobs, "enqueue_domain_check",
                        lambda domain_id, trigger="manual": calls.append((domain_id, trigger)))
    return calls


def test_check_dns_now_queues_a_manual_check_of_each_selected_domain(login, acme, queued):
    second = SendingDomain.objects.create(workspace=acme.workspace, name="news.acme.com")

    response = login("operator").post(changelist_url(SendingDomain),
                                      {"action": "check_dns_now", "_selected_action": [acme.domain.pk, second.pk]},
                                      follow=True)

    assert sorted(queued) == sorted([(acme.domain.pk, "manual"), (second.pk, "manual")])
    [notice] = [m for m in messages_of(response) if "Queued DNS checks" in m]
    assert "mail.acme.com" in notice and "news.acme.com" in notice


def test_check_dns_now_is_not_offered_to_viewers_nor_applied_to_another_workspace(login, acme, globex, queued):
    viewer = login("viewer")
    page = viewer.get(changelist_url(SendingDomain)).content.decode()
    viewer.post(changelist_url(SendingDomain), {"action": "check_dns_now", "_selected_action": [acme.domain.pk]})
    login("operator").post(changelist_url(SendingDomain),
                           {"action": "check_dns_now", "_selected_action": [globex.domain.pk]})

    assert "check_dns_now" not in page
    assert queued == []
