"""Periodic jobs, run by `manage.py rqcron controlplane.cron` (started by `make up` and the worker process)."""

from rq.cron import register

# Re-enqueue due messages that have no live job and release stale leases (nothing is lost).
register("controlplane.dispatch.reconcile", queue_name="default", interval=60, name="reconcile")
