"""RQ cron configuration for the daily DNS checks: `python manage.py rqcron mailboxes.dns.cron`.

A project-wide cron module should call `mailboxes.jobs.register_cron_jobs()` itself rather than
import this one (rqcron clears its registry before loading the module it is given).
"""

from mailboxes.jobs import register_cron_jobs

register_cron_jobs()
