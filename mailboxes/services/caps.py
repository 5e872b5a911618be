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
