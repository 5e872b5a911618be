"""Circuit breakers: hard-bounce and complaint rates warn about, pause and, after a cool-down, resume a mailbox,
a sending domain or a whole workspace; a mailbox resumed from an automatic pause re-ramps its cap.

- `check` judges a mailbox, its domain and its workspace after a hard bounce or complaint on one of its sends.
- `run` is the periodic job: it resumes the scopes whose cool-down has passed and re-judges those that warn.
- `resume_now`, `postpone_auto_resume` and `cancel_auto_resume` are the operator's overrides.
- `pause_change` keeps the breaker fields right whenever a pause service pauses or resumes a scope.

See docs/circuit-breakers.md.
"""

import datetime as dt
import math
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.context import Actor, acting_as
from mailboxes.services import health
from mailboxes.services.health import kind_of

JOB_ACTOR = Actor("system", "", "circuit breakers")


def _models():
    from mailboxes.models import Mailbox, SendingDomain
    from workspaces.models import Workspace

    return {"workspace": Workspace, "domain": SendingDomain, "mailbox": Mailbox}


def is_paused(scope) -> bool:
    return scope.status == "paused" if kind_of(scope) == "mailbox" else scope.paused


def rule_label(rule: str) -> str:
    kind, _, metric = rule.partition("_")
    return f"{kind} {health.METRICS.get(metric, metric)}"


# --- Re-ramp ------------------------------------------------------------------------------

def reramp_day(mailbox, today: dt.date) -> int | None:
    """Day N (1 = the resume day) of the mailbox's re-ramp on its local `today`, or None when none runs."""
    if mailbox.reramp_started_at is None or not mailbox.reramp_days:
        return None
    day = max((today - mailbox.reramp_started_at.astimezone(mailbox.tz).date()).days + 1, 1)
    return day if day <= mailbox.reramp_days else None


def reramp_allowance(mailbox, today: dt.date) -> int | None:
    """Sends the re-ramp allows on `today`: fraction × daily cap on day 1, climbing linearly to the full cap
    the day after the last ramp day; None when no re-ramp runs."""
    day = reramp_day(mailbox, today)
    if day is None:
        return None
    fraction = Decimal(mailbox.reramp_fraction if mailbox.reramp_fraction is not None else 1)
    share = fraction + (1 - fraction) * Decimal(day - 1) / mailbox.reramp_days
    return min(mailbox.daily_cap, math.ceil(mailbox.daily_cap * share))


def _start_reramp(scope, now, fields) -> dict:
    """Re-ramps the mailbox, or every active mailbox of the domain or workspace, from `now`; a fresh health
    window starts for each of the scope's mailboxes."""
    from mailboxes.models import Mailbox

    workspace = scope.workspace
    ramp = {"reramp_started_at": now, "reramp_fraction": workspace.reramp_fraction,
            "reramp_days": workspace.reramp_days}
    summary = {"fraction": workspace.reramp_fraction, "days": workspace.reramp_days}
    if kind_of(scope) == "mailbox":
        for name, value in ramp.items():
            setattr(scope, name, value)
        fields.extend(ramp)
        return summary
    mailboxes = Mailbox.objects.filter(**{kind_of(scope): scope})
    mailboxes.update(health_since=now)
    summary["mailboxes"] = mailboxes.filter(status="active").update(**ramp)
    return summary


def pause_change(scope, *, paused: bool, rule: str = "", resume_at=None, now=None) -> tuple[list, dict, dict]:
    """Sets the breaker fields of a locked `scope` that a pause service is pausing or resuming.

    A breaker pause records its rule and `resume_at`; a manual pause clears them (it never resumes by
    itself); resuming from a breaker pause starts a fresh health window and re-ramps the mailboxes it
    resumes. Returns (fields to save, before, after) for the service's one audit entry."""
    if not (rule or scope.breaker_rule):
        return [], {}, {}
    now = now or timezone.now()
    before = {"breaker_rule": scope.breaker_rule, "resume_at": scope.resume_at}
    scope.breaker_rule, scope.resume_at = (rule, resume_at) if paused else ("", None)
    fields = ["breaker_rule", "resume_at"]
    after = {"breaker_rule": scope.breaker_rule, "resume_at": scope.resume_at}
    if not paused:
        scope.health_since = now
        fields.append("health_since")
        after["health_since"] = now
        after["reramp"] = _start_reramp(scope, now, fields)
    return fields, before, after


def _pause(scope, *, reason, rule, resume_at):
    from mailboxes.services import identities
    from workspaces import services as workspaces

    kind = kind_of(scope)
    if kind == "mailbox":
        return identities.pause_mailbox(mailbox=scope, reason=reason, rule=rule, resume_at=resume_at)
    if kind == "domain":
        return identities.set_domain_paused(domain=scope, paused=True, reason=reason, rule=rule, resume_at=resume_at)
    return workspaces.set_paused(workspace=scope, paused=True, reason=reason, rule=rule, resume_at=resume_at)


def _resume(scope, *, note, now=None):
    from mailboxes.services import identities
    from workspaces import services as workspaces

    kind = kind_of(scope)
    if kind == "mailbox":
        return identities.resume_mailbox(mailbox=scope, reason=note, now=now)
    if kind == "domain":
        return identities.set_domain_paused(domain=scope, paused=False, note=note, now=now)
    return workspaces.set_paused(workspace=scope, paused=False, note=note, now=now)


# --- Judging ------------------------------------------------------------------------------

def _lock(kind, pk):
    """The scope row locked with the rows above it, always workspace → domain → mailbox: concurrent reports
    of one workspace are judged one after the other, each seeing the events of those before it."""
    models = _models()
    parents = {"workspace": ("pk", "pk"), "domain": ("workspace_id", "pk"), "mailbox": ("workspace_id", "domain_id")}
    ids = models[kind].objects.filter(pk=pk).values_list(*parents[kind]).first()
    if ids is None:
        return None
    workspace = models["workspace"].objects.select_for_update().get(pk=ids[0])
    if kind == "workspace":
        return workspace
    domain = models["domain"].objects.select_for_update().get(pk=ids[1])
    domain.workspace = workspace
    if kind == "domain":
        return domain
    mailbox = models["mailbox"].objects.select_for_update().get(pk=pk)
    mailbox.workspace, mailbox.domain = workspace, domain
    return mailbox


def judge(scope, *, now) -> list[str]:
    """Warns about or pauses one locked scope as its rates say; returns what changed ("warned", "cleared",
    "paused")."""
    if kind_of(scope) == "mailbox" and scope.status == "retired":
        return []
    found = health.findings(scope, health.rates(scope, now=now))
    changed = []
    warned = sorted({f.rule for f in found if f.level == "warn"})
    if warned != sorted(scope.health_warning_rules or []):
        crossing = _set_warning(scope, warned, " ".join(f.text for f in found if f.level == "warn"))
        changed += [crossing] if crossing else []
    pause = next((f for f in found if f.level == "pause"), None)
    can_pause = scope.status == "active" if kind_of(scope) == "mailbox" else not scope.paused
    if pause is not None and can_pause:
        resume_at = now + dt.timedelta(hours=scope.workspace.breaker_cooldown_hours)
        _pause(scope, reason=pause.text[:500], rule=pause.rule, resume_at=resume_at)
        changed.append("paused")
    return changed


def _set_warning(scope, rules, text) -> str | None:
    """Stores the scope's warning; audits a crossing: once when a rule starts warning, once when the last stops."""
    before = {"health_warning": scope.health_warning, "health_warning_rules": scope.health_warning_rules}
    crossed_up = bool(set(rules) - set(scope.health_warning_rules or []))
    scope.health_warning, scope.health_warning_rules = text[:1000], rules
    type(scope).objects.filter(pk=scope.pk).update(health_warning=scope.health_warning, health_warning_rules=rules)
    kind = kind_of(scope)
    if crossed_up or not rules:
        action = f"{kind}.health_warned" if crossed_up else f"{kind}.health_warning_cleared"
        audit.record(workspace=scope.workspace, action=action, obj=scope, before=before,
                     after={"health_warning": scope.health_warning, "health_warning_rules": rules})
        return "warned" if crossed_up else "cleared"
    return None


def check(*, mailbox_id, now=None) -> dict:
    """Judges a mailbox, its domain and its workspace, in that order (a mailbox's own pause answers for its
    sends before its domain's rates are read). Runs in the caller's transaction, e.g. an event's."""
    now = now or timezone.now()
    with transaction.atomic():
        mailbox = _lock("mailbox", mailbox_id)
        if mailbox is None:
            return {}
        return {kind_of(scope): changed for scope in (mailbox, mailbox.domain, mailbox.workspace)
                if (changed := judge(scope, now=now))}


# --- The periodic job ---------------------------------------------------------------------

def run(now=None) -> dict:
    """Resumes every scope whose cool-down has passed, then re-judges every scope that carries a warning (its
    rates move as sends age out of its window). Safe to run in several workers at once."""
    now = now or timezone.now()
    resumed, rejudged = [], 0
    with acting_as(JOB_ACTOR):
        for kind, model in _models().items():
            for pk in model.objects.filter(resume_at__lte=now).exclude(breaker_rule="").values_list("pk", flat=True):
                if _resume_if_due(kind, pk, now):
                    resumed.append(pk)
        for kind, model in _models().items():
            for pk in model.objects.exclude(health_warning_rules=[]).values_list("pk", flat=True):
                with transaction.atomic():
                    scope = _lock(kind, pk)
                    if scope is not None and judge(scope, now=now):
                        rejudged += 1
    return {"resumed": resumed, "rejudged": rejudged}


@transaction.atomic
def _resume_if_due(kind, pk, now) -> bool:
    scope = _lock(kind, pk)
    if scope is None or not scope.breaker_rule or scope.resume_at is None or scope.resume_at > now:
        return False
    if not is_paused(scope):
        return False
    hours = scope.workspace.breaker_cooldown_hours
    note = (f"The cool-down after the automatic pause by the {rule_label(scope.breaker_rule)} rule ended at "
            f"{scope.resume_at:%Y-%m-%d %H:%M} UTC ({hours} h after the pause, unless postponed).")
    _resume(scope, note=note, now=now)
    return True


# --- Overrides ------------------------------------------------------------------------------

class NotBreakerPaused(ValueError):
    pass


def _locked_breaker_pause(scope):
    scope = _lock(kind_of(scope), scope.pk)
    if scope is None or not scope.breaker_rule or not is_paused(scope):
        raise NotBreakerPaused(f"{scope} is not paused by a circuit breaker.")
    return scope


@transaction.atomic
def resume_now(*, scope, reason: str, now=None):
    """Resumes a scope a breaker paused before its cool-down ends (re-ramping like the automatic resume)."""
    scope = _locked_breaker_pause(scope)
    return _resume(scope, note=reason, now=now)


@transaction.atomic
def postpone_auto_resume(*, scope, hours: int, reason: str, now=None):
    """Moves the automatic resume `hours` later (from now, if it was cancelled)."""
    now = now or timezone.now()
    scope = _locked_breaker_pause(scope)
    before = {"resume_at": scope.resume_at}
    scope.resume_at = max(scope.resume_at or now, now) + dt.timedelta(hours=hours)
    type(scope).objects.filter(pk=scope.pk).update(resume_at=scope.resume_at)
    audit.record(workspace=scope.workspace, action=f"{kind_of(scope)}.auto_resume_postponed", obj=scope,
                 before=before, after={"resume_at": scope.resume_at, "reason": reason})
    return scope


@transaction.atomic
def cancel_auto_resume(*, scope, reason: str):
    """Keeps the scope paused until someone resumes it (the resume still re-ramps)."""
    scope = _locked_breaker_pause(scope)
    before = {"resume_at": scope.resume_at}
    scope.resume_at = None
    type(scope).objects.filter(pk=scope.pk).update(resume_at=None)
    audit.record(workspace=scope.workspace, action=f"{kind_of(scope)}.auto_resume_cancelled", obj=scope,
                 before=before, after={"resume_at": None, "reason": reason})
    return scope


# --- What the mailbox page shows ----------------------------------------------------------------

def state_for(mailbox, now=None) -> dict:
    """The breaker state of a mailbox, its domain and its workspace, with their rates and thresholds."""
    from mailboxes.services import caps

    now = now or timezone.now()
    rates = {"mailbox": health.rates(mailbox, now=now), **health.scope_rates(mailbox, now=now)}
    scopes = []
    for scope in (mailbox, mailbox.domain, mailbox.workspace):
        kind = kind_of(scope)
        figures = rates[kind]
        if scope.breaker_rule and is_paused(scope):
            state = "paused by a breaker"
        elif is_paused(scope):
            state = "paused by hand"
        else:
            state = "warning" if scope.health_warning_rules else "ok"
        scopes.append({
            "kind": kind, "name": str(scope), "state": state, "rule": rule_label(scope.breaker_rule)
            if scope.breaker_rule else "", "resume_at": scope.resume_at, "warning": scope.health_warning,
            "since": scope.health_since, "figures": figures,
            "judged": figures["sends"] >= scope.workspace.health_min_sends,
            "rules": [{"name": health.METRICS[metric], "rate": health.percent(figures[f"{metric}_rate"]),
                       "count": figures["hard_bounces" if metric == "hard_bounce" else "complaints"],
                       "warn": health.percent(warn), "pause": health.percent(pause)}
                      for metric, (warn, pause) in health.thresholds(scope).items()],
        })
    today = caps.local_day(mailbox, now)
    day = reramp_day(mailbox, today)
    reramp = None if day is None else {
        "day": day, "days": mailbox.reramp_days, "fraction": health.percent(mailbox.reramp_fraction),
        "allowance": reramp_allowance(mailbox, today), "started_at": mailbox.reramp_started_at,
    }
    return {"scopes": scopes, "reramp": reramp, "cooldown_hours": mailbox.workspace.breaker_cooldown_hours,
            "min_sends": mailbox.workspace.health_min_sends}
