"""The workspace dashboard on the admin index: what each user sees, for which workspace, at a fixed cost."""

import datetime as dt
import json
import re
from decimal import Decimal
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit import services as audit
from controlplane.ids import new_id
from controlplane.models import Event, Message, WebhookDelivery, WebhookEndpoint
from mailboxes.models import Mailbox, MailboxDailyUsage, SendingDomain, WarmupProfile
from workspaces import roles

pytestmark = pytest.mark.django_db


def index(client, **params):
    response = client.get(reverse("admin:index"), params)
    assert response.status_code == 200
    return response.content.decode()


def section(page, name):
    """The HTML of one dashboard section."""
    start = page.index(f'id="{name}"')
    end = page.find("</section>", start)
    return page[start:end]


def charts(html):
    """The Chart.js data of every chart in `html` (each canvas's data-chart attribute)."""
    return [json.loads(unescape(value)) for value in re.findall(r'data-chart="([^"]*)"', html)]


def message(workspace, status, *, days_ago=0, mailbox=None, to="lead@prospect.com"):
    return Message.objects.create(workspace=workspace, mailbox=mailbox, to_address=to, subject="Hi", text="Hello",
                                  status=status, scheduled_at=timezone.now() - dt.timedelta(days=days_ago, minutes=1))


def outcome(msg, event_type, **data):
    return Event.objects.create(id=new_id("evt"), workspace=msg.workspace, message=msg, type=event_type,
                                occurred_at=timezone.now(), data=data)


def failing_delivery(workspace, url="https://hooks.acme.example/events"):
    endpoint = WebhookEndpoint.objects.create(workspace=workspace, url=url, secret={"key": "whsec_x"})
    event = Event.objects.create(id=new_id("evt"), workspace=workspace, type="mailbox.paused",
                                 occurred_at=timezone.now())
    return WebhookDelivery.objects.create(endpoint=endpoint, event=event, status="dead", attempts=8,
                                          response_status=500, error="HTTP 500", last_attempt_at=timezone.now())


@pytest.fixture
def busy_acme(acme):
    """Acme today: 3 sent and 1 hard bounce; five days ago 2 delivered; plus a mailbox at its cap, a paused
    mailbox, a paused domain, a failing domain and a failing webhook."""
    for _ in range(3):
        message(acme.workspace, "sent", mailbox=acme.mailbox)
    bounced = message(acme.workspace, "bounced", mailbox=acme.mailbox)
    outcome(bounced, "message.bounced", bounce_type="hard")
    for _ in range(2):
        message(acme.workspace, "delivered", days_ago=5, mailbox=acme.mailbox)
    Mailbox.objects.filter(pk=acme.mailbox.pk).update(send_window_timezone="Europe/Paris")
    today = timezone.now().astimezone(acme.workspace.tz).date()
    MailboxDailyUsage.objects.create(mailbox=acme.mailbox, day=today, count=20)
    Mailbox.objects.create(workspace=acme.workspace, domain=acme.domain, provider=acme.provider,
                           address="tired@mail.acme.com", status="paused", paused_reason="Too many complaints lately")
    SendingDomain.objects.create(workspace=acme.workspace, name="old.acme.com", paused=True,
                                 paused_reason="Retiring this brand")
    SendingDomain.objects.create(workspace=acme.workspace, name="broken.acme.com", status="fail",
                                 checks={"dkim": {"status": "fail", "message": "No DKIM record"},
                                         "spf": {"status": "pass", "message": "ok"}})
    failing_delivery(acme.workspace)
    audit.record(workspace=acme.workspace, action="mailbox.paused", object_type="mailbox", object_id="x",
                 object_repr="tired@mail.acme.com")
    return acme


def test_the_dashboard_shows_sends_rates_caps_pauses_failures_and_audit(login, busy_acme):
    page = index(login("operator"))

    assert '<h2 id="dashboard-workspace">Acme</h2>' in page
    sends = section(page, "dash-sends")
    assert "6 messages scheduled in the last 30 days" in sends
    [bars] = charts(sends)
    segments = [(ds["label"], day) for ds in bars["datasets"] for day, n in zip(bars["labels"], ds["data"]) if n]
    assert len(segments) == 3  # today: sent + bounced, five days ago: delivered
    today = timezone.now().astimezone(busy_acme.workspace.tz).date()
    assert re.search(rf"<td>{today:%Y-%m-%d}</td><td>4</td>", sends)

    health = section(page, "dash-health")
    assert "pause threshold 5.0%" in health and "pause threshold 0.30%" in health
    assert 'class="dash-threshold"' in health
    assert "25.00% (1 of 4)" in health  # today's hard-bounce rate, above the 5 % threshold
    assert "1 day above it" in health

    caps = section(page, "dash-caps")
    assert "sales@mail.acme.com" in caps and "20 / 20 (at cap)" in caps
    assert "<strong>1</strong> at cap" in caps

    paused = section(page, "dash-paused")
    assert "tired@mail.acme.com" in paused and "Too many complaints lately" in paused
    assert "old.acme.com" in paused and "Retiring this brand" in paused

    domains = section(page, "dash-domains")
    assert "broken.acme.com" in domains and "dkim" in domains and "spf" not in domains

    assert "https://hooks.acme.example/events" in section(page, "dash-webhooks")
    assert "mailbox.paused" in section(page, "dash-audit")
    assert 'id="compliance-module"' in page


def test_a_quiet_workspace_says_nothing_is_wrong(login, acme):
    page = index(login("admin"))

    assert "0 messages scheduled" in page
    assert "Nothing is paused." in page
    assert "Every checked domain passes." in page
    assert "No webhook delivery is failing." in page


def test_a_viewer_sees_the_dashboard_but_not_the_audit_events(login, busy_acme):
    page = index(login("viewer"))

    assert 'id="dash-sends"' in page and "Too many complaints lately" in page
    assert 'id="dash-audit"' not in page


def test_another_workspaces_numbers_never_show(login, busy_acme, globex):
    for _ in range(7):
        message(globex.workspace, "complained", mailbox=globex.mailbox)
    Mailbox.objects.filter(pk=globex.mailbox.pk).update(status="paused", paused_reason="Globex secret reason")
    failing_delivery(globex.workspace, url="https://hooks.globex.example/in")
    client = login("operator")

    page = index(client)

    assert "Globex" not in page and "globex" not in page
    assert "Globex secret reason" not in page and "hooks.globex.example" not in page
    assert "6 messages scheduled" in page
    assert 'id="workspace-switcher"' not in page
    assert client.get(reverse("admin:index"), {"workspace": globex.workspace.pk}).status_code == 404
    assert client.get(reverse("admin:index"), {"workspace": "globex"}).status_code == 404


def test_globex_owner_sees_only_globex(login, busy_acme, globex):
    message(globex.workspace, "complained", mailbox=globex.mailbox)

    page = index(login("globex_owner"))

    assert '<h2 id="dashboard-workspace">Globex</h2>' in page
    assert "1 message scheduled" in page
    assert "tired@mail.acme.com" not in page and "broken.acme.com" not in page


def test_a_user_of_two_workspaces_switches_between_them(login, users, busy_acme, globex):
    operator = users["operator"]
    roles.grant_role(user=operator, workspace=globex.workspace, role="viewer")
    message(globex.workspace, "sent", mailbox=globex.mailbox)
    client = login(operator)

    first = index(client)
    switched = index(client, workspace=globex.workspace.pk)

    switcher = first[first.index('id="workspace-switcher"'):first.index("</form>", first.index('id="workspace-switcher"'))]
    assert "Acme (acme)" in switcher and "Globex (globex)" in switcher
    assert '<h2 id="dashboard-workspace">Acme</h2>' in first and "6 messages scheduled" in first
    assert '<h2 id="dashboard-workspace">Globex</h2>' in switched and "1 message scheduled" in switched
    assert "Too many complaints lately" not in switched


def test_a_reviewer_still_lands_on_the_compliance_page(login, busy_acme):
    response = login("reviewer").get(reverse("admin:index"))

    assert response.status_code == 302 and response["Location"] == reverse("compliance:index")


def test_messages_older_than_thirty_days_are_left_out(login, acme):
    message(acme.workspace, "sent", days_ago=45, mailbox=acme.mailbox)
    message(acme.workspace, "sent", days_ago=2, mailbox=acme.mailbox)

    assert "1 message scheduled in the last 30 days" in index(login("operator"))


def _fill(ids, count, start):
    today = timezone.now().astimezone(ids.workspace.tz).date()
    for n in range(start, start + count):
        mailbox = Mailbox.objects.create(workspace=ids.workspace, domain=ids.domain, provider=ids.provider,
                                         address=f"rep{n}@mail.acme.com", daily_cap=10,
                                         warmup_profile=ids.warmup if n % 2 else None,
                                         warmup_started_on=today - dt.timedelta(days=n),
                                         status="paused" if n % 5 == 0 else "active", paused_reason="tired")
        MailboxDailyUsage.objects.create(mailbox=mailbox, day=today, count=n % 11)
        sent = message(ids.workspace, ["sent", "delivered", "bounced", "complained"][n % 4], days_ago=n % 30,
                       mailbox=mailbox)
        if n % 4 == 2:
            outcome(sent, "message.bounced", bounce_type="hard")
        if n % 4 == 3:
            outcome(sent, "message.complained")
        SendingDomain.objects.create(workspace=ids.workspace, name=f"d{n}.acme.com", status="fail",
                                     paused=n % 2 == 0)
        failing_delivery(ids.workspace, url=f"https://hooks{n}.acme.example/")
        audit.record(workspace=ids.workspace, action="note.added", object_type="note", object_id=str(n))


def test_the_dashboard_costs_the_same_number_of_queries_with_2_or_50_of_everything(login, acme):
    client = login("operator")
    _fill(acme, 2, 0)
    client.get(reverse("admin:index"))
    with CaptureQueriesContext(connection) as few:
        small = index(client)
    _fill(acme, 48, 2)
    with CaptureQueriesContext(connection) as many:
        large = index(client)

    assert "2 messages scheduled in the last 30 days" in small
    assert "50 messages scheduled in the last 30 days" in large
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def _mailbox(ids, local, **fields):
    return Mailbox.objects.create(workspace=ids.workspace, domain=ids.domain, provider=ids.provider,
                                  address=f"{local}@mail.acme.com", **fields)


def test_cap_utilisation_follows_each_mailboxs_warm_up_weekly_cap_and_re_ramp(login, acme):
    now = timezone.now()
    today = now.date()
    schedule = WarmupProfile.objects.create(workspace=acme.workspace, name="steps", schedule=[3, 6, 9])
    rows = {
        "ramp": (_mailbox(acme, "ramp", daily_cap=20, warmup_profile=acme.warmup,
                          warmup_started_on=today - dt.timedelta(days=1)), 9),  # day 2 allows 10
        "steps": (_mailbox(acme, "steps", daily_cap=20, warmup_profile=schedule, warmup_started_on=today), 3),
        "week": (_mailbox(acme, "week", daily_cap=20, weekly_cap=5), 5),
        "reramp": (_mailbox(acme, "reramp", daily_cap=20, reramp_started_at=now, reramp_fraction=Decimal("0.5"),
                            reramp_days=7), 10),  # the re-ramp's day 1 allows half the cap
        "calm": (_mailbox(acme, "calm", daily_cap=20), 4),
        "retired": (_mailbox(acme, "retired", daily_cap=20, status="retired"), 20),
        "paused": (_mailbox(acme, "paused", daily_cap=20, status="paused", paused_reason="Held"), 20),
    }
    for mailbox, count in rows.values():
        MailboxDailyUsage.objects.create(mailbox=mailbox, day=today, count=count)

    caps_section = section(index(login("operator")), "dash-caps")

    assert "ramp@mail.acme.com</a></td><td>9 / 10</td>" in caps_section and "warm-up day 2" in caps_section
    assert "steps@mail.acme.com</a></td><td>3 / 3 (at cap)</td>" in caps_section
    assert "week@mail.acme.com</a></td><td>5 / 20 (at cap)</td>" in caps_section
    assert "weekly cap reached" in caps_section
    assert "reramp@mail.acme.com</a></td><td>10 / 10 (at cap)</td>" in caps_section
    assert "calm@" not in caps_section and "retired@" not in caps_section and "paused@" not in caps_section
    # sales@ (cap 20, nothing sent) and the five active mailboxes above; retired and paused ones left out
    assert "31 sent of 83 allowed today across 6 active mailboxes" in caps_section
    assert "<strong>3</strong> at cap, <strong>1</strong> near it" in caps_section


def test_the_dashboards_usage_is_the_one_caps_gives_each_mailbox_in_its_own_time_zone_and_week(acme):
    from controlplane.admin_dashboard import CAP_FIELDS, LISTED_FIELDS, usage_today
    from mailboxes.services import caps

    now = dt.datetime(2026, 11, 22, 15, 0, tzinfo=dt.timezone.utc)  # Sunday; already Monday in Kiritimati
    schedule = WarmupProfile.objects.create(workspace=acme.workspace, name="steps", schedule=[3, 6, 9])
    made = [
        _mailbox(acme, "plain", daily_cap=20, weekly_cap=60),
        _mailbox(acme, "twin", daily_cap=20, weekly_cap=60),
        _mailbox(acme, "ramp", daily_cap=40, warmup_profile=acme.warmup, warmup_started_on=now.date()),
        _mailbox(acme, "steps", daily_cap=40, warmup_profile=schedule, warmup_started_on=now.date()),
        _mailbox(acme, "kiritimati", daily_cap=20, weekly_cap=60, send_window_timezone="Pacific/Kiritimati"),
        _mailbox(acme, "angeles", daily_cap=20, weekly_cap=30, send_window_timezone="America/Los_Angeles"),
        _mailbox(acme, "reramp", daily_cap=30, reramp_started_at=now - dt.timedelta(days=2),
                 reramp_fraction=Decimal("0.25"), reramp_days=5),
    ]
    for n, mailbox in enumerate(made):
        for back in range(9):  # from the Saturday of the week before to the local Monday after
            MailboxDailyUsage.objects.create(mailbox=mailbox, day=now.date() + dt.timedelta(days=1 - back),
                                             count=(n + back) % 7)
    mailboxes = list(Mailbox.objects.filter(pk__in=[m.pk for m in made]).values(*LISTED_FIELDS, *CAP_FIELDS))

    figures = usage_today(acme.workspace, mailboxes, now)

    expected = caps.usage_for(Mailbox.objects.filter(pk__in=[m.pk for m in made]).select_related("warmup_profile"),
                              now)
    assert figures == {pk: {name: usage[name] for name in figures[pk]} for pk, usage in expected.items()}
    assert len({u["effective_cap_today"] for u in figures.values()}) > 3
    assert figures[made[4].pk]["this_week"] == figures[made[4].pk]["today"]  # a new ISO week there
