"""Screenshots of the key admin pages for docs/screenshots/, from a realistic workspace.

Not part of the normal suite: run with
    SCREENSHOTS=1 make test PYTEST_ARGS="-n0 tests/browser/test_screenshots.py"
"""

import datetime as dt
import os
import random
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane import events, intake
from controlplane.models import Event, Message, WebhookDelivery, WebhookEndpoint
from controlplane.ids import new_id
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from mailboxes.services import identities
from providers import services as provider_services
from suppression import services as suppression_services

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.environ.get("SCREENSHOTS") != "1", reason="screenshots are taken only with SCREENSHOTS=1"),
]

OUT = Path(settings.BASE_DIR) / "docs" / "screenshots"
PEOPLE = ["jane.doe", "sam.lee", "priya.n", "tom.baker", "ana.silva", "li.wei", "omar.k", "eva.m", "noah.b",
          "mia.r", "leo.t", "zoe.h"]
COMPANIES = ["northwind.example", "contoso.example", "fabrikam.example", "tailspin.example", "wingtip.example",
             "adatum.example", "litware.example", "proseware.example"]
SENDERS = ["alex", "blair", "casey", "devon", "emery", "finley", "gray", "harper", "indy", "jules", "kai", "lane"]


def seed(workspace, now):
    rng = random.Random(7)
    relay = provider_services.create_connection(
        workspace=workspace, kind="smtp", name="Acme relay",
        settings={"host": "smtp.relay.example", "port": 587, "security": "starttls"},
        credentials={"username": "relay", "password": "not-shown"})
    ramp = WarmupProfile.objects.create(workspace=workspace, name="Gentle ramp", start=5, step=3, max=40)
    domains = [SendingDomain.objects.create(workspace=workspace, name=name, status=status, checked_at=now,
                                            checks=checks)
               for name, status, checks in [
                   ("mail.acme.com", "pass", {"spf": {"status": "pass"}, "dkim": {"status": "pass"},
                                              "dmarc": {"status": "pass"}}),
                   ("go.acme.com", "pass", {"spf": {"status": "pass"}, "dkim": {"status": "pass"},
                                            "dmarc": {"status": "pass"}}),
                   ("try-acme.com", "warn", {"spf": {"status": "pass"}, "dkim": {"status": "pass"},
                                             "dmarc": {"status": "warn", "message": "p=none"}}),
               ]]
    everyday = {"send_window_days": [1, 2, 3, 4, 5, 6, 7], "send_window_start": dt.time(0, 0),
                "send_window_end": dt.time.max, "send_window_timezone": "Europe/Paris", "min_interval_seconds": 0}
    mailboxes = []
    for index, name in enumerate(SENDERS):
        domain = domains[index % 3]
        warm = index % 4 == 3
        mailboxes.append(Mailbox.objects.create(
            workspace=workspace, domain=domain, provider=relay, address=f"{name}@{domain.name}",
            display_name=f"{name.title()} at Acme", daily_cap=12 if index < 3 else 30, weekly_cap=150,
            warmup_profile=ramp if warm else None,
            warmup_started_on=(now - dt.timedelta(days=4 + index)).date() if warm else None, **everyday))
    pool = Pool.objects.create(workspace=workspace, name="Outbound", strategy="round_robin", workloads=["cold"])
    pool.mailboxes.set(mailboxes)

    queued_later = []
    made = []
    for days_ago in range(9, -1, -1):
        today_senders = [mailboxes[0]] * 12 + [mailboxes[1]] * 10 + [mailboxes[2]] * 6
        for n in range(len(today_senders) if days_ago == 0 else rng.randint(18, 24)):
            if days_ago == 0:  # within the workspace's local today, whatever the hour the script runs
                at = now - dt.timedelta(minutes=rng.randint(1, 40))
            else:
                at = now - dt.timedelta(days=days_ago, hours=rng.randint(1, 8), minutes=rng.randint(0, 59))
            sender = today_senders[n] if days_ago == 0 else mailboxes[rng.randrange(len(mailboxes))]
            to = f"{rng.choice(PEOPLE)}{rng.randint(1, 99)}@{rng.choice(COMPANIES)}"
            status, body = intake.submit(
                workspace=workspace, now=at, serialize=lambda m: {"id": m.id}, enqueue_later=queued_later,
                data={"to": to, "from": sender.address, "subject": rng.choice(
                    ["Quick question about your Q3 pipeline", "Idea for your onboarding emails",
                     "Following up", "Worth a 15-minute call?"]), "text": "Hello there,\n\nA short note."})
            if status == 202:
                # intake stamps its own records with the wall clock: move them to the simulated time.
                Message.objects.filter(pk=body["id"]).update(created_at=at)
                Event.objects.filter(message_id=body["id"], type__in=("message.accepted", "message.scheduled")
                                     ).update(occurred_at=at)
                made.append((Message.objects.get(pk=body["id"]), at, days_ago))
    for message, at, days_ago in made:
        roll = rng.random()
        if days_ago == 0 and roll < 0.25:
            continue  # still waiting
        sent_at = max(at, message.scheduled_at or at) + dt.timedelta(minutes=rng.randint(1, 20))
        if sent_at > now:
            continue
        provider_id = new_id("smtp")[-10:].upper()
        reply = f"250 2.0.0 Ok: queued as {provider_id}"
        Message.objects.filter(pk=message.pk).update(
            status="sent", sent_at=sent_at, attempts=1, provider_message_id=provider_id, provider_response=reply,
            message_id_header=f"<{message.id}@{message.mailbox.domain.name}>")
        message.refresh_from_db()
        events.emit(workspace=workspace, type="message.sent", message=message, occurred_at=sent_at,
                    data={"mailbox": message.mailbox_id, "provider": "smtp", "provider_message_id": provider_id,
                          "response": reply})
        later = sent_at + dt.timedelta(minutes=rng.randint(1, 90))
        if roll < 0.025:
            events.emit(workspace=workspace, type="message.bounced", message=message, occurred_at=later,
                        data={"bounce_type": "hard", "reply": "550 5.1.1 <%s>: user unknown" % message.to_address})
        elif roll < 0.05:
            events.emit(workspace=workspace, type="message.bounced", message=message, occurred_at=later,
                        data={"bounce_type": "soft", "reply": "452 4.2.2 mailbox full"})
        elif roll < 0.055:
            events.emit(workspace=workspace, type="message.complained", message=message, occurred_at=later,
                        data={"feedback_type": "abuse"})
        elif roll < 0.10:
            Message.objects.filter(pk=message.pk).update(status="deferred", provider_response="421 4.7.0 try again later")
        elif roll < 0.88:
            events.emit(workspace=workspace, type="message.delivered", message=message, occurred_at=later,
                        data={"reply": "250 2.0.0 delivered"})

    blocked = mailboxes[7]
    identities.pause_mailbox(mailbox=blocked, reason="Client asked to pause the fintech campaign")
    Mailbox.objects.filter(pk=mailboxes[10].pk).update(status="error", last_error="535 5.7.8 authentication failed")
    suppression_services.suppress(workspace=workspace, value="@competitor.example", reason="dnc",
                                  source="client do-not-contact list")
    endpoint = WebhookEndpoint.objects.create(workspace=workspace, url="https://crm.acme.example/hooks/mail",
                                              secret={"key": "whsec_x"})
    event = Event.objects.filter(workspace=workspace, type="message.bounced").first()
    for attempt in range(3):
        WebhookDelivery.objects.create(endpoint=endpoint, event=event, status="dead", attempts=8,
                                       response_status=502, error="HTTP 502 Bad Gateway",
                                       last_attempt_at=now - dt.timedelta(hours=attempt))
    return {"mailboxes": mailboxes, "messages": [m for m, _, _ in made]}


def shoot(page, path, name, down_to=None, max_height=None):
    """The page at 1400 px wide, whole or down to the bottom of the element `down_to`, at most `max_height` high."""
    page.open(path)
    # A window as tall as the page, so that the theme's sticky bars sit where they end, not mid-picture.
    height = page.tab.evaluate("document.documentElement.scrollHeight")
    page.tab.set_viewport_size({"width": 1400, "height": min(height, 6000)})
    page.tab.wait_for_load_state("networkidle")
    target = OUT / f"{name}.png"
    if down_to or max_height:
        bottom = height
        if down_to:
            box = page.tab.locator(down_to).bounding_box()
            bottom = box["y"] + box["height"] + 16
        clip = {"x": 0, "y": 0, "width": 1400, "height": min(bottom, max_height or bottom)}
        page.tab.screenshot(path=str(target), full_page=True, clip=clip)
    else:
        page.tab.screenshot(path=str(target), full_page=True)
    return target


def test_screenshots_of_the_key_pages(page, workspace, make_user):
    OUT.mkdir(parents=True, exist_ok=True)
    data = seed(workspace, timezone.now())
    make_user("morgan", workspace=workspace, role="owner")
    bounced = (Message.objects.filter(workspace=workspace, status="bounced", events__type="message.bounced",
                                      events__data__bounce_type="hard").first())
    mailbox = data["mailboxes"][0]

    page.log_in("morgan")
    shots = [
        shoot(page, "/", "dashboard", down_to="#dash-paused"),
        shoot(page, f"/mailboxes/mailbox/{mailbox.pk}/change/", "mailbox", max_height=1900),
        shoot(page, f"/controlplane/message/{bounced.pk}/change/", "message-evidence"),
        shoot(page, "/compliance/", "compliance", max_height=1200),
    ]

    for shot in shots:
        assert shot.stat().st_size < 300_000, shot
    assert not page.problems(), page.problems()
