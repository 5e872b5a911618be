"""The RQ worker class of the `worker` process: jobs run in the worker process itself.

RQ's default worker forks a process per job, which costs more than handing off a message and closes
every provider connection after each job. Here jobs share the process, so SMTP connections stay open
between jobs (one per mailbox, closed when idle), and the database connection is checked before
and after each job the way Django checks it around a request.

The modules of its jobs and the provider transports are loaded when the worker starts, not by its
first job, so that a worker started ahead of a burst is ready for it.
"""

from importlib import import_module

from django.db import close_old_connections
from rq import SimpleWorker

from controlplane import runtime
from providers.base import load_transports

JOB_MODULES = ("controlplane.dispatch", "controlplane.webhooks", "mailboxes.jobs")

for module in JOB_MODULES:
    import_module(module)
load_transports()


class Worker(SimpleWorker):
    def work(self, *args, **kwargs):
        runtime.settle()  # all loaded: what is alive now lives as long as the process
        return super().work(*args, **kwargs)

    def perform_job(self, job, queue, *args, **kwargs):
        close_old_connections()
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            close_old_connections()
