"""Providers in a bad mood: SMTP servers answering 421/451 again and again, an ESP answering 429 and 503.
Retries back off, unpinned sends move to another mailbox, no mailbox goes over its cap, and no
message is handed off twice."""

import collections
import json
import time
import uuid

import pytest
import responses
from django.utils import timezone

from controlplane.models import Event, Message
from mailboxes.models import MailboxDailyUsage, Pool
from tests.api.helpers import assert_error
from tests.providers.conftest import make_mailbox
from tests.resilience.helpers import enqueue_due_retries

pytestmark = pytest.mark.django_db(transaction=True)

POSTMARK = "https://api.postmarkapp.com/email"


def sent_by_mailbox(sink):
    counts = collections.Counter()
    for mail_from, rcpts, _ in sink.messages:
        counts[mail_from] += len(rcpts)
    return counts


def assert_ledger_matches_handoffs():
    """The usage ledger holds exactly the sends that went out or still wait: nothing leaked, nothing lost."""
    ledger = collections.Counter()
    for mailbox_id, count in MailboxDailyUsage.objects.values_list("mailbox_id", "count"):
        ledger[mailbox_id] += count
    holding = collections.Counter(Message.objects.filter(status__in=["sent", "queued", "scheduled", "deferred"])
                                  .values_list("mailbox_id", flat=True))
    assert +ledger == +holding


def set_caps(mailboxes, daily):
    for mailbox in mailboxes:
        mailbox.daily_cap = daily
        mailbox.save(update_fields=["daily_cap"])


def test_an_smtp_421_451_storm_is_ridden_out_without_duplicates(api, sending_setup, smtp_sink, run_workers, settings):
    settings.DISPATCH_RETRY_DELAYS = [0, 0]
    mailboxes = sending_setup["mailboxes"]
    set_caps(mailboxes, 10)
    storm = ["451 4.3.0 Try again later", "421 4.7.0 Too many connections, slow down"] * 15
    smtp_sink.handler.replies.extend(storm)
    total = 12
    for n in range(total):
        assert api.post("/api/v1/messages", {"to": f"s{n}@example.com", "subject": "Hi", "text": "Hello"},
                        format="json").status_code == 202
    run_workers()

    recipients = smtp_sink.recipients()
    assert sorted(recipients) == sorted(f"s{n}@example.com" for n in range(total)), "each sent exactly once"
    assert not smtp_sink.handler.replies, "the whole storm was met"
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert Event.objects.filter(type="message.deferred").count() == len(storm)
    assert Message.objects.exclude(decision__failover_from=None).exists(), "a send that kept failing moved on"
    for address, count in sent_by_mailbox(smtp_sink).items():
        assert count <= 10, (address, count)
    assert_ledger_matches_handoffs()


def test_a_storm_never_pushes_a_mailbox_over_its_cap(api, sending_setup, smtp_sink, run_workers, settings):
    settings.DISPATCH_RETRY_DELAYS = [0, 0]
    mailboxes = sending_setup["mailboxes"]
    set_caps(mailboxes, 4)  # 12 sends fill all three: a failing send can only move into a slot given back
    smtp_sink.handler.replies.extend(["451 4.3.0 Try again later"] * 30)
    for n in range(12):
        assert api.post("/api/v1/messages", {"to": f"c{n}@example.com", "subject": "Hi", "text": "Hello"},
                        format="json").status_code == 202
    assert_error(api.post("/api/v1/messages", {"to": "over@example.com", "subject": "Hi", "text": "Hello"},
                          format="json"), 422, "cap_exhausted")
    run_workers()

    statuses = collections.Counter(Message.objects.values_list("status", flat=True))
    assert set(statuses) <= {"sent", "failed"} and sum(statuses.values()) == 12
    assert statuses["failed"] >= 1  # the first to exhaust its retries finds every other mailbox full
    recipients = smtp_sink.recipients()
    assert len(recipients) == len(set(recipients)) == statuses["sent"]
    for address, count in sent_by_mailbox(smtp_sink).items():
        assert count <= 4, (address, count)
    for message in Message.objects.filter(status="failed"):
        assert message.provider_response.startswith("451")
    assert_ledger_matches_handoffs()
    usage = {m["address"]: m["usage"] for m in api.get("/api/v1/mailboxes").json()["results"]}
    assert sum(u["today"] for u in usage.values()) == statuses["sent"]


def test_an_esp_429_and_503_storm_backs_off_and_hands_off_once(api, workspace, run_workers, redis_conn, settings):
    settings.DISPATCH_RETRY_DELAYS = [0, 0, 0]
    mailbox = make_mailbox(workspace, "postmark", local="ann", credentials={"server_token": "pm-token"})
    mailbox.daily_cap = 5
    mailbox.save(update_fields=["daily_cap"])
    pool = Pool.objects.create(workspace=workspace, name="esp", strategy="round_robin", workloads=["cold"])
    pool.mailboxes.set([mailbox])

    answers = collections.deque([(429, {"Retry-After": "2"})] * 5 + [(503, {})] * 3)
    delivered = []
    calls = []

    def postmark(request):
        body = json.loads(request.body)
        calls.append((time.monotonic(), body["To"]))
        if answers:
            status, headers = answers.popleft()
            return status, headers, json.dumps({"ErrorCode": 100, "Message": "Busy"})
        delivered.append(body["To"])
        return 200, {}, json.dumps({"To": body["To"], "SubmittedAt": timezone.now().isoformat(),
                                    "MessageID": str(uuid.uuid4()), "ErrorCode": 0, "Message": "OK"})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        fake.add_callback(responses.POST, POSTMARK, callback=postmark)
        ids = [api.post("/api/v1/messages", {"to": f"e{n}@example.com", "subject": "Hi", "text": "Hello"},
                        format="json").json()["id"] for n in range(5)]
        assert_error(api.post("/api/v1/messages", {"to": "sixth@example.com", "subject": "Hi", "text": "Hello"},
                              format="json"), 422, "cap_exhausted")
        run_workers()
        assert len(calls) == 5 and delivered == []
        waiting = Message.objects.filter(pk__in=ids)
        assert set(waiting.values_list("status", flat=True)) == {"deferred"}
        for message in waiting:  # Retry-After is honoured: nobody knocks again before it
            assert (message.scheduled_at - message.updated_at).total_seconds() >= 1.9
        run_workers()
        assert len(calls) == 5, "no retry before Retry-After"

        retry_at = max(waiting.values_list("scheduled_at", flat=True))
        time.sleep(max(0.0, (retry_at - timezone.now()).total_seconds()) + 0.2)
        enqueue_due_retries(redis_conn)
        run_workers()

    assert sorted(delivered) == sorted(f"e{n}@example.com" for n in range(5)), "each handed off exactly once"
    assert len(calls) == 5 + 5 + 3
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent"}
    assert Event.objects.filter(type="message.deferred").count() == 8
    assert_ledger_matches_handoffs()
    assert api.get(f"/api/v1/mailboxes/{mailbox.pk}").json()["usage"]["today"] == 5
