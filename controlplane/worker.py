"""The RQ worker class of the `worker` process: jobs run in the worker process itself.

RQ's default worker forks a process per job, which costs more than handing off a message and closes
every provider connection after each job. Here jobs share the process, so SMTP connections stay open
between jobs (one per mailbox, closed when idle), and the database connection is checked before
and after each job the way Django checks it around a request.
"""

from django.db import close_old_connections
from rq import SimpleWorker


class Worker(SimpleWorker):
    def perform_job(self, job, queue, *args, **kwargs):
        close_old_connections()
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            close_old_connections()
