"""RQ jobs of the mailboxes app: the DNS checks of sending domains, on the `dns` queue.

- `check_domain(domain_id, trigger)`: one domain (on create, on demand, from the admin).
- `check_all_domains(trigger="schedule")`: every domain of every workspace, concurrently (bounded pool).
- `daily_domain_checks()`: the daily run. It is a cron job of RQ's CronScheduler: `register_cron_jobs()`
  registers it (`controlplane/cron.py` calls it; `mailboxes.dns.cron` is a config of its own), so
  `rqcron` enqueues it every day at `DNS_CHECK_CRON` (default "0 6 * * *", the scheduler's local
  time). Every worker process runs its own cron scheduler, so each enqueues it: the first job of
  the day takes a lock in Redis and the others return at once.

Jobs carry ids, load the rows themselves, and act as the system actor "domain checks".
"""

import logging

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.context import Actor, acting_as
from mailboxes.dns import service
from mailboxes.models import SendingDomain

logger = logging.getLogger(__name__)

QUEUE = "dns"
JOB_ACTOR = Actor("system", "", "domain checks")
DEFAULT_CRON = "0 6 * * *"
# A full run of 1,000 domains takes well under a minute; leave room for slow resolvers.
ALL_DOMAINS_TIMEOUT = 3600
DAILY_LOCK_PREFIX = "controlplane:dns:daily-checks:"
DAILY_LOCK_SECONDS = 20 * 3600


def check_domain(domain_id: str, trigger: str = "manual"):
    with acting_as(JOB_ACTOR):
        domain = SendingDomain.objects.filter(pk=domain_id).first()
        if domain is None:
            return None
        run = service.run_checks(domain=domain, trigger=trigger)
        return {"domain": domain_id, "status": run.status}


def check_all_domains(trigger: str = "schedule", workspace_id: str | None = None):
    with acting_as(JOB_ACTOR):
        domains = SendingDomain.objects.order_by("pk")
        if workspace_id:
            domains = domains.filter(workspace_id=workspace_id)
        outcomes = service.check_domains(domains=domains, trigger=trigger)
        counts = {}
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        logger.info("Checked %d domains: %s", len(outcomes), counts)
        return {"checked": len(outcomes), "statuses": counts}


def daily_domain_checks():
    today = timezone.now().date().isoformat()
    connection = django_rq.get_connection(QUEUE)
    if not connection.set(f"{DAILY_LOCK_PREFIX}{today}", "1", nx=True, ex=DAILY_LOCK_SECONDS):
        logger.info("The daily DNS checks of %s already ran or are running", today)
        return {"skipped": today}
    return check_all_domains(trigger="schedule")


def enqueue_domain_check(domain_id: str, trigger: str = "manual"):
    """Queues a check of one domain once the current transaction commits."""

    def enqueue():
        try:
            django_rq.get_queue(QUEUE).enqueue(check_domain, domain_id, trigger, job_timeout=300,
                                               description=f"DNS checks of domain {domain_id}")
        except Exception:  # Redis down: the daily run and "check now" remain
            logger.exception("Could not queue the DNS checks of domain %s", domain_id)

    transaction.on_commit(enqueue)


def register_cron_jobs(register=None):
    """Registers the daily check with RQ's cron (`rq.cron.register`, or a CronScheduler's `register`)."""
    if register is None:
        from rq import cron

        register = cron.register
    return register(daily_domain_checks, QUEUE,
                    cron=getattr(settings, "DNS_CHECK_CRON", DEFAULT_CRON), job_timeout=ALL_DOMAINS_TIMEOUT,
                    name="daily-domain-checks")
