"""An SMTP server that accepts the connection and then never answers: the attempt times out, the
message is deferred and retried, and its mailbox keeps sending once the server is healthy again."""

import time

import pytest

from controlplane.models import Message
from providers.services import update_connection
from tests.resilience.helpers import SilentSmtpServer, enqueue_due_retries

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def silent_server():
    server = SilentSmtpServer().start()
    yield server
    server.stop()


def point_provider_at(provider, port):
    return update_connection(connection=provider,
                             settings={"host": "127.0.0.1", "port": port, "security": "none"})


def test_a_silent_server_times_out_and_the_mailbox_is_not_blocked(api, sending_setup, smtp_sink, run_workers,
                                                                  redis_conn, silent_server, settings):
    settings.SMTP_TIMEOUT_SECONDS = 1
    settings.DISPATCH_RETRY_DELAYS = [4]  # the retry is not due while the second send goes
    mailbox = sending_setup["mailboxes"][0]
    provider = point_provider_at(sending_setup["provider"], silent_server.port)

    first = api.post("/api/v1/messages", {"to": "first@example.com", "from": mailbox.address, "subject": "Hi",
                                          "text": "One"}, format="json").json()
    started = time.monotonic()
    run_workers()
    elapsed = time.monotonic() - started
    assert silent_server.accepted, "the worker did connect"
    assert 0.9 <= elapsed < 5, f"the attempt should give up after about 1 s, took {elapsed:.1f} s"

    deferred = api.get(f"/api/v1/messages/{first['id']}").json()
    assert deferred["status"] == "deferred"
    event = [e for e in deferred["events"] if e["type"] == "message.deferred"][-1]
    assert "timed out" in event["data"]["reply"]
    assert Message.objects.get(pk=first["id"]).lease_expires_at is None

    point_provider_at(provider, smtp_sink.port)  # the server is healthy again
    second = api.post("/api/v1/messages", {"to": "second@example.com", "from": mailbox.address, "subject": "Hi",
                                           "text": "Two"}, format="json").json()
    run_workers()
    assert api.get(f"/api/v1/messages/{second['id']}").json()["status"] == "sent"
    assert smtp_sink.recipients() == ["second@example.com"]

    retry_at = Message.objects.get(pk=first["id"]).scheduled_at
    from django.utils import timezone

    time.sleep(max(0.0, (retry_at - timezone.now()).total_seconds()) + 0.2)
    enqueue_due_retries(redis_conn)
    run_workers()
    assert api.get(f"/api/v1/messages/{first['id']}").json()["status"] == "sent"
    assert sorted(smtp_sink.recipients()) == ["first@example.com", "second@example.com"]
    assert Message.objects.get(pk=first["id"]).attempts == 2


def test_the_default_smtp_timeout_stays_thirty_seconds(settings):
    from providers import smtp

    del settings.SMTP_TIMEOUT_SECONDS
    assert smtp.timeout_seconds() == 30
