"""Periodic jobs, run by `manage.py rqcron controlplane.cron` (started by `runworker`)."""

from rq.cron import register

from controlplane.dispatch import reconcile
from mailboxes.jobs import register_cron_jobs

# Re-enqueue due messages that have no live job and release stale leases (nothing is lost).
# Idempotent, so several worker processes each running this schedule do no harm.
register(reconcile, queue_name="default", interval=60, name="reconcile")
# The daily DNS checks of every domain.
register_cron_jobs()
