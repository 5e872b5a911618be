"""Under load nothing is lost: a few hundred events while the receiver fails half its requests and then recovers,
worked by concurrent RQ worker processes; every event id reaches the receiver, each delivery once."""

import collections
import os
import random
import subprocess
import sys
import threading

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction

from controlplane import events
from controlplane.models import Event, WebhookDelivery
from tests.webhooks.conftest import create, verified

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = 300
BATCH = 50
FLAKY_REQUESTS = 400  # the first 400 requests fail half the time; then the receiver has recovered
RETRIES = 20


class FlakyReceiver:
    """Answers 500 to a random half of the first FLAKY_REQUESTS requests, then 200 to everything."""

    def __init__(self, receiver):
        self.lock = threading.Lock()
        self.random = random.Random(20240611)
        self.seen = 0
        self.acknowledged = collections.Counter()
        self.refused = 0
        receiver.default = self.answer

    def answer(self, handler):
        with self.lock:
            self.seen += 1
            if self.seen <= FLAKY_REQUESTS and self.random.random() < 0.5:
                self.refused += 1
                return 500, {}, "overloaded"
            self.acknowledged[handler.headers["webhook-id"]] += 1
            return 200, {}, ""


def worker_processes(count):
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": django_settings.RQ_QUEUES["webhooks"]["URL"], "DEBUG": "true",
           "WEBHOOKS_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_DELAYS": ",".join(["0"] * RETRIES)}
    # SimpleWorker runs each job in the worker process itself (no fork per job): the same claims, much faster.
    command = [sys.executable, "manage.py", "rqworker", "webhooks", "--burst", "--worker-class", "rq.SimpleWorker"]
    return [subprocess.Popen(command, env=env,
                             cwd=django_settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]


def test_hundreds_of_events_through_a_flaky_receiver_all_arrive(api, workspace, receiver, loopback_allowed, settings,
                                                                run_webhook_workers):
    settings.WEBHOOK_RETRY_DELAYS = [0] * RETRIES
    flaky = FlakyReceiver(receiver)
    endpoint = create(api, receiver.url).json()

    emitted, workers = [], []
    for start in range(0, EVENTS, BATCH):
        with transaction.atomic():
            emitted += [events.emit(workspace=workspace, type="suppression.created", data={"value": f"p{n}@x.example"})
                        for n in range(start, start + BATCH)]
        if not workers:
            workers = worker_processes(2)  # they work while the rest is emitted
    for worker in workers:
        assert worker.wait(timeout=240) == 0
    run_webhook_workers()  # whatever the burst workers left when they found the queue empty for a moment

    ids = [e.id for e in emitted]
    assert len(set(ids)) == EVENTS == Event.objects.filter(workspace=workspace).count()
    assert flaky.refused > 100, "the receiver must really have failed half the time"
    assert set(flaky.acknowledged) == set(ids)  # every event accounted for
    assert max(flaky.acknowledged.values()) == 1  # and acknowledged once: no attempt ran twice
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint["id"])
    assert deliveries.count() == EVENTS and set(deliveries.values_list("status", flat=True)) == {"succeeded"}
    assert sum(deliveries.values_list("attempts", flat=True)) == flaky.seen
    sample = receiver.requests[-1]
    assert verified(endpoint["secret"], sample)["type"] == "suppression.created"
