"""The `worker` process: RQ workers on every queue with the scheduler, plus the periodic jobs.

`rqworker … --with-scheduler` releases jobs queued for later (retries, scheduled sends);
a child `rqcron controlplane.cron` enqueues the periodic jobs (reconciler, daily DNS checks).
`--processes N` (or `WORKER_PROCESSES`) runs N RQ workers, about one per core: a worker keeps a
message in flight on each mailbox connection of its job, so it seldom waits on one server.
Stopping this process stops them all.
"""

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the RQ worker (all queues, with scheduler) and the periodic-job scheduler."

    def add_arguments(self, parser):
        parser.add_argument("--no-cron", action="store_true", help="Do not start the periodic-job scheduler.")
        parser.add_argument("--burst", action="store_true", help="Exit when the queues are empty.")
        parser.add_argument("--processes", type=int, default=int(os.environ.get("WORKER_PROCESSES", "1")),
                            help="RQ worker processes to run (default: WORKER_PROCESSES or 1).")

    def handle(self, *args, **options):
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = []
        if not options["no_cron"]:
            children.append(subprocess.Popen([*manage, "rqcron", "controlplane.cron"], cwd=settings.BASE_DIR))
        burst = ["--burst"] if options["burst"] else []
        for _ in range(max(options["processes"], 1) - 1):
            children.append(subprocess.Popen([*manage, "rqworker", *settings.RQ_QUEUE_NAMES, "--with-scheduler", *burst],
                                             cwd=settings.BASE_DIR))
        try:
            call_command("rqworker", *settings.RQ_QUEUE_NAMES, with_scheduler=True, burst=options["burst"])
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
