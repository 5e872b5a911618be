"""Caps: the usage ledger's readers (and, with dispatch, its only writers).

A mailbox's day and ISO week are local to its time zone (`local_day`).
"""

import datetime as dt
from collections import defaultdict

from django.utils import timezone

from mailboxes.models import Mailbox, MailboxDailyUsage


def local_day(mailbox: Mailbox, now: dt.datetime | None = None) -> dt.date:
    now = now or timezone.now()
    return now.astimezone(mailbox.tz).date()


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.isoweekday() - 1)


def warmup_day(mailbox: Mailbox, today: dt.date) -> int | None:
    if mailbox.warmup_profile_id is None or mailbox.warmup_started_on is None:
        return None
    return max((today - mailbox.warmup_started_on).days + 1, 1)


def effective_cap_today(mailbox: Mailbox, today: dt.date) -> int:
    day_number = warmup_day(mailbox, today)
    if day_number is None:
        return mailbox.daily_cap
    return min(mailbox.daily_cap, mailbox.warmup_profile.allowance(day_number))


def usage_for(mailboxes, now: dt.datetime | None = None) -> dict:
    """{mailbox.pk: usage dict} for many mailboxes in one query (warm-up profiles must be selected)."""
    now = now or timezone.now()
    mailboxes = list(mailboxes)
    if not mailboxes:
        return {}
    todays = {m.pk: local_day(m, now) for m in mailboxes}
    first = min(week_start(d) for d in todays.values())
    last = max(todays.values())
    counts = defaultdict(dict)
    rows = MailboxDailyUsage.objects.filter(
        mailbox_id__in=list(todays), day__gte=first, day__lte=last
    ).values_list("mailbox_id", "day", "count")
    for mailbox_id, day, count in rows:
        counts[mailbox_id][day] = count
    result = {}
    for mailbox in mailboxes:
        today = todays[mailbox.pk]
        monday = week_start(today)
        used_today = counts[mailbox.pk].get(today, 0)
        used_week = sum(c for d, c in counts[mailbox.pk].items() if monday <= d <= today)
        cap_today = effective_cap_today(mailbox, today)
        remaining_week = max(0, mailbox.weekly_cap - used_week)
        result[mailbox.pk] = {
            "today": used_today,
            "this_week": used_week,
            "effective_cap_today": cap_today,
            "remaining_today": max(0, min(cap_today - used_today, remaining_week)),
            "remaining_this_week": remaining_week,
            "warmup_day": warmup_day(mailbox, today),
            "local_day": today.isoformat(),
        }
    return result


def usage(mailbox: Mailbox, now: dt.datetime | None = None) -> dict:
    return usage_for([mailbox], now)[mailbox.pk]


# --- Pacing and send windows -------------------------------------------------------------

def window_bounds(mailbox: Mailbox, day: dt.date):
    """(start, end) of the mailbox's send window on local `day`, in UTC, or None if it doesn't send then.

    In UTC because arithmetic and equality on datetimes that share a zone follow the wall clock:
    across a DST change, adding a pacing interval to a local time would be off by the change."""
    if day.isoweekday() not in (mailbox.send_window_days or []):
        return None
    tz = mailbox.tz
    start = dt.datetime.combine(day, mailbox.send_window_start, tzinfo=tz)
    end = dt.datetime.combine(day, mailbox.send_window_end, tzinfo=tz)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def slot_on_day(mailbox: Mailbox, earliest: dt.datetime):
    """The first paced moment ≥ `earliest` inside the window of `earliest`'s local day, or None."""
    day = local_day(mailbox, earliest)
    bounds = window_bounds(mailbox, day)
    if bounds is None:
        return None
    start, end = bounds
    moment = max(earliest, start)
    if mailbox.next_slot_at and mailbox.next_slot_at > moment:
        moment = mailbox.next_slot_at
    if moment >= end or local_day(mailbox, moment) != day:
        return None
    return moment


def next_available_at(mailbox: Mailbox, after: dt.datetime, *, horizon_days: int = 14):
    """The next window start after today's local day with daily and weekly room, or None within the horizon."""
    today = local_day(mailbox, after)
    usage_rows = dict(
        MailboxDailyUsage.objects.filter(mailbox=mailbox, day__gte=week_start(today),
                                         day__lte=today + dt.timedelta(days=horizon_days))
        .values_list("day", "count")
    )
    for offset in range(1, horizon_days + 1):
        day = today + dt.timedelta(days=offset)
        bounds = window_bounds(mailbox, day)
        if bounds is None:
            continue
        monday = week_start(day)
        sunday = monday + dt.timedelta(days=6)
        week_used = sum(c for d, c in usage_rows.items() if monday <= d <= sunday)
        if week_used >= mailbox.weekly_cap:
            continue
        if usage_rows.get(day, 0) >= effective_cap_today(mailbox, day):
            continue
        return bounds[0]
    return None


# --- The ledger's writers ----------------------------------------------------------------

class NoCapacity(Exception):
    """The mailbox cannot take this send on the requested day; `reason` says which limit."""

    def __init__(self, reason: str, next_available_at=None, usage=None):
        super().__init__(reason)
        self.reason = reason
        self.next_available_at = next_available_at
        self.usage = usage or {}


def reserve_capacity(*, mailbox: Mailbox, earliest: dt.datetime, now: dt.datetime | None = None):
    """Reserves one send on the mailbox-local day of `earliest`, paced and inside the window.

    Must run inside the caller's transaction on a mailbox row locked with
    `select_for_update()` (the one lock that orders reservations of one mailbox; other mailboxes
    are not blocked). Returns (local day, scheduled moment, usage seen). Raises NoCapacity.
    """
    import random

    from django.db.models import F

    now = now or timezone.now()
    day = local_day(mailbox, earliest)
    usage_seen = usage_for([mailbox], earliest)[mailbox.pk]
    if usage_seen["remaining_this_week"] <= 0:
        raise NoCapacity("weekly_cap", next_available_at(mailbox, earliest), usage_seen)
    if usage_seen["remaining_today"] <= 0:
        raise NoCapacity("daily_cap", next_available_at(mailbox, earliest), usage_seen)
    moment = slot_on_day(mailbox, earliest)
    if moment is None:
        bounds = window_bounds(mailbox, day)
        reason = "outside_send_window" if bounds is None or earliest >= bounds[1] else "pacing"
        raise NoCapacity(reason, next_available_at(mailbox, earliest), usage_seen)
    updated = MailboxDailyUsage.objects.filter(mailbox=mailbox, day=day).update(count=F("count") + 1)
    if not updated:
        MailboxDailyUsage.objects.create(mailbox=mailbox, day=day, count=1)
    gap = mailbox.min_interval_seconds + (random.uniform(0, mailbox.jitter_seconds) if mailbox.jitter_seconds else 0)
    mailbox.next_slot_at = moment + dt.timedelta(seconds=gap)
    mailbox.last_used_at = now
    Mailbox.objects.filter(pk=mailbox.pk).update(next_slot_at=mailbox.next_slot_at, last_used_at=now)
    return day, moment, usage_seen


def release_capacity(*, mailbox_id, day: dt.date):
    """Gives back one reserved send (cancelled, suppressed or failed before hand-off)."""
    from django.db.models import F

    Mailbox.objects.select_for_update().filter(pk=mailbox_id).first()
    MailboxDailyUsage.objects.filter(mailbox_id=mailbox_id, day=day, count__gt=0).update(count=F("count") - 1)
