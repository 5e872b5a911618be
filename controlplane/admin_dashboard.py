"""The workspace dashboard shown as the admin index: what is sending, what is near its cap, what is failing.

Every figure is computed for one workspace in a fixed number of queries, whatever the number of mailboxes or
messages: daily counts are GROUP BY aggregates bounded to the last ``DAYS`` local days on indexed columns
(``Message.scheduled_at``, ``Event.type``), and lists are cut to ``LISTED`` rows with a total beside them.
Charts are inline SVG drawn from the computed numbers; the page loads no script.
"""

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from django.contrib.admin.utils import quote
from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDate
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from controlplane.admin_base import access, scoped
from controlplane.models import STATUS_CHOICES, Event, Message, WebhookDelivery
from mailboxes.models import Mailbox, SendingDomain
from mailboxes.services import caps
from workspaces.models import Workspace

DAYS = 30
LISTED = 20
RECENT_AUDIT = 10
NEAR_CAP = Decimal("0.8")
WEBHOOK_FAILURE_DAYS = 7
SWITCHER_LIMIT = 200
HANDED_OFF = ("sent", "delivered", "bounced", "complained")

STATUSES = [s for s, _ in STATUS_CHOICES]
STATUS_COLOURS = {
    "scheduled": "#9db7d5", "queued": "#6c8ebf", "sending": "#3d6aa8", "sent": "#4caf50", "delivered": "#2e7d32",
    "deferred": "#f0b429", "bounced": "#d64545", "complained": "#8e24aa", "failed": "#7f1d1d",
    "suppressed": "#888888", "cancelled": "#c8c8c8",
}

CHART_WIDTH = 720
CHART_HEIGHT = 180
CHART_LEFT = 44
CHART_BOTTOM = 22
CHART_TOP = 8


def dashboard_workspaces(request):
    """The workspaces the user may see, by name (at most ``SWITCHER_LIMIT``)."""
    return list(scoped(Workspace.objects.all(), request.user).order_by("name", "slug")[:SWITCHER_LIMIT])


def chosen_workspace(request, workspaces):
    """The workspace named by ``?workspace=`` (404 if the user cannot see it), else the first one."""
    wanted = request.GET.get("workspace")
    if not wanted:
        return workspaces[0] if workspaces else None
    for workspace in workspaces:
        if str(workspace.pk) == wanted or workspace.slug == wanted:
            return workspace
    found = scoped(Workspace.objects.filter(Q(pk=wanted) | Q(slug=wanted)), request.user).first()
    if found is None:
        raise Http404("No such workspace.")
    return found


def _day_range(workspace, now):
    tz = workspace.tz
    today = now.astimezone(tz).date()
    days = [today - dt.timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]
    start = dt.datetime.combine(days[0], dt.time.min, tzinfo=tz)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time.min, tzinfo=tz)
    return days, start, end


def _nice_ceiling(value):
    """A round upper bound for a chart axis (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _nice_rate_ceiling(value):
    """A round upper bound for a rate axis, as a fraction."""
    value = float(value)
    for bound in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
        if value <= bound:
            return bound
    return 1.0


def _plot_height():
    return CHART_HEIGHT - CHART_BOTTOM - CHART_TOP


def _slot_width():
    return (CHART_WIDTH - CHART_LEFT) / DAYS


def sends_chart(days, counts):
    """A stacked bar per day, one segment per status, with its axis and legend."""
    totals = [sum(counts[day].values()) for day in days]
    top = _nice_ceiling(max(totals, default=0))
    height, slot = _plot_height(), _slot_width()
    bars = []
    for index, day in enumerate(days):
        x = CHART_LEFT + index * slot + 2
        y = CHART_TOP + height
        segments = []
        for status in STATUSES:
            n = counts[day].get(status, 0)
            if not n:
                continue
            h = height * n / top
            y -= h
            segments.append({"status": status, "count": n, "colour": STATUS_COLOURS[status],
                             "y": round(y, 2), "height": round(h, 2)})
        bars.append({"day": day, "total": totals[index], "x": round(x, 2), "width": round(slot - 4, 2),
                     "segments": segments, "label": index % 5 == 4 or index == DAYS - 1,
                     "label_x": round(x + (slot - 4) / 2, 2)})
    used = [s for s in STATUSES if any(counts[day].get(s) for day in days)]
    return {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT, "top": CHART_TOP,
        "baseline": CHART_TOP + height, "label_y": CHART_HEIGHT - 6,
        "ticks": _ticks(top, lambda v: str(int(v))),
        "bars": bars, "total": sum(totals),
        "legend": [{"status": s, "colour": STATUS_COLOURS[s]} for s in used],
        "statuses": used,
        "table": [{"day": day, "total": totals[i], "cells": [counts[day].get(s, 0) for s in used]}
                  for i, day in enumerate(days)],
    }


def _ticks(top, label):
    height = _plot_height()
    return [{"y": round(CHART_TOP + height - height * fraction, 2), "label": label(top * fraction)}
            for fraction in (0, 0.5, 1)]


def _percent(value, places=1):
    return f"{float(value) * 100:.{places}f}%"


def rate_chart(days, numerators, denominators, threshold, name):
    """A line of one daily rate (numerator / handed-off sends that day) with the pause threshold dashed."""
    rates = {day: (Decimal(numerators.get(day, 0)) / denominators[day]) if denominators.get(day) else None
             for day in days}
    top = _nice_rate_ceiling(max([float(threshold) * 1.25] + [float(r) for r in rates.values() if r is not None]))
    height, slot = _plot_height(), _slot_width()

    def y_of(rate):
        return round(CHART_TOP + height - height * float(rate) / top, 2)

    points = []
    for index, day in enumerate(days):
        rate = rates[day]
        x = round(CHART_LEFT + index * slot + slot / 2, 2)
        points.append({"day": day, "x": x, "y": y_of(rate) if rate is not None else None, "rate": rate,
                       "text": _percent(rate, 2) if rate is not None else "no sends",
                       "count": numerators.get(day, 0), "sends": denominators.get(day, 0),
                       "over": rate is not None and rate > threshold,
                       "label": index % 5 == 4 or index == DAYS - 1})
    segments, current = [], []
    for point in points:
        if point["y"] is None:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(f"{point['x']},{point['y']}")
    if current:
        segments.append(current)
    return {
        "name": name,
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT, "top": CHART_TOP,
        "baseline": CHART_TOP + height, "label_y": CHART_HEIGHT - 6,
        "ticks": _ticks(top, lambda v: _percent(v, 2 if top < 0.01 else 1)),
        "threshold": threshold, "threshold_text": _percent(threshold, 2 if threshold < Decimal("0.01") else 1),
        "threshold_y": y_of(threshold),
        "lines": [" ".join(segment) for segment in segments],
        "points": points,
        "days_over": sum(1 for p in points if p["over"]),
    }


def _admin_url(name, *args):
    return reverse(f"admin:{name}", args=[quote(a) for a in args])


def compute(request, workspace, now=None):
    """Everything the dashboard shows for one workspace."""
    now = now or timezone.now()
    days, start, end = _day_range(workspace, now)
    tz = workspace.tz
    in_range = {"scheduled_at__gte": start, "scheduled_at__lt": end}

    counts = defaultdict(dict)
    rows = (Message.objects.filter(workspace=workspace, **in_range)
            .annotate(day=TruncDate("scheduled_at", tzinfo=tz)).values("day", "status")
            .annotate(n=Count("id")).order_by())
    for row in rows:
        counts[row["day"]][row["status"]] = row["n"]
    handed_off = {day: sum(counts[day].get(s, 0) for s in HANDED_OFF) for day in days}

    hard, complaints = {}, {}
    outcome_rows = (Event.objects.filter(workspace=workspace, type__in=("message.bounced", "message.complained"),
                                         message__scheduled_at__gte=start, message__scheduled_at__lt=end)
                    .annotate(day=TruncDate("message__scheduled_at", tzinfo=tz)).values("day")
                    .annotate(hard=Count("message_id", distinct=True,
                                         filter=Q(type="message.bounced", data__bounce_type="hard")),
                              complaints=Count("message_id", distinct=True, filter=Q(type="message.complained")))
                    .order_by())
    for row in outcome_rows:
        hard[row["day"]] = row["hard"]
        complaints[row["day"]] = row["complaints"]

    mailboxes = list(Mailbox.objects.filter(workspace=workspace).exclude(status="retired")
                     .select_related("warmup_profile", "domain").order_by("address"))
    usage = caps.usage_for(mailboxes, now)
    utilisation = []
    for mailbox in mailboxes:
        if mailbox.status != "active":
            continue
        figures = usage[mailbox.pk]
        cap = figures["effective_cap_today"]
        used = figures["today"]
        fraction = Decimal(used) / cap if cap else Decimal(1)
        at_cap = figures["remaining_today"] == 0
        if at_cap or fraction >= NEAR_CAP:
            why = ""
            if at_cap and figures["remaining_this_week"] == 0:
                why = "weekly cap reached"
            elif figures["warmup_day"]:
                why = f"warm-up day {figures['warmup_day']}"
            utilisation.append({"mailbox": mailbox, "used": used, "cap": cap, "at_cap": at_cap, "why": why,
                                "percent": min(int(fraction * 100), 100), "url": _admin_url(
                                    "mailboxes_mailbox_change", mailbox.pk)})
    utilisation.sort(key=lambda row: (not row["at_cap"], -row["percent"], row["mailbox"].address))
    active = [m for m in mailboxes if m.status == "active"]
    paused = [{"mailbox": m, "url": _admin_url("mailboxes_mailbox_change", m.pk)}
              for m in mailboxes if m.status in ("paused", "error")]

    domains = list(SendingDomain.objects.filter(workspace=workspace)
                   .filter(Q(paused=True) | Q(status__in=("fail", "warn"))).order_by("name")[:LISTED * 2 + 1])
    paused_domains = [{"domain": d, "url": _admin_url("mailboxes_sendingdomain_change", d.pk)}
                      for d in domains if d.paused]
    failing_domains = [{"domain": d, "url": _admin_url("mailboxes_sendingdomain_change", d.pk),
                        "failing": [name for name, check in sorted((d.checks or {}).items())
                                    if isinstance(check, dict) and check.get("status") in ("fail", "warn")]}
                       for d in domains if d.status in ("fail", "warn")]

    since = now - dt.timedelta(days=WEBHOOK_FAILURE_DAYS)
    webhooks = list(WebhookDelivery.objects.filter(endpoint__workspace=workspace, created_at__gte=since)
                    .filter(Q(status="failed") | Q(status="pending", attempts__gt=0))
                    .values("endpoint_id", "endpoint__url", "endpoint__active")
                    .annotate(failing=Count("id"), failed=Count("id", filter=Q(status="failed")),
                              last_attempt=Max("last_attempt_at"))
                    .order_by("-failing")[:LISTED])
    for row in webhooks:
        row["url"] = _admin_url("controlplane_webhookendpoint_change", row["endpoint_id"])
        row["deliveries_url"] = (_admin_url("controlplane_webhookdelivery_changelist")
                                 + f"?endpoint__id__exact={row['endpoint_id']}")

    can = access(request)
    can_audit = can.can_in("audit", workspace.pk)
    audit_events = (list(AuditEvent.objects.filter(workspace=workspace).order_by("-occurred_at", "-seq")
                         [:RECENT_AUDIT]) if can_audit else [])

    return {
        "workspace": workspace,
        "days": days,
        "sends": sends_chart(days, counts),
        "hard_bounce_chart": rate_chart(days, hard, handed_off, workspace.hard_bounce_threshold,
                                        "Hard-bounce rate"),
        "complaint_chart": rate_chart(days, complaints, handed_off, workspace.complaint_threshold,
                                      "Complaint rate"),
        "health_min_sends": workspace.health_min_sends,
        "utilisation": utilisation[:LISTED],
        "utilisation_more": max(0, len(utilisation) - LISTED),
        "at_cap_count": sum(1 for row in utilisation if row["at_cap"]),
        "near_cap_count": sum(1 for row in utilisation if not row["at_cap"]),
        "active_count": len(active),
        "sent_today": sum(usage[m.pk]["today"] for m in active),
        "capacity_today": sum(usage[m.pk]["effective_cap_today"] for m in active),
        "paused_mailboxes": paused[:LISTED],
        "paused_mailboxes_more": max(0, len(paused) - LISTED),
        "paused_domains": paused_domains[:LISTED],
        "failing_domains": failing_domains[:LISTED],
        "failing_webhooks": webhooks,
        "can_read_audit": can_audit,
        "audit_events": [{"event": e, "url": _admin_url("audit_auditevent_change", e.pk)} for e in audit_events],
        "onboarding_url": _admin_url("workspaces_workspace_onboarding", workspace.pk),
        "mailboxes_url": _admin_url("mailboxes_mailbox_changelist") + f"?workspace__id__exact={workspace.pk}",
        "paused_mailboxes_url": (_admin_url("mailboxes_mailbox_changelist")
                                 + f"?workspace__id__exact={workspace.pk}&status__exact=paused"),
    }
