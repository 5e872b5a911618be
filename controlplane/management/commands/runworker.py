"""The `worker` process: RQ workers on every queue with the scheduler, plus the periodic jobs.

`rqworker … --with-scheduler` releases jobs queued for later (retries, scheduled sends);
a child `rqcron controlplane.cron` enqueues the periodic jobs (reconciler, daily DNS checks).
Stopping this process stops both.
"""

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

    def handle(self, *args, **options):
        cron = None
        if not options["no_cron"]:
            cron = subprocess.Popen([sys.executable, str(settings.BASE_DIR / "manage.py"), "rqcron",
                                     "controlplane.cron"], cwd=settings.BASE_DIR)
        try:
            call_command("rqworker", *settings.RQ_QUEUE_NAMES, with_scheduler=True, burst=options["burst"])
        finally:
            if cron is not None and cron.poll() is None:
                cron.send_signal(signal.SIGTERM)
                try:
                    cron.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    cron.kill()
