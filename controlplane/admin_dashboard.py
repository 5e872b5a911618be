"""The workspace dashboard shown as the admin index: what is sending, what is near its cap, what is failing.

Every figure is computed for one workspace in a fixed number of queries, whatever the number of mailboxes or
messages: daily counts come from the pre-aggregated rows of ``controlplane.stats`` (never a scan of the messages
table), and lists are cut to ``LISTED`` rows with a total beside them. Charts are drawn in the browser by Chart.js
(shipped with the admin theme, served from this process) from the numbers computed here, which the page also
shows as tables.
"""

import datetime as dt
import json
from decimal import Decimal
from operator import itemgetter

from django.contrib.admin.utils import quote
from django.db.models import Count, Max, Q
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from controlplane.admin_base import access, scoped
from controlplane.models import HANDED_OFF_STATUSES as HANDED_OFF, STATUS_CHOICES, WebhookDelivery
from controlplane.stats import services as stats
from controlplane.stats.models import COMPLAINT, HARD_BOUNCE
from mailboxes.models import Mailbox, MailboxDailyUsage, SendingDomain, WarmupProfile
from mailboxes.services import caps
from workspaces.models import Workspace

DAYS = 30
LISTED = 20
RECENT_AUDIT = 10
NEAR_CAP = Decimal("0.8")
WEBHOOK_FAILURE_DAYS = 7
SWITCHER_LIMIT = 200
# What today's cap (caps.effective_cap_today: warm-up, re-ramp) reads of a mailbox. Mailboxes alike in these share
# today's cap, worked out once for each such group on a mailbox holding only these fields: should caps come to read
# another one, it is loaded one query per group and the query-count test of the dashboard fails.
CAP_FIELDS = ("daily_cap", "warmup_profile_id", "warmup_started_on", "send_window_timezone", "reramp_started_at",
              "reramp_fraction", "reramp_days")
LISTED_FIELDS = ("id", "address", "status", "paused_reason", "last_error", "weekly_cap")
cap_key = itemgetter(*CAP_FIELDS)

STATUSES = [s for s, _ in STATUS_CHOICES]
STATUS_COLOURS = {
    "scheduled": "#9db7d5", "queued": "#6c8ebf", "sending": "#3d6aa8", "sent": "#4caf50", "delivered": "#2e7d32",
    "deferred": "#f0b429", "bounced": "#d64545", "complained": "#8e24aa", "failed": "#7f1d1d",
    "suppressed": "#888888", "cancelled": "#c8c8c8",
}
RATE_COLOUR = "#6d28d9"
THRESHOLD_COLOUR = "#d64545"


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


def days_ending(workspace, now):
    """The last ``DAYS`` local days of `workspace`, oldest first."""
    today = now.astimezone(workspace.tz).date()
    return [today - dt.timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]


def _percent(value, places=1):
    return f"{float(value) * 100:.{places}f}%"


def _threshold_text(threshold):
    return _percent(threshold, 2 if threshold < Decimal("0.01") else 1)


def sends_chart(days, counts):
    """Messages per day by status: a stacked bar chart, its legend and its table."""
    totals = [sum(counts[day].get(s, 0) for s in STATUSES) for day in days]
    used = [s for s in STATUSES if any(counts[day].get(s) for day in days)]
    data = {
        "kind": "stacked",
        "labels": [f"{day.day} {day:%b}" for day in days],
        "datasets": [{"label": s, "data": [counts[day].get(s, 0) for day in days],
                      "backgroundColor": STATUS_COLOURS[s]} for s in used],
    }
    return {
        "total": sum(totals),
        "legend": [{"status": s, "colour": STATUS_COLOURS[s]} for s in used],
        "statuses": used,
        "segments": sum(1 for day in days for s in used if counts[day].get(s)),
        "table": [{"day": day, "total": totals[i], "cells": [counts[day].get(s, 0) for s in used]}
                  for i, day in enumerate(days)],
        "json": json.dumps(data),
    }


def rate_chart(days, counts, metric, threshold, name):
    """One daily rate (messages with `metric` / messages handed off, by the day they were scheduled) as a line,
    with the pause threshold as a dashed line."""
    points = []
    for day in days:
        sends = sum(counts[day].get(s, 0) for s in HANDED_OFF)
        count = counts[day].get(metric, 0)
        rate = Decimal(count) / sends if sends else None
        points.append({"day": day, "rate": rate, "count": count, "sends": sends,
                       "text": f"{_percent(rate, 2)} ({count} of {sends})" if rate is not None else "no sends",
                       "over": rate is not None and rate > threshold})
    data = {
        "kind": "rate",
        "labels": [f"{day.day} {day:%b}" for day in days],
        "tooltips": [point["text"] for point in points],
        "datasets": [
            {"label": name, "data": [round(float(p["rate"]) * 100, 3) if p["rate"] is not None else None
                                     for p in points],
             "borderColor": RATE_COLOUR, "backgroundColor": RATE_COLOUR,
             "pointBackgroundColor": [THRESHOLD_COLOUR if p["over"] else RATE_COLOUR for p in points],
             "pointRadius": [5 if p["over"] else 3 for p in points]},
            {"label": f"Pause threshold {_threshold_text(threshold)}", "data": [float(threshold) * 100] * len(days),
             "borderColor": THRESHOLD_COLOUR, "borderDash": [6, 4], "pointRadius": 0, "threshold": True},
        ],
    }
    return {
        "name": name,
        "threshold": threshold, "threshold_text": _threshold_text(threshold),
        "points": points,
        "days_over": sum(1 for p in points if p["over"]),
        "json": json.dumps(data),
    }


def rate_charts(workspace, days, counts):
    """The hard-bounce and complaint charts of one workspace's (or one mailbox's) daily counts."""
    return {
        "hard_bounce_chart": rate_chart(days, counts, HARD_BOUNCE, workspace.hard_bounce_threshold,
                                        "Hard-bounce rate"),
        "complaint_chart": rate_chart(days, counts, COMPLAINT, workspace.complaint_threshold, "Complaint rate"),
    }


def mailbox_rates(mailbox, now=None):
    """The mailbox page's charts: the same rates for one mailbox, over its workspace's last ``DAYS`` days."""
    workspace = mailbox.workspace
    days = days_ending(workspace, now or timezone.now())
    return {"days": days, "workspace": workspace,
            **rate_charts(workspace, days, stats.daily(workspace, days, mailbox=mailbox))}


def usage_today(workspace, mailboxes, now):
    """{mailbox id: usage} as caps.usage_for gives it (caps.usage_figures) for active `mailboxes` of `workspace`,
    given as dicts of their LISTED_FIELDS and CAP_FIELDS: two queries and one pass, with today's cap worked out
    once per group of mailboxes alike."""
    if not mailboxes:
        return {}
    profiles = WarmupProfile.objects.in_bulk({m["warmup_profile_id"] for m in mailboxes} - {None})
    fields = [f.attname for f in Mailbox._meta.concrete_fields if f.attname in ("id", *CAP_FIELDS)]
    alike, group_of = {}, {}
    for mailbox in mailboxes:
        key = cap_key(mailbox)
        if key not in alike:
            model = Mailbox.from_db(Mailbox.objects.db, fields, [mailbox[name] for name in fields])
            model.warmup_profile = profiles.get(model.warmup_profile_id)
            today = caps.local_day(model, now)
            alike[key] = {"today": today, "monday": caps.week_start(today),
                          "cap": caps.effective_cap_today(model, today), "warmup_day": caps.warmup_day(model, today)}
        group_of[mailbox["id"]] = alike[key]
    used = {pk: {"today": 0, "week": 0} for pk in group_of}
    rows = MailboxDailyUsage.objects.filter(
        mailbox__workspace=workspace, mailbox__status="active",
        day__gte=min(group["monday"] for group in alike.values()),
        day__lte=max(group["today"] for group in alike.values()))
    for pk, day, count in rows.values_list("mailbox_id", "day", "count"):
        group = group_of.get(pk)
        if group is not None and group["monday"] <= day <= group["today"]:
            used[pk]["week"] += count
            if day == group["today"]:
                used[pk]["today"] = count
    usage = {}
    for mailbox in mailboxes:
        group, counts = group_of[mailbox["id"]], used[mailbox["id"]]
        usage[mailbox["id"]] = caps.usage_figures(
            day=group["today"], used_today=counts["today"], used_week=counts["week"], cap_today=group["cap"],
            weekly_cap=mailbox["weekly_cap"], warmup_day=group["warmup_day"])
    return usage


def _admin_url(name, *args):
    return reverse(f"admin:{name}", args=[quote(a) for a in args])


def compute(request, workspace, now=None):
    """Everything the dashboard shows for one workspace."""
    now = now or timezone.now()
    days = days_ending(workspace, now)
    counts = stats.daily(workspace, days)

    mailboxes = list(Mailbox.objects.filter(workspace=workspace).exclude(status="retired").order_by("address")
                     .values(*LISTED_FIELDS, *CAP_FIELDS))
    active = [m for m in mailboxes if m["status"] == "active"]
    usage = usage_today(workspace, active, now)
    utilisation = []
    for mailbox in active:
        figures = usage[mailbox["id"]]
        cap, used = figures["effective_cap_today"], figures["today"]
        fraction = Decimal(used) / cap if cap else Decimal(1)
        at_cap = figures["remaining_today"] == 0
        if at_cap or fraction >= NEAR_CAP:
            why = ""
            if at_cap and figures["remaining_this_week"] == 0:
                why = "weekly cap reached"
            elif figures["warmup_day"]:
                why = f"warm-up day {figures['warmup_day']}"
            utilisation.append({"mailbox": mailbox, "used": used, "cap": cap, "at_cap": at_cap, "why": why,
                                "percent": min(int(fraction * 100), 100)})
    utilisation.sort(key=lambda row: (not row["at_cap"], -row["percent"], row["mailbox"]["address"]))
    for row in utilisation[:LISTED]:
        row["url"] = _admin_url("mailboxes_mailbox_change", row["mailbox"]["id"])
    paused = [m for m in mailboxes if m["status"] in ("paused", "error")]
    paused_rows = [{"mailbox": m, "url": _admin_url("mailboxes_mailbox_change", m["id"])} for m in paused[:LISTED]]

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
                    .filter(Q(status="dead") | Q(status="pending", attempts__gt=0))
                    .values("endpoint_id", "endpoint__url", "endpoint__active")
                    .annotate(failing=Count("id"), failed=Count("id", filter=Q(status="dead")),
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
        **rate_charts(workspace, days, counts),
        "health_min_sends": workspace.health_min_sends,
        "utilisation": utilisation[:LISTED],
        "utilisation_more": max(0, len(utilisation) - LISTED),
        "at_cap_count": sum(1 for row in utilisation if row["at_cap"]),
        "near_cap_count": sum(1 for row in utilisation if not row["at_cap"]),
        "active_count": len(active),
        "sent_today": sum(figures["today"] for figures in usage.values()),
        "capacity_today": sum(figures["effective_cap_today"] for figures in usage.values()),
        "paused_mailboxes": paused_rows,
        "paused_mailboxes_more": max(0, len(paused) - LISTED),
        "paused_domains": paused_domains[:LISTED],
        "failing_domains": failing_domains[:LISTED],
        "failing_webhooks": webhooks,
        "can_read_audit": can_audit,
        "audit_events": [{"event": e, "url": _admin_url("audit_auditevent_change", e.pk)} for e in audit_events],
        "onboarding_url": _admin_url("workspaces_workspace_onboarding", workspace.pk),
        "can_add_mailboxes": can.can_in("identities", workspace.pk),
        "bulk_add_url": _admin_url("mailboxes_mailbox_bulk_add") + f"?workspace={workspace.pk}",
        "mailboxes_url": _admin_url("mailboxes_mailbox_changelist") + f"?workspace__id__exact={workspace.pk}",
        "paused_mailboxes_url": (_admin_url("mailboxes_mailbox_changelist")
                                 + f"?workspace__id__exact={workspace.pk}&status__exact=paused"),
    }
