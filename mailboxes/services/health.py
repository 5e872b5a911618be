"""Health of a sending scope (contract §4.6): hard-bounce and complaint rates over its recent sends.

- A mailbox is judged over its last `HEALTH_WINDOW_SENDS` handed-off messages (never fewer than the
  workspace's `health_min_sends`).
- A domain or a workspace is judged over the sends of its mailboxes in the last
  `health_scope_window_days` days, leaving out mailboxes (and, for the workspace, domains) that a breaker
  has paused: their own pause already answers for those sends.
- A send counts only if it left after its mailbox's `health_since`, the last resume from an automatic pause
  of the mailbox or of a scope above it, so old bounces do not trip a breaker again right after it resumes.

Rates are judged once at least `health_min_sends` sends count; a rate that passes (is above) a
threshold warns or pauses (see mailboxes/services/breakers.py).
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from controlplane.models import HANDED_OFF_STATUSES as HANDED_OFF, Event, Message
from mailboxes.models import Mailbox

# Before any send: what a mailbox never resumed from an automatic pause counts from.
NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
METRICS = {"hard_bounce": "hard-bounce", "complaint": "complaint"}
COUNTS = ("sends", "hard_bounces", "complaints")
HARD = Q(type="message.bounced", data__bounce_type="hard")
COMPLAINED = Q(type="message.complained")


def kind_of(scope) -> str:
    """"mailbox", "domain" or "workspace"."""
    return {"mailbox": "mailbox", "sendingdomain": "domain", "workspace": "workspace"}[scope._meta.model_name]


def window_size(workspace) -> int:
    return max(int(getattr(settings, "HEALTH_WINDOW_SENDS", 200)), workspace.health_min_sends)


def _with_rates(counts: dict) -> dict:
    sends = counts["sends"]
    return {
        **counts,
        "hard_bounce_rate": Decimal(counts["hard_bounces"]) / sends if sends else Decimal(0),
        "complaint_rate": Decimal(counts["complaints"]) / sends if sends else Decimal(0),
    }


def _counted(prefix="", health_since=None):
    """Sends that count (handed off after their mailbox's `health_since`), as a Q over Message or, with the
    prefix "message__", over Event. `health_since` is an expression for it (default: the mailbox's, joined)."""
    since = F(f"{prefix}mailbox__health_since") if health_since is None else health_since
    return Q(**{f"{prefix}status__in": HANDED_OFF, f"{prefix}sent_at__isnull": False,
                f"{prefix}sent_at__gt": Coalesce(since, Value(NEVER))})


def rates(scope, now: dt.datetime | None = None) -> dict:
    """{sends, hard_bounces, complaints, hard_bounce_rate, complaint_rate, window, days} over the scope's recent sends.

    `window` is the mailbox window's size in sends, `days` the domain or workspace window in days."""
    kind = kind_of(scope)
    if kind == "mailbox":
        size = window_size(scope.workspace)
        recent = Message.objects.filter(_counted(), mailbox=scope).order_by("-sent_at", "-id").values("pk")[:size]
        reported = {name: Q(Exists(Event.objects.filter(report, message=OuterRef("pk"))))
                    for name, report in (("hard_bounces", HARD), ("complaints", COMPLAINED))}
        counts = Message.objects.filter(pk__in=recent).aggregate(
            sends=Count("pk"), **{name: Count("pk", filter=q) for name, q in reported.items()})
        return {"window": size, "days": None, **_with_rates(counts)}
    if kind == "domain":
        return _scope_rates(scope.workspace, now, domain=scope)["domain"]
    return _scope_rates(scope, now, whole_workspace=True)["workspace"]


def scope_rates(mailbox, now: dt.datetime | None = None) -> dict:
    """{"domain": rates, "workspace": rates} of the mailbox's domain and workspace from one pass over the
    workspace's sends: the figures `rates` gives each of them (what the mailbox page shows)."""
    return _scope_rates(mailbox.workspace, now, domain=mailbox.domain, whole_workspace=True)


def _scope_rates(workspace, now, *, domain=None, whole_workspace=False) -> dict:
    """The rates of `domain` and/or of the whole workspace; the workspace's counts are the sum of those of its
    domains that no breaker paused."""
    now = now or timezone.now()
    days = workspace.health_scope_window_days
    counts = _counts_by_domain(workspace, now - dt.timedelta(days=days),
                               domain=None if whole_workspace else domain)
    result = {}
    if domain is not None:
        result["domain"] = {name: counts.get(domain.pk, {}).get(name, 0) for name in COUNTS}
    if whole_workspace:
        result["workspace"] = {name: sum(c[name] for c in counts.values() if not c["paused"]) for name in COUNTS}
    return {kind: {"window": None, "days": days, **_with_rates(figures)} for kind, figures in result.items()}


def _counts_by_domain(workspace, start, *, domain=None) -> dict:
    """{domain id: {paused, sends, hard_bounces, complaints}} over the counted sends since `start` of the
    workspace's (or `domain`'s) mailboxes that no breaker paused; `paused`: a breaker paused the domain.

    Two statements. Sends are counted per mailbox in the partial index of handed-off sends, index only: one
    range of `sent_at` a mailbox, after the later of `start` and its `health_since`. The (far fewer) reports
    are read by their own index, each joined to its send; a report never precedes its send, and a day of
    margin covers providers' clocks."""
    which = {"workspace": workspace, "breaker_rule": "", **({} if domain is None else {"domain": domain})}
    sends = (Message.objects.filter(_counted(health_since=OuterRef("health_since")), mailbox=OuterRef("pk"),
                                    sent_at__gte=start)
             .order_by().values("mailbox").annotate(n=Count("*")).values("n"))
    counts = {row["domain"]: {"paused": row["domain__breaker_rule"] != "", "sends": row["sends"],
                              "hard_bounces": 0, "complaints": 0}
              for row in Mailbox.objects.filter(**which).order_by()
              .values("domain", "domain__breaker_rule").annotate(sends=Coalesce(Sum(Subquery(sends)), 0))}
    reports = Event.objects.filter(HARD | COMPLAINED, _counted("message__"), workspace=workspace,
                                   occurred_at__gte=start - dt.timedelta(days=1), message__sent_at__gte=start,
                                   **{f"message__mailbox__{name}": value for name, value in which.items()})
    for row in (reports.order_by().values("message__mailbox__domain")
                .annotate(hard_bounces=Count("message_id", distinct=True, filter=HARD),
                          complaints=Count("message_id", distinct=True, filter=COMPLAINED))):
        counts[row.pop("message__mailbox__domain")].update(row)
    return counts


def thresholds(scope) -> dict:
    """{metric: (warn, pause)} for the scope, from its workspace's settings (a warn never above its pause).

    A mailbox pauses at the contract's `hard_bounce_threshold` and `complaint_threshold`."""
    workspace = scope.workspace
    kind = kind_of(scope)
    result = {}
    for metric in METRICS:
        if kind == "mailbox":
            warn = getattr(workspace, f"mailbox_{metric}_warn_threshold")
            pause = getattr(workspace, f"{metric}_threshold")
        else:
            warn, pause = (getattr(workspace, f"{kind}_{metric}_warn_threshold"),
                           getattr(workspace, f"{kind}_{metric}_pause_threshold"))
        result[metric] = (min(warn, pause), pause)
    return result


def percent(value) -> str:
    return f"{(Decimal(value) * 100).quantize(Decimal('0.1'))}%"


@dataclass(frozen=True)
class Finding:
    """A rate past a threshold: `rule` names the scope kind and metric (e.g. "domain_complaint")."""

    rule: str
    level: str  # "warn" or "pause"
    text: str


def findings(scope, figures: dict) -> list[Finding]:
    """The scope's rates past a warn threshold (level "warn") and past a pause threshold (level "pause")."""
    workspace = scope.workspace
    if figures["sends"] < workspace.health_min_sends:
        return []
    kind = kind_of(scope)
    result = []
    for metric, (warn, pause) in thresholds(scope).items():
        rate, count = figures[f"{metric}_rate"], figures["hard_bounces" if metric == "hard_bounce" else "complaints"]
        name = METRICS[metric]
        if kind == "mailbox":
            head = f"{name.capitalize()} rate {percent(rate)} ({count} of the last {figures['sends']} sends)"
        else:
            head = (f"{kind.capitalize()} {scope}: {name} rate {percent(rate)} ({count} of {figures['sends']} sends "
                    f"in the last {figures['days']} days)")
        rule = f"{kind}_{metric}"
        if rate > warn:
            result.append(Finding(rule, "warn", f"{head} passes the warn threshold of {percent(warn)} "
                                                f"(rule: {kind} {name} warn)."))
        if rate > pause:
            which = "workspace threshold" if kind == "mailbox" else "pause threshold"
            result.append(Finding(rule, "pause", f"{head} passes the {which} of {percent(pause)} "
                                                 f"(rule: {kind} {name} pause)."))
    return result
