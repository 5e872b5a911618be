"""Mailbox health (contract §4.6): bounce and complaint rates over recent sends pause a mailbox, with the reason."""

import hashlib
import hmac
import json
import time
import uuid

import pytest
import responses
from django.test import Client

from audit.models import AuditEvent
from tests.providers.conftest import make_mailbox

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "health-signing-key"


@pytest.fixture
def mailgun(workspace, settings):
    settings.DISPATCH_RETRY_DELAYS = [0, 0]
    return make_mailbox(workspace, "mailgun", settings={"domain": "mail.acme.com"},
                        credentials={"api_key": "key-x", "webhook_signing_key": KEY})


def send_many(api, run_workers, mailbox, count):
    def accepted(request):
        return 200, {}, json.dumps({"id": f"<{uuid.uuid4().hex}@mail.acme.com>", "message": "Queued. Thank you."})

    batch = {"messages": [{"to": f"lead{i}@example.com", "from": mailbox.address, "subject": "Hello",
                           "text": "Hi"} for i in range(count)]}
    with responses.RequestsMock() as fake:
        fake.add_callback(responses.POST, "https://api.mailgun.net/v3/mail.acme.com/messages.mime", callback=accepted)
        answer = api.post("/api/v1/messages/batch", batch, format="json")
        assert answer.status_code == 200 and all("id" in r for r in answer.json()["results"])
        run_workers()
    sent = api.get("/api/v1/messages", {"status": "sent", "limit": 1000}).json()["results"]
    assert len(sent) == count
    return sorted(sent, key=lambda m: m["to"])


def report(mailbox, message, event, **extra):
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    signature = hmac.new(KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    data = {"id": uuid.uuid4().hex[:22], "timestamp": time.time(), "event": event, "recipient": message["to"],
            "message": {"headers": {"message-id": message["provider_message_id"].strip("<>"), "to": message["to"]}},
            **extra}
    answer = Client().post(f"/hooks/mailgun/{mailbox.provider.pk}/", content_type="application/json",
                           data=json.dumps({"signature": {"timestamp": timestamp, "token": token,
                                                          "signature": signature}, "event-data": data}))
    assert answer.status_code == 200, answer.content


def mailbox_view(api, mailbox):
    return api.get(f"/api/v1/mailboxes/{mailbox.pk}").json()


def test_25_hard_bounces_in_100_sends_pause_the_mailbox(api, workspace, run_workers, mailgun):
    sent = send_many(api, run_workers, mailgun, 100)
    for message in sent[:25]:
        report(mailgun, message, "failed", severity="permanent", reason="bounce")
    shown = mailbox_view(api, mailgun)
    assert shown["status"] == "paused"
    assert shown["paused_reason"].startswith("Hard-bounce rate 6.0% (6 of the last 100 sends) passes the "
                                             "workspace threshold of 5.0%")
    paused = api.get("/api/v1/events", {"type": "mailbox.paused"}).json()["results"]
    assert len(paused) == 1 and paused[0]["data"]["mailbox"] == mailgun.pk
    assert paused[0]["data"]["reason"] == shown["paused_reason"]
    assert AuditEvent.objects.filter(workspace=workspace, action="mailbox.paused", object_id=mailgun.pk).count() == 1
    assert len(api.get("/api/v1/suppressions", {"limit": 1000}).json()["results"]) == 25
    refused = api.post("/api/v1/messages", {"to": "new@example.com", "from": mailgun.address, "subject": "x",
                                            "text": "y"}, format="json")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "mailbox_paused"


def test_rates_at_the_threshold_or_over_too_few_sends_do_not_pause(api, workspace, run_workers, mailgun):
    sent = send_many(api, run_workers, mailgun, 100)
    for message in sent[:5]:  # exactly 5 %: does not pass 5 %
        report(mailgun, message, "failed", severity="permanent", reason="bounce")
    for message in sent[5:30]:  # soft bounces do not count
        report(mailgun, message, "failed", severity="temporary", reason="generic")
    assert mailbox_view(api, mailgun)["status"] == "active"


def test_too_few_sends_are_not_judged(api, workspace, run_workers, mailgun):
    sent = send_many(api, run_workers, mailgun, 10)
    for message in sent[:4]:
        report(mailgun, message, "failed", severity="permanent", reason="bounce")
    assert mailbox_view(api, mailgun)["status"] == "active"


def test_complaints_pause_at_the_complaint_threshold(api, workspace, run_workers, mailgun):
    sent = send_many(api, run_workers, mailgun, 100)
    report(mailgun, sent[0], "complained")
    shown = mailbox_view(api, mailgun)
    assert shown["status"] == "paused" and shown["paused_reason"].startswith("Complaint rate 1.0% (1 of the last 100")
