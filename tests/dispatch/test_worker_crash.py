"""kill -9 a real worker process mid-burst: after a reconciler run every message is sent, and only what was in
flight at the kill (a message per connection at most) may go twice."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection

from controlplane import dispatch
from controlplane.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def _worker_env():
    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["DISPATCH_LEASE_SECONDS"] = "2"
    env["DISPATCH_RETRY_DELAYS"] = "0,0"
    env["REDIS_URL"] = django_settings.REDIS_URL
    return env


def test_killed_worker_loses_nothing_and_repeats_only_what_was_in_flight(api, sending_setup, smtp_sink, run_workers):
    original = smtp_sink.handler.handle_DATA

    async def slow_data(server, session, envelope):
        await asyncio.sleep(0.05)
        return await original(server, session, envelope)

    smtp_sink.handler.handle_DATA = slow_data
    for mailbox in sending_setup["mailboxes"]:
        mailbox.daily_cap = 200
        mailbox.weekly_cap = 1000
        mailbox.save()
    total = 60
    for n in range(total):
        assert api.post("/api/v1/messages", {"to": f"k{n}@example.com", "subject": "s", "text": "t"},
                        format="json").status_code == 202
    worker = subprocess.Popen([sys.executable, "manage.py", "rqworker", "dispatch", "--burst"],
                              env=_worker_env(), cwd=django_settings.BASE_DIR,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(smtp_sink.messages) < 10 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    delivered_before = len(smtp_sink.messages)
    assert 0 < delivered_before < total, "the worker must die mid-burst"

    time.sleep(2.1)  # let the dead worker's lease expire
    # The burst is one claimed batch: what the server accepted before the kill is in the journal, unapplied,
    # but for the message in flight on each of the worker's connections (one per mailbox).
    connections = len(sending_setup["mailboxes"])
    assert dispatch.reconcile()["recorded"] >= delivered_before - connections
    run_workers()
    recipients = smtp_sink.recipients()
    assert sorted(set(recipients)) == sorted(f"k{n}@example.com" for n in range(total))
    duplicates = len(recipients) - len(set(recipients))
    assert duplicates <= connections, "only the message in flight on each connection at the kill may go twice"
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    # What the dead worker had journaled was recorded by the reconciler: one `message.sent` event a message.
    from controlplane.models import Event, HandOff

    sent_events = list(Event.objects.filter(type="message.sent").values_list("message_id", flat=True))
    assert len(sent_events) == len(set(sent_events)) == total
    assert not HandOff.objects.exists()
