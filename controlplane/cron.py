"""Periodic jobs, run by `manage.py rqcron controlplane.cron` (started by `runworker`)."""

from rq.cron import register

from controlplane.dispatch import reconcile
from controlplane.retention import enforce_all
from mailboxes.jobs import register_cron_jobs

# Re-enqueue due messages that have no live job and release stale leases (nothing is lost).
# Idempotent, so several worker processes each running this schedule do no harm.
register(reconcile, queue_name="default", interval=60, name="reconcile")
# Retention of message content, events and audit events, daily at 03:30 UTC.
register(enforce_all, queue_name="default", cron="30 3 * * *", name="retention")
# The daily DNS checks of every domain.
register_cron_jobs()
