"""`runworker --processes N` runs N RQ workers that share the queues."""

import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from controlplane.queues import queue

pytestmark = pytest.mark.django_db(transaction=True)


def test_several_worker_processes_share_the_jobs(process_env, redis_conn):
    jobs = [queue("default").enqueue("tests.commands.jobs.note_worker", 1.0) for _ in range(8)]
    run = subprocess.run([sys.executable, "manage.py", "runworker", "--burst", "--no-cron", "--processes", "3"],
                         env=process_env, cwd=django_settings.BASE_DIR, timeout=120, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    pids = [job.latest_result().return_value for job in jobs]
    assert all(pids), "every job ran"
    assert len(set(pids)) > 1, "the jobs were shared between processes"
