"""The Redis server itself dies mid-burst and comes back empty: intake keeps accepting, readiness says so,
and after the reconciler runs every message is sent, once."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from controlplane import dispatch
from controlplane.models import Message
from scripts import servers

pytestmark = pytest.mark.django_db(transaction=True)


class OwnRedis:
    """A redis-server process of this test's own, stopped and started again on the same port (empty)."""

    def __init__(self):
        self.port = servers.free_port()
        self.directory = tempfile.mkdtemp(prefix="cp-redis-restart-")
        self._running = None
        self.url = None

    def start(self):
        self._running = servers.redis(port=self.port, directory=self.directory)
        self.url = self._running.__enter__()
        return self

    def stop(self):
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None


@pytest.fixture
def own_redis(settings):
    redis = OwnRedis().start()
    settings.REDIS_URL = redis.url
    settings.RQ_QUEUES = {name: {"URL": redis.url, "DEFAULT_TIMEOUT": 300} for name in django_settings.RQ_QUEUE_NAMES}
    yield redis
    redis.stop()
    shutil.rmtree(redis.directory, ignore_errors=True)


def run_burst():
    import django_rq
    from rq import SimpleWorker

    queues = [django_rq.get_queue(name) for name in ("dispatch", "default")]
    SimpleWorker(queues, connection=django_rq.get_connection("dispatch")).work(burst=True)


def worker_process(redis_url):
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_url, "DISPATCH_LEASE_SECONDS": "2", "DISPATCH_RETRY_DELAYS": "0,0"}
    return subprocess.Popen([sys.executable, "manage.py", "rqworker", "dispatch", "--burst"], env=env,
                            cwd=django_settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_redis_dies_mid_burst_and_comes_back_empty(api, client, sending_setup, smtp_sink, own_redis):
    original = smtp_sink.handler.handle_DATA

    async def slow_data(server, session, envelope):
        await asyncio.sleep(0.05)
        return await original(server, session, envelope)

    smtp_sink.handler.handle_DATA = slow_data
    for mailbox in sending_setup["mailboxes"]:
        mailbox.daily_cap, mailbox.weekly_cap = 200, 1000
        mailbox.save()
    before = [f"before{n}@example.com" for n in range(24)]
    for address in before:
        assert api.post("/api/v1/messages", {"to": address, "subject": "s", "text": "t"},
                        format="json").status_code == 202

    worker = worker_process(own_redis.url)
    deadline = time.monotonic() + 60
    while len(smtp_sink.messages) < 5 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    own_redis.stop()  # the server process goes away, and every queued job with it
    sent_at_crash = len(smtp_sink.messages)
    assert 0 < sent_at_crash < len(before), "Redis must die mid-burst"
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()

    during = [f"during{n}@example.com" for n in range(5)]
    for address in during:  # intake does not need Redis: the database is the truth
        assert api.post("/api/v1/messages", {"to": address, "subject": "s", "text": "t"},
                        format="json").status_code == 202
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["fields"]["redis"].startswith("error")

    own_redis.start()  # back, empty
    assert client.get("/readyz").status_code == 200
    time.sleep(2.1)  # a lease held by the worker when Redis died expires
    assert dispatch.reconcile()["enqueued"] > 0
    assert dispatch.reconcile()["enqueued"] == 0  # the jobs are live now: nothing queued twice
    run_burst()

    recipients = smtp_sink.recipients()
    assert sorted(set(recipients)) == sorted(before + during), "nothing lost"
    assert len(recipients) - len(set(recipients)) <= 1, "only a send in flight at the crash may go twice"
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
