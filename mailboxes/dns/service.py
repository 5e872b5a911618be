"""Running the DNS checks of domains and recording what they found: history, status, events, pauses, audit.

`run_checks(domain=...)` checks one domain now; `check_domains(domains=...)` checks many, the DNS work
spread over a bounded thread pool (`DNS_CHECK_CONCURRENCY`, default 48) while this thread writes the
results one domain at a time, so the database sees one writer whatever the pool size.

Effects of a run, all in the run's transaction:
- the domain's `checks`, `status` (the worst check) and `checked_at`, and a `DomainCheckRun` row;
- `domain.check_failed` when the status becomes `fail`; `domain.check_passed` when it becomes `pass` or
  `warn` after `fail` or before any verdict (an `unknown` run neither emits nor counts as a verdict);
- when the workspace's `pause_domains_on_auth_failure` is on (the default), a domain whose SPF, DKIM or
  DMARC fails is paused with a reason naming the failure; it is resumed once all three pass (or warn),
  but only while the pause is still the checks' own: an operator's pause is never lifted here. A domain
  an operator resumes while it still fails is paused again by the next run (turn the setting off to send
  regardless). A run whose SPF, DKIM or DMARC is `unknown` neither pauses nor resumes;
- an audit event `domain.check_status_changed` when any check's status changes.
"""

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from controlplane import events
from mailboxes.dns.checks import (
    AUTH_CHECKS, CHECK_LABELS, CHECK_NAMES, DomainFacts, OurKey, check_domain, result, worst,
)
from mailboxes.dns.resolver import Lookup, build_resolver
from mailboxes.models import DkimKey, DomainCheckRun, Mailbox, SendingDomain
from mailboxes.services import identities

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 48


def concurrency() -> int:
    return max(1, int(getattr(settings, "DNS_CHECK_CONCURRENCY", DEFAULT_CONCURRENCY)))


@dataclass
class Outcome:
    domain: SendingDomain
    run: DomainCheckRun

    @property
    def status(self) -> str:
        return self.run.status


def gather_facts(domains) -> dict:
    """{domain id: DomainFacts} in two queries, whatever the number of domains."""
    domains = list(domains)
    facts = {d.pk: DomainFacts(name=d.name) for d in domains}
    mailboxes = (Mailbox.objects.filter(domain_id__in=facts).exclude(status="retired")
                 .select_related("provider").only("domain_id", "provider__kind", "provider__settings"))
    for mailbox in mailboxes:
        entry = facts[mailbox.domain_id]
        entry.provider_kinds.add(mailbox.provider.kind)
        host = (mailbox.provider.settings or {}).get("host") if mailbox.provider.kind == "smtp" else None
        if host and host not in entry.smtp_hosts:
            entry.smtp_hosts.append(host)
    for key in DkimKey.objects.filter(domain_id__in=facts, retired_at__isnull=True).only(
            "domain_id", "selector", "public_key", "active"):
        facts[key.domain_id].our_keys.append(OurKey(key.selector, key.public_key, key.active))
    return facts


def evaluate(facts: DomainFacts, lookup: Lookup) -> tuple[dict, float, int]:
    """(results, started at epoch seconds, duration ms); never raises."""
    started = time.time()
    clock = time.monotonic()
    try:
        results = check_domain(facts, lookup)
    except Exception:  # a bug in one check must not stop a run of a thousand domains
        logger.exception("DNS checks of %s raised", facts.name)
        results = {name: result("unknown", f"The {CHECK_LABELS[name]} check could not run (internal error).")
                   for name in CHECK_NAMES}
    return results, started, int((time.monotonic() - clock) * 1000)


def run_checks(*, domain: SendingDomain, trigger: str = "manual", lookup: Lookup | None = None) -> DomainCheckRun:
    """Checks one domain now and records the run."""
    facts = gather_facts([domain])[domain.pk]
    results, started, duration_ms = evaluate(facts, lookup or Lookup(build_resolver()))
    return record_run(domain_id=domain.pk, results=results, started=started, duration_ms=duration_ms,
                      trigger=trigger)


def check_domains(*, domains, trigger: str = "manual", max_workers: int | None = None, on_done=None,
                  lookup: Lookup | None = None) -> list[Outcome]:
    """Checks many domains concurrently; `on_done(outcome)` is called for each as it is recorded."""
    domains = list(domains)
    if not domains:
        return []
    facts = gather_facts(domains)
    lookup = lookup or Lookup(build_resolver())
    outcomes = []
    with ThreadPoolExecutor(max_workers=min(max_workers or concurrency(), len(domains)),
                            thread_name_prefix="dns-check") as pool:
        futures = {pool.submit(evaluate, facts[d.pk], lookup): d.pk for d in domains}
        for future in as_completed(futures):
            domain_id = futures[future]
            results, started, duration_ms = future.result()
            try:
                run = record_run(domain_id=domain_id, results=results, started=started, duration_ms=duration_ms,
                                 trigger=trigger)
            except SendingDomain.DoesNotExist:
                continue  # deleted while it was being checked
            except Exception:  # one domain's failure to record must not lose the others' results
                logger.exception("Recording the DNS checks of domain %s failed", domain_id)
                continue
            outcome = Outcome(run.domain, run)
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
    return outcomes


def _last_verdict(domain: SendingDomain) -> str:
    """The latest status that was not `unknown` (or `unchecked`)."""
    if domain.status != "unknown":
        return domain.status
    previous = (DomainCheckRun.objects.filter(domain=domain).exclude(status="unknown")
                .order_by("-started_at").values_list("status", flat=True).first())
    return previous or "unchecked"


def pause_reason(results: dict) -> str:
    failing = [f"{CHECK_LABELS[name]} failing: {results[name]['message']}"
               for name in AUTH_CHECKS if results[name]["status"] == "fail"]
    reason = " ".join(failing)
    return reason if len(reason) <= 500 else reason[:499] + "…"


@transaction.atomic
def record_run(*, domain_id, results: dict, started: float, duration_ms: int, trigger: str) -> DomainCheckRun:
    domain = SendingDomain.objects.select_for_update(of=("self",)).select_related("workspace").get(pk=domain_id)
    workspace = domain.workspace
    now = timezone.now()
    status = worst(r["status"] for r in results.values())
    previous_status = domain.status
    previous_checks = domain.checks or {}
    verdict_before = _last_verdict(domain)
    changes = []
    for name in CHECK_NAMES:
        before = (previous_checks.get(name) or {}).get("status", "unchecked")
        if before != results[name]["status"]:
            changes.append({"check": name, "before": before, "after": results[name]["status"],
                            "message": results[name]["message"]})

    domain.checks = results
    domain.status = status
    domain.checked_at = now
    domain.save(update_fields=["checks", "status", "checked_at", "updated_at"])
    run = DomainCheckRun.objects.create(
        domain=domain, started_at=dt.datetime.fromtimestamp(started, tz=dt.timezone.utc),
        duration_ms=duration_ms, trigger=trigger, status=status, previous_status=previous_status,
        checks=results, changes=changes,
    )
    if changes:
        audit.record(workspace=workspace, action="domain.check_status_changed", obj=domain,
                     before={"status": previous_status, **{c["check"]: c["before"] for c in changes}},
                     after={"status": status, **{c["check"]: c["after"] for c in changes}})

    event_data = {
        "domain": {"id": domain.pk, "name": domain.name},
        "status": status,
        "previous_status": verdict_before,
        "checks": {name: {"status": r["status"], "message": r["message"]} for name, r in results.items()},
        "changes": changes,
        "run": run.pk,
    }
    if status == "fail" and verdict_before != "fail":
        events.emit(workspace=workspace, type="domain.check_failed", data=event_data)
    elif status in ("pass", "warn") and verdict_before in ("fail", "unchecked"):
        events.emit(workspace=workspace, type="domain.check_passed", data=event_data)

    if _apply_pause_policy(domain, results):
        domain.refresh_from_db(fields=["paused", "paused_reason", "check_pause_reason"])
    return run


def _apply_pause_policy(domain: SendingDomain, results: dict) -> bool:
    """Pauses or resumes the domain as its SPF, DKIM and DMARC results say; True if anything changed."""
    auth = [results[name]["status"] for name in AUTH_CHECKS]
    paused_by_checks = domain.paused and bool(domain.check_pause_reason) and \
        domain.paused_reason == domain.check_pause_reason
    if "fail" in auth:
        if not domain.workspace.pause_domains_on_auth_failure:
            return False
        reason = pause_reason(results)
        if not domain.paused or (paused_by_checks and domain.paused_reason != reason):
            identities.set_domain_paused(domain=domain, paused=True, reason=reason)
            SendingDomain.objects.filter(pk=domain.pk).update(check_pause_reason=reason)
            return True
        return False
    if "unknown" in auth:
        return False  # cannot tell whether authentication works again: a pause stays, no pause starts
    changed = False
    if paused_by_checks:
        identities.set_domain_paused(domain=domain, paused=False)
        changed = True
    if domain.check_pause_reason:
        SendingDomain.objects.filter(pk=domain.pk).update(check_pause_reason="")
        changed = True
    return changed
