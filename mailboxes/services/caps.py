"""Caps: the usage ledger's readers (and, with dispatch, its only writers).

A mailbox's day and ISO week are local to its time zone (`local_day`).
"""

import datetime as dt
import random
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection
from django.db.models import F
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxDailyUsage, MailboxHourlyUsage


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
    """min(daily cap, warm-up allowance, re-ramp allowance after a circuit-breaker pause) on local day `today`."""
    from mailboxes.services.breakers import reramp_allowance

    cap = mailbox.daily_cap
    day_number = warmup_day(mailbox, today)
    if day_number is not None:
        cap = min(cap, mailbox.warmup_profile.allowance(day_number))
    reramp = reramp_allowance(mailbox, today)
    return cap if reramp is None else min(cap, reramp)


def _daily_counts(mailbox_ids, first: dt.date, last: dt.date) -> defaultdict:
    """{mailbox id: {local day: count}} between `first` and `last`, in one query."""
    counts = defaultdict(dict)
    rows = MailboxDailyUsage.objects.filter(mailbox_id__in=list(mailbox_ids), day__gte=first, day__lte=last)
    for mailbox_id, day, count in rows.values_list("mailbox_id", "day", "count"):
        counts[mailbox_id][day] = count
    return counts


def _usage_on(mailbox: Mailbox, day: dt.date, counts: dict) -> dict:
    """The usage dict of `mailbox` on local `day`, from its {day: count} (its ISO week's days at least)."""
    monday = week_start(day)
    return usage_figures(day=day, used_today=counts.get(day, 0),
                         used_week=sum(c for d, c in counts.items() if monday <= d <= day),
                         cap_today=effective_cap_today(mailbox, day), weekly_cap=mailbox.weekly_cap,
                         warmup_day=warmup_day(mailbox, day))


def usage_figures(*, day, used_today, used_week, cap_today, weekly_cap, warmup_day) -> dict:
    """The usage dict from what is used on local `day` and in its ISO week, today's cap and the weekly cap."""
    remaining_week = max(0, weekly_cap - used_week)
    return {
        "today": used_today,
        "this_week": used_week,
        "effective_cap_today": cap_today,
        "remaining_today": max(0, min(cap_today - used_today, remaining_week)),
        "remaining_this_week": remaining_week,
        "warmup_day": warmup_day,
        "local_day": day.isoformat(),
    }


def usage_for(mailboxes, now: dt.datetime | None = None) -> dict:
    """{mailbox.pk: usage dict} for many mailboxes in one query (warm-up profiles must be selected)."""
    now = now or timezone.now()
    mailboxes = list(mailboxes)
    if not mailboxes:
        return {}
    todays = {m.pk: local_day(m, now) for m in mailboxes}
    counts = _daily_counts(todays, min(week_start(d) for d in todays.values()), max(todays.values()))
    return {m.pk: _usage_on(m, todays[m.pk], counts[m.pk]) for m in mailboxes}


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


def hour_start(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def pacing(mailbox: Mailbox) -> tuple[float, str]:
    """Seconds between two paced sends of the mailbox, and the limit that sets them:
    `min_interval_seconds` ("pacing") or, when stricter, `per_minute_cap` ("per_minute_cap")."""
    gap = float(mailbox.min_interval_seconds)
    if mailbox.per_minute_cap and 60.0 / mailbox.per_minute_cap > gap:
        return 60.0 / mailbox.per_minute_cap, "per_minute_cap"
    return gap, "pacing"


@dataclass
class Reservation:
    day: dt.date
    hour: dt.datetime | None  # the clock hour counted against `hourly_cap` (None: the mailbox has none)
    moment: dt.datetime
    reason: str  # what made `moment` later than asked: "", "send_window", "pacing", "per_minute_cap", "hourly_cap"
    usage_seen: dict


class Ledger:
    """Reservations for mailboxes whose rows the caller's transaction has locked (`select_for_update`).

    Counts are read once (`add`), reservations are planned in memory (`reserve`) and written in a few
    statements (`save`, before commit), so a batch of sends costs about as much as one. The row lock is
    the one lock that orders the reservations of one mailbox; other mailboxes are not blocked.
    """

    def __init__(self, *, now: dt.datetime | None = None):
        self.now = now or timezone.now()
        self.daily = defaultdict(dict)
        self.hourly = defaultdict(dict)
        self.added_daily = defaultdict(int)
        self.added_hourly = defaultdict(int)
        self.touched = {}
        self.mailboxes = {}

    def add(self, mailboxes, *, earliest: dt.datetime, latest: dt.datetime | None = None) -> list:
        """Reads the counts that reservations between `earliest` and `latest` can need (two queries at most).

        Returns the ledger's own instance of each mailbox: reserve on those, so that one mailbox met
        twice in a transaction is paced as one."""
        mailboxes = list(mailboxes)
        known = [self.mailboxes.setdefault(m.pk, m) for m in mailboxes]
        mailboxes = [m for m in mailboxes if m.pk not in self.daily]
        if not mailboxes:
            return known
        latest = latest or earliest
        first = min(week_start(local_day(m, earliest)) for m in mailboxes)
        last = max(local_day(m, latest) for m in mailboxes)
        counts = _daily_counts([m.pk for m in mailboxes], first, last)
        for mailbox in mailboxes:
            self.daily[mailbox.pk] = counts[mailbox.pk]
        hourly = [m.pk for m in mailboxes if m.hourly_cap is not None]
        if hourly:
            rows = MailboxHourlyUsage.objects.filter(mailbox_id__in=hourly, hour__gte=hour_start(earliest),
                                                     hour__lte=latest + dt.timedelta(days=1))
            for mailbox_id, hour, count in rows.values_list("mailbox_id", "hour", "count"):
                self.hourly[mailbox_id][hour] = count
        return known

    def usage(self, mailbox: Mailbox, day: dt.date) -> dict:
        return _usage_on(mailbox, day, self.daily[mailbox.pk])

    def reserve(self, mailbox: Mailbox, earliest: dt.datetime) -> Reservation:
        """Reserves one send on the mailbox-local day of `earliest`: daily and ISO-week caps (warm-up
        included), the send window, pacing and `per_minute_cap`, then `hourly_cap`. Raises NoCapacity."""
        day = local_day(mailbox, earliest)
        seen = self.usage(mailbox, day)
        if seen["remaining_this_week"] <= 0:
            raise NoCapacity("weekly_cap", next_available_at(mailbox, earliest), seen)
        if seen["remaining_today"] <= 0:
            raise NoCapacity("daily_cap", next_available_at(mailbox, earliest), seen)
        bounds = window_bounds(mailbox, day)
        if bounds is None or earliest >= bounds[1]:
            raise NoCapacity("outside_send_window", next_available_at(mailbox, earliest), seen)
        start, end = bounds
        moment, reason = earliest, ""
        if start > moment:
            moment, reason = start, "send_window"
        gap, pace_reason = pacing(mailbox)
        if mailbox.next_slot_at and mailbox.next_slot_at > moment:
            moment, reason = mailbox.next_slot_at, pace_reason
        hour = None
        if mailbox.hourly_cap is not None:
            hour = hour_start(moment)
            while self.hourly[mailbox.pk].get(hour, 0) >= mailbox.hourly_cap and moment < end:
                hour += dt.timedelta(hours=1)
                moment, reason = hour, "hourly_cap"
        if moment >= end or local_day(mailbox, moment) != day:
            raise NoCapacity(reason if reason in ("hourly_cap", "per_minute_cap") else "pacing",
                             next_available_at(mailbox, earliest), seen)
        self.daily[mailbox.pk][day] = self.daily[mailbox.pk].get(day, 0) + 1
        self.added_daily[(mailbox.pk, day)] += 1
        if hour is not None:
            self.hourly[mailbox.pk][hour] = self.hourly[mailbox.pk].get(hour, 0) + 1
            self.added_hourly[(mailbox.pk, hour)] += 1
        if mailbox.jitter_seconds:
            gap += random.uniform(0, mailbox.jitter_seconds)
        mailbox.next_slot_at = moment + dt.timedelta(seconds=gap)
        mailbox.last_used_at = self.now
        self.touched[mailbox.pk] = mailbox
        return Reservation(day, hour, moment, reason, seen)

    def save(self):
        """Writes every reservation made since the last save: usage rows and the mailboxes' pacing."""
        _add_counts(MailboxDailyUsage, "day", self.added_daily)
        _add_counts(MailboxHourlyUsage, "hour", self.added_hourly)
        if self.touched:
            _set_pacing(self.touched, self.now)
        self.added_daily.clear()
        self.added_hourly.clear()
        self.touched.clear()


def _set_pacing(touched: dict, now: dt.datetime):
    """Writes each touched mailbox's `next_slot_at` and `last_used_at` in one statement (written out: the
    ORM's CASE … WHEN for a thousand mailboxes costs more to compile than to run)."""
    table = connection.ops.quote_name(Mailbox._meta.db_table)
    cases = " ".join(["WHEN %s THEN %s"] * len(touched))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET next_slot_at = CASE id {cases} END, last_used_at = %s "
                       f"WHERE id IN ({', '.join(['%s'] * len(touched))})",
                       [v for pk, m in touched.items() for v in (pk, m.next_slot_at)] + [now, *touched])


def _add_counts(model, period: str, added: dict):
    """Adds `added[(mailbox id, period)]` to the ledger rows in one statement (PostgreSQL and SQLite)."""
    if not added:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * len(added))
    params = [v for (pk, when), n in added.items() for v in (pk, when, n)]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (mailbox_id, {period}, count) VALUES {values} "
                       f"ON CONFLICT (mailbox_id, {period}) DO UPDATE SET count = {table}.count + excluded.count",
                       params)


def reserve_capacity(*, mailbox: Mailbox, earliest: dt.datetime, now: dt.datetime | None = None):
    """Reserves one send for one locked mailbox; returns (local day, scheduled moment, usage seen)."""
    ledger = Ledger(now=now)
    ledger.add([mailbox], earliest=earliest)
    reservation = ledger.reserve(mailbox, earliest)
    ledger.save()
    return reservation.day, reservation.moment, reservation.usage_seen


def release_capacity(*, mailbox_id, day: dt.date, hour: dt.datetime | None = None):
    """Gives back one reserved send (cancelled, suppressed or failed before hand-off)."""
    Mailbox.objects.select_for_update().filter(pk=mailbox_id).first()
    MailboxDailyUsage.objects.filter(mailbox_id=mailbox_id, day=day, count__gt=0).update(count=F("count") - 1)
    if hour is not None:
        MailboxHourlyUsage.objects.filter(mailbox_id=mailbox_id, hour=hour, count__gt=0).update(count=F("count") - 1)
