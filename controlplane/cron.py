"""Periodic jobs, run by `manage.py rqcron controlplane.cron` (started by `runworker`)."""

from rq.cron import register

from controlplane.dispatch import reconcile
from controlplane.retention import enforce_all
from controlplane.stats.services import fold_all as fold_daily_counts
from controlplane.webhooks import reconcile as reconcile_webhooks
from providers.bounces import enqueue_all as read_bounces
from providers.suppression_sync import enqueue_all as sync_provider_suppressions
from mailboxes.jobs import register_cron_jobs
from mailboxes.services.breakers import run as run_breakers

# Re-enqueue due messages that have no live job and release stale leases (nothing is lost).
# Idempotent, so several worker processes each running this schedule do no harm.
register(reconcile, queue_name="default", interval=60, name="reconcile")
# Webhook deliveries that are due and have no live job (nothing lost if Redis was flushed).
register(reconcile_webhooks, queue_name="webhooks", interval=60, name="webhooks-reconcile")
# Bounce reports (RFC 3464) from the mailboxes' inboxes, read-only.
register(read_bounces, queue_name="default", interval=300, name="imap-bounces")
# ESP suppression lists (SES, Postmark, SendGrid) imported, and our removals pushed back, hourly.
register(sync_provider_suppressions, queue_name="default", interval=3600, name="provider-suppression-sync")
# Circuit breakers: resume scopes whose cool-down has passed, re-judge warnings. Idempotent under concurrency.
register(run_breakers, queue_name="default", interval=60, name="circuit-breakers")
# Retention of message content, events and audit events, daily at 03:30 UTC.
register(enforce_all, queue_name="default", cron="30 3 * * *", name="retention")
# The charts' daily counts: fold in the changes the database triggers wrote.
register(fold_daily_counts, queue_name="default", interval=60, name="daily-counts")
# The daily DNS checks of every domain.
register_cron_jobs()
