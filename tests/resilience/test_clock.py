"""Caps follow the mailbox's own calendar: a day ends at local midnight, also on the 23- and 25-hour
days of a DST change, and the count resets there exactly once (never at the repeated or skipped hour)."""

import datetime as dt
import zoneinfo

import pytest
from django.db import transaction

from mailboxes.models import Mailbox, MailboxDailyUsage, SendingDomain
from mailboxes.services import caps

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc
SECOND = dt.timedelta(seconds=1)


def at(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def make_mailbox(workspace):
    from providers.services import create_connection

    domain = SendingDomain.objects.create(workspace=workspace, name="mail.acme.com")
    provider = create_connection(workspace=workspace, kind="smtp", name="relay",
                                 settings={"host": "127.0.0.1", "port": 2525, "security": "none"})

    def make(timezone, *, daily_cap=1, weekly_cap=100, start=dt.time(0, 0), end=dt.time.max, interval=0,
             local="ann"):
        return Mailbox.objects.create(
            workspace=workspace, domain=domain, provider=provider, address=f"{local}@mail.acme.com",
            daily_cap=daily_cap, weekly_cap=weekly_cap, min_interval_seconds=interval,
            send_window_days=[1, 2, 3, 4, 5, 6, 7], send_window_start=start, send_window_end=end,
            send_window_timezone=timezone)

    return make


def reserve(mailbox, when):
    """One send reserved at `when` (both the earliest moment and the clock), as intake does it."""
    with transaction.atomic():
        locked = Mailbox.objects.select_for_update(of=("self",)).select_related("warmup_profile").get(pk=mailbox.pk)
        return caps.reserve_capacity(mailbox=locked, earliest=when, now=when)


def refused(mailbox, when):
    with pytest.raises(caps.NoCapacity) as caught:
        reserve(mailbox, when)
    return caught.value


# (time zone, local date, its midnight in UTC, the next midnight in UTC, hours in that day)
DAYS = [
    pytest.param("Europe/Paris", "2026-03-29", "2026-03-28T23:00:00", "2026-03-29T22:00:00", 23, id="paris-spring"),
    pytest.param("Europe/Paris", "2026-10-25", "2026-10-24T22:00:00", "2026-10-25T23:00:00", 25, id="paris-autumn"),
    pytest.param("America/New_York", "2026-03-08", "2026-03-08T05:00:00", "2026-03-09T04:00:00", 23, id="ny-spring"),
    pytest.param("America/New_York", "2026-11-01", "2026-11-01T04:00:00", "2026-11-02T05:00:00", 25, id="ny-autumn"),
    pytest.param("Europe/Paris", "2026-06-15", "2026-06-14T22:00:00", "2026-06-15T22:00:00", 24, id="paris-summer"),
]


@pytest.mark.parametrize("timezone, day, midnight, next_midnight, hours", DAYS)
def test_the_daily_cap_resets_at_local_midnight_and_only_there(make_mailbox, timezone, day, midnight,
                                                               next_midnight, hours):
    mailbox = make_mailbox(timezone, daily_cap=1)
    start, end = at(midnight), at(next_midnight)
    assert end - start == dt.timedelta(hours=hours)
    local = dt.date.fromisoformat(day)

    assert reserve(mailbox, start - SECOND)[0] == local - dt.timedelta(days=1)  # 23:59:59 counts on the eve
    assert reserve(mailbox, start)[0] == local  # 00:00:00 is the new day: room again
    # Every hour of the day, through the skipped or repeated hour, the one send of the day is used up.
    for hour in range(1, hours):
        exc = refused(mailbox, start + dt.timedelta(hours=hour))
        assert exc.reason == "daily_cap"
        assert exc.next_available_at == end  # the next local midnight, to the second
    refused(mailbox, end - SECOND)
    assert caps.usage(mailbox, now=end - SECOND)["today"] == 1
    assert caps.usage(mailbox, now=end)["today"] == 0
    assert reserve(mailbox, end)[0] == local + dt.timedelta(days=1)
    counts = dict(MailboxDailyUsage.objects.filter(mailbox=mailbox).values_list("day", "count"))
    assert counts == {local - dt.timedelta(days=1): 1, local: 1, local + dt.timedelta(days=1): 1}


def test_the_repeated_hour_of_an_autumn_night_does_not_reset_the_day(make_mailbox):
    mailbox = make_mailbox("Europe/Paris", daily_cap=2)
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    first = dt.datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=0)  # 02:30 summer time
    second = dt.datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=1)  # 02:30 again, winter time
    assert second - first == dt.timedelta(0)  # same wall clock: only the UTC instant tells them apart
    assert second.astimezone(UTC) - first.astimezone(UTC) == dt.timedelta(hours=1)
    assert reserve(mailbox, first.astimezone(UTC))[0] == dt.date(2026, 10, 25)
    assert reserve(mailbox, second.astimezone(UTC))[0] == dt.date(2026, 10, 25)
    assert refused(mailbox, at("2026-10-25T22:59:59")).reason == "daily_cap"


def test_the_weekly_cap_resets_at_local_monday_midnight(make_mailbox):
    mailbox = make_mailbox("Europe/Paris", daily_cap=5, weekly_cap=3)
    # Sunday 29 March 2026 is both the last day of ISO week 13 and the day clocks go forward.
    for when in ("2026-03-28T10:00:00", "2026-03-29T08:00:00", "2026-03-29T21:00:00"):
        reserve(mailbox, at(when))
    exc = refused(mailbox, at("2026-03-29T21:59:59"))  # 23:59:59 CEST, Sunday
    assert exc.reason == "weekly_cap"
    assert exc.next_available_at == at("2026-03-29T22:00:00")  # Monday 00:00 CEST
    assert reserve(mailbox, at("2026-03-29T22:00:00"))[0] == dt.date(2026, 3, 30)
    usage = caps.usage(mailbox, now=at("2026-03-29T22:00:00"))
    assert (usage["today"], usage["this_week"], usage["remaining_this_week"]) == (1, 1, 2)


def test_pacing_keeps_its_interval_across_the_autumn_change(make_mailbox):
    # The window opens at 02:59 summer time, a minute before the clocks go back to 02:00.
    mailbox = make_mailbox("Europe/Paris", daily_cap=10, start=dt.time(2, 59), interval=120)
    early = at("2026-10-25T00:00:00")  # 02:00 summer time: before the window opens
    _, first, _ = reserve(mailbox, early)
    assert first == at("2026-10-25T00:59:00")
    _, second, _ = reserve(mailbox, at("2026-10-25T00:59:30"))
    assert second - first == dt.timedelta(seconds=120)
    assert second == at("2026-10-25T01:01:00")


def test_a_window_that_ends_at_local_midnight_has_its_last_second_on_that_day(make_mailbox):
    mailbox = make_mailbox("America/New_York", daily_cap=3, start=dt.time(9, 0), end=dt.time.max)
    # 23:59:59 EST on Sunday 1 November, the 25-hour day.
    last = at("2026-11-02T04:59:59")
    day, moment, _ = reserve(mailbox, last)
    assert (day, moment) == (dt.date(2026, 11, 1), last)
    # One second later it is Monday, before the window opens: the send waits for 09:00 local.
    day, moment, _ = reserve(mailbox, last + SECOND)
    assert (day, moment) == (dt.date(2026, 11, 2), at("2026-11-02T14:00:00"))
