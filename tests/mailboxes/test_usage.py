"""Usage against caps: local day and ISO week in the mailbox's time zone, warm-up ramps included."""

import datetime as dt

import pytest

from mailboxes.models import Mailbox, MailboxDailyUsage, SendingDomain, WarmupProfile
from mailboxes.services import caps
from providers.models import ProviderConnection

pytestmark = pytest.mark.django_db
UTC = dt.timezone.utc


@pytest.fixture
def mailbox(workspace):
    domain = SendingDomain.objects.create(workspace=workspace, name="acme.com")
    provider = ProviderConnection.objects.create(workspace=workspace, kind="smtp", name="r",
                                                 settings={"host": "h", "port": 25, "security": "none"})
    return Mailbox.objects.create(workspace=workspace, domain=domain, provider=provider, address="jane@acme.com",
                                  daily_cap=40, weekly_cap=100, send_window_timezone="America/Los_Angeles")


def _use(mailbox, day, count):
    MailboxDailyUsage.objects.update_or_create(mailbox=mailbox, day=day, defaults={"count": count})


def test_day_and_week_are_local_to_the_mailbox(mailbox):
    # Wednesday 2026-11-25 03:00 UTC is still Tuesday 24th 19:00 in Los Angeles.
    now = dt.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    _use(mailbox, dt.date(2026, 11, 23), 30)  # Monday
    _use(mailbox, dt.date(2026, 11, 24), 25)  # Tuesday (local today)
    _use(mailbox, dt.date(2026, 11, 25), 7)   # Wednesday: tomorrow, locally
    _use(mailbox, dt.date(2026, 11, 22), 50)  # Sunday: last ISO week
    usage = caps.usage(mailbox, now)
    assert usage["today"] == 25
    assert usage["this_week"] == 55
    assert usage["effective_cap_today"] == 40
    assert usage["remaining_today"] == 15
    assert usage["remaining_this_week"] == 45


def test_weekly_cap_limits_what_is_left_today(mailbox):
    now = dt.datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # Friday in LA
    _use(mailbox, dt.date(2026, 11, 23), 40)
    _use(mailbox, dt.date(2026, 11, 24), 40)
    _use(mailbox, dt.date(2026, 11, 27), 15)
    usage = caps.usage(mailbox, now)
    assert usage["this_week"] == 95 and usage["remaining_this_week"] == 5
    assert usage["remaining_today"] == 5


def test_warmup_ramp_bounds_the_daily_cap(mailbox, workspace):
    ramp = WarmupProfile.objects.create(workspace=workspace, name="ramp", start=5, step=5, max=30)
    mailbox.warmup_profile = ramp
    mailbox.warmup_started_on = dt.date(2026, 11, 20)
    mailbox.save()
    mailbox = Mailbox.objects.select_related("warmup_profile").get(pk=mailbox.pk)
    at = lambda day: dt.datetime(2026, 11, day, 20, 0, tzinfo=UTC)  # noqa: E731
    assert caps.usage(mailbox, at(20))["effective_cap_today"] == 5   # day 1
    assert caps.usage(mailbox, at(23))["effective_cap_today"] == 20  # day 4
    assert caps.usage(mailbox, at(30))["effective_cap_today"] == 30  # ramp max
    mailbox.daily_cap = 12
    assert caps.usage(mailbox, at(30))["effective_cap_today"] == 12  # never above the mailbox cap


def test_explicit_schedule_holds_its_last_value(workspace):
    profile = WarmupProfile(workspace=workspace, name="s", schedule=[3, 6, 9])
    assert [profile.allowance(n) for n in (1, 2, 3, 4, 10)] == [3, 6, 9, 9, 9]


def test_api_shows_usage_per_mailbox_in_one_query(api, workspace, django_assert_max_num_queries):
    from tests.api.helpers import create_identities

    ids = create_identities(api)
    mailbox = Mailbox.objects.get(pk=ids["mailbox"])
    _use(mailbox, caps.local_day(mailbox), 4)
    for n in range(5):
        api.post("/api/v1/mailboxes", {"address": f"m{n}@mail.acme.com", "provider": ids["provider"]}, format="json")
    row = next(m for m in api.get("/api/v1/mailboxes").json()["results"] if m["id"] == ids["mailbox"])
    assert row["usage"]["today"] == 4 and row["usage"]["remaining_today"] == 26
    with django_assert_max_num_queries(8):
        api.get("/api/v1/mailboxes")
