"""The messages API: validation, idempotency, batch, scheduling, the event feed, nothing lost."""

import datetime as dt
import zoneinfo

import pytest

from controlplane.models import Event, Message
from tests.api.helpers import assert_error, midday_zone

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"to": "lead@example.com", "subject": "Hello", "text": "Body"}


@pytest.mark.parametrize("change, field", [
    ({"to": "not an address"}, "to"),
    ({"to": "a@b"}, "to"),
    ({"from": "stranger@mail.acme.com"}, "from"),
    ({"subject": ""}, "subject"),
    ({"headers": {"From": "ceo@acme.com"}}, "headers"),
    ({"headers": {"List-Unsubscribe": "<mailto:x@y.z>"}}, "headers"),
    ({"headers": {"X-Ok": "line\r\nBcc: evil@x.com"}}, "headers"),
    ({"send_at": "2001-01-01T00:00:00Z"}, "send_at"),
    ({"send_at": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31)).isoformat()}, "send_at"),
    ({"metadata": "nope"}, "metadata"),
    ({"pool": "pool_unknown"}, "pool"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_input_is_400_and_stores_nothing(api, sending_setup, change, field):
    error = assert_error(api.post("/api/v1/messages", {**BODY, **change}, format="json"), 400, "validation_error")
    assert field in error["fields"], error
    assert Message.objects.count() == 0 and Event.objects.count() == 0


def test_idempotent_repeat_and_conflict(api, sending_setup, smtp_sink, run_workers):
    first = api.post("/api/v1/messages", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = api.post("/api/v1/messages", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert_error(api.post("/api/v1/messages", {**BODY, "subject": "Other"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"),
                 409, "idempotency_conflict")
    run_workers()
    assert len(smtp_sink.messages) == 1 and Message.objects.count() == 1


def test_idempotent_rejection_is_replayed(api, sending_setup):
    api.post("/api/v1/suppressions", {"value": BODY["to"]}, format="json")
    first = api.post("/api/v1/messages", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k2")
    assert_error(first, 422, "suppressed")
    api.delete(f"/api/v1/suppressions/{api.get('/api/v1/suppressions').json()['results'][0]['id']}")
    assert api.post("/api/v1/messages", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k2").json() == first.json()


def test_batch_answers_each_item_in_order(api, sending_setup):
    api.post("/api/v1/suppressions", {"value": "blocked@example.com"}, format="json")
    items = [BODY, {**BODY, "to": "blocked@example.com"}, {**BODY, "to": "broken"}, {**BODY, "to": "b@example.com"}]
    r = api.post("/api/v1/messages/batch", {"messages": items}, format="json")
    assert r.status_code == 200
    results = r.json()["results"]
    assert [res.get("status") or res["error"]["code"] for res in results] == [
        "queued", "suppressed", "validation_error", "queued"]
    assert "to" in results[2]["error"]["fields"]
    too_many = api.post("/api/v1/messages/batch", {"messages": [BODY] * 1001}, format="json")
    assert "messages" in assert_error(too_many, 400, "validation_error")["fields"]
    not_objects = assert_error(api.post("/api/v1/messages/batch", {"messages": [BODY, "hi", [BODY]]}, format="json"),
                               400, "validation_error")
    assert 'Expected a dictionary of items but got type "str".' in str(not_objects["fields"])
    assert 'got type "list"' in str(not_objects["fields"])
    assert Message.objects.count() == 2


def test_outside_the_window_waits_as_scheduled(api, sending_setup, run_workers, smtp_sink):
    mailbox = sending_setup["mailboxes"][0]
    now = dt.datetime.now(dt.timezone.utc)
    mailbox.send_window_timezone = midday_zone(now)  # the window opens at the day's last second, hours from now
    zone = zoneinfo.ZoneInfo(mailbox.send_window_timezone)
    mailbox.send_window_start = dt.time(23, 59, 59)
    mailbox.send_window_end = dt.time.max
    mailbox.save()
    r = api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json")
    body = r.json()
    assert r.status_code == 202 and body["status"] == "scheduled"
    scheduled = dt.datetime.fromisoformat(body["scheduled_at"].replace("Z", "+00:00")).astimezone(zone)
    assert (scheduled.date(), scheduled.time().replace(microsecond=0)) == (now.astimezone(zone).date(), dt.time(23, 59, 59))
    detail = api.get(f"/api/v1/messages/{body['id']}").json()
    assert detail["events"][1]["type"] == "message.scheduled"
    assert detail["events"][1]["data"]["reason"] == "send_window"
    run_workers()
    assert smtp_sink.messages == []


def test_pacing_spaces_sends_from_one_mailbox(api, sending_setup):
    mailbox = sending_setup["mailboxes"][0]
    mailbox.min_interval_seconds = 120
    mailbox.save()
    times = [dt.datetime.fromisoformat(api.post("/api/v1/messages", {**BODY, "from": mailbox.address},
                                                format="json").json()["scheduled_at"].replace("Z", "+00:00"))
             for _ in range(3)]
    assert (times[1] - times[0]).total_seconds() >= 120 and (times[2] - times[1]).total_seconds() >= 120


def test_event_feed_pages_oldest_first(api, other_api, sending_setup, run_workers):
    for n in range(3):
        api.post("/api/v1/messages", {**BODY, "to": f"p{n}@example.com"}, format="json")
    run_workers()
    page = api.get("/api/v1/events", {"limit": 4}).json()
    assert [e["type"] for e in page["results"]][:1] == ["message.accepted"]
    assert len(page["results"]) == 4 and page["next"]
    rest = api.get(page["next"]).json()
    seen = page["results"] + rest["results"]
    assert len(seen) == 6 and len({e["id"] for e in seen}) == 6
    sent = api.get("/api/v1/events", {"type": "message.sent"}).json()["results"]
    assert len(sent) == 3 and all(e["message"]["to"].startswith("p") for e in sent)
    assert other_api.get("/api/v1/events").json()["results"] == []
    assert_error(api.get("/api/v1/events", {"type": "message.teleported"}), 400, "validation_error")


def test_sends_to_a_mailbox_share_the_job_waiting_for_it(api, sending_setup, smtp_sink, run_workers, redis_conn):
    """While a mailbox's hand-off job waits for a worker, further sends to it add no job of their own:
    the waiting job takes them all. Once a job has started, the next send gets a new job; a mark whose
    job was lost does not stop the reconciler."""
    import django_rq

    from controlplane import dispatch

    q = django_rq.get_queue("dispatch")
    mailbox = sending_setup["mailboxes"][0]
    for n in range(5):
        assert api.post("/api/v1/messages", {**BODY, "from": mailbox.address, "to": f"s{n}@example.com"},
                        format="json").status_code == 202
    assert len(q.get_job_ids()) == 1
    run_workers()
    assert sorted(smtp_sink.recipients()) == [f"s{n}@example.com" for n in range(5)]

    # The job started: a new send needs (and gets) a new job.
    assert api.post("/api/v1/messages", {**BODY, "from": mailbox.address, "to": "later@example.com"},
                    format="json").status_code == 202
    assert len(q.get_job_ids()) == 1
    # That job is lost, its mark left behind: the next send relies on the lost job, the reconciler does not.
    q.empty()
    assert api.post("/api/v1/messages", {**BODY, "from": mailbox.address, "to": "last@example.com"},
                    format="json").status_code == 202
    assert q.get_job_ids() == []
    assert dispatch.reconcile()["enqueued"] == 2
    run_workers()
    assert {"last@example.com", "later@example.com"} <= set(smtp_sink.recipients())
    assert Message.objects.filter(status="sent").count() == 7


def test_redis_flush_loses_nothing(api, sending_setup, smtp_sink, run_workers, redis_conn):
    from controlplane import dispatch

    ids = [api.post("/api/v1/messages", {**BODY, "to": f"r{n}@example.com"}, format="json").json()["id"]
           for n in range(5)]
    redis_conn.flushdb()  # this test worker's database only: others run beside it
    run_workers()
    assert smtp_sink.messages == []
    assert dispatch.reconcile()["enqueued"] == 5
    assert dispatch.reconcile()["enqueued"] == 0  # jobs are live: nothing enqueued twice
    run_workers()
    assert sorted(smtp_sink.recipients()) == sorted(f"r{n}@example.com" for n in range(5))
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent"}


def test_a_job_listed_as_running_whose_lease_expired_covers_nothing(api, sending_setup, smtp_sink, run_workers,
                                                                    redis_conn):
    """A killed worker's job stays in RQ's started registry until its timeout; once one of its leases has
    expired it is known dead, and the reconciler queues its mailboxes at once. A running job with no
    expired lease still covers its mailboxes (nothing is queued twice)."""
    import django_rq
    from django.utils import timezone
    from rq.executions import Execution
    from rq.registry import StartedJobRegistry

    from controlplane import dispatch

    mailbox = sending_setup["mailboxes"][0]
    claimed = api.post("/api/v1/messages", {**BODY, "from": mailbox.address}, format="json").json()
    waiting = api.post("/api/v1/messages", {**BODY, "from": mailbox.address, "to": "next@example.com"},
                       format="json").json()
    redis_conn.flushdb()
    q = django_rq.get_queue("dispatch")
    job = q.create_job(dispatch.dispatch_mailboxes, args=([mailbox.pk],), job_id=dispatch.mailbox_job_id(mailbox.pk))
    job.save()
    with redis_conn.pipeline() as pipe:  # "running" for ten more minutes, as after a kill
        StartedJobRegistry(queue=q).add_execution(Execution("x1", job.id, connection=redis_conn), pipe, ttl=600)
        pipe.execute()
    assert job.id in StartedJobRegistry(queue=q).get_job_ids()
    assert dispatch.reconcile()["enqueued"] == 0  # a running job with a live lease covers its mailbox

    Message.objects.filter(pk=claimed["id"]).update(status="sending", attempts=1,
                                                    lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert dispatch.reconcile() == {"recorded": 0, "expired_leases": 1, "enqueued": 2}
    run_workers()
    assert sorted(smtp_sink.recipients()) == ["lead@example.com", "next@example.com"]
    assert set(Message.objects.filter(pk__in=[claimed["id"], waiting["id"]]).values_list("status", flat=True)) \
        == {"sent"}


def test_expired_lease_is_released_and_sent_once(api, sending_setup, smtp_sink, run_workers, redis_conn):
    from django.utils import timezone

    from controlplane import dispatch

    body = api.post("/api/v1/messages", BODY, format="json").json()
    redis_conn.flushdb()  # this test worker's database only: others run beside it
    # A worker claimed the message and died before handing it off.
    Message.objects.filter(pk=body["id"]).update(status="sending", attempts=1,
                                                 lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert dispatch.reconcile() == {"recorded": 0, "expired_leases": 1, "enqueued": 1}
    run_workers()
    assert smtp_sink.recipients() == ["lead@example.com"]
    assert Message.objects.get(pk=body["id"]).status == "sent"


def _journaled_by_a_dead_worker(api, mailbox, monkeypatch, prefix):
    """Three sends from `mailbox` handed off as a worker does it, except that the worker dies after their
    journal rows, before it applies them: the messages keep their lease (the reconciler finds them once
    it expires). Returns their ids."""
    from controlplane import dispatch

    ids = [api.post("/api/v1/messages", {**BODY, "from": mailbox.address, "to": f"{prefix}{n}@example.com"},
                    format="json").json()["id"] for n in range(3)]
    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "apply_hand_offs", lambda message_ids: 0)
        dispatch.dispatch_mailboxes([mailbox.pk])
    return ids


def test_a_hand_off_journaled_by_a_dead_worker_is_recorded_not_sent_again(api, sending_setup, smtp_sink, run_workers,
                                                                          redis_conn, monkeypatch):
    from django.utils import timezone

    from controlplane import dispatch
    from controlplane.models import HandOff

    mailbox = sending_setup["mailboxes"][0]
    ids = _journaled_by_a_dead_worker(api, mailbox, monkeypatch, "j")
    assert len(smtp_sink.messages) == 3
    # The provider's answers are in the journal; the messages still read `sending`, with no event yet.
    assert set(HandOff.objects.values_list("message_id", flat=True)) == set(ids)
    assert set(Message.objects.values_list("status", flat=True)) == {"sending"}
    assert not Event.objects.filter(type="message.sent").exists()
    assert dispatch.reconcile()["recorded"] == 0  # the leases still hold: a live worker would apply them

    Message.objects.update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    redis_conn.flushdb()
    assert dispatch.reconcile() == {"recorded": 3, "expired_leases": 0, "enqueued": 0}
    run_workers()
    assert len(smtp_sink.messages) == 3  # nothing went twice
    assert not HandOff.objects.exists()
    for pk in ids:
        detail = api.get(f"/api/v1/messages/{pk}").json()
        assert detail["status"] == "sent" and detail["provider_response"].startswith("250"), detail
        assert detail["sent_at"] and detail["message_id_header"] == f"<{pk}@mail.acme.com>"
        assert [e["type"] for e in detail["events"]] == ["message.accepted", "message.sent"]
        sent = detail["events"][1]
        assert sent["occurred_at"] == detail["sent_at"]
        assert sent["data"]["mailbox"] == mailbox.pk and sent["data"]["provider"] == "smtp"
        assert sent["data"]["response"].startswith("250")
    feed = api.get("/api/v1/events", {"type": "message.sent"}).json()["results"]
    assert [e["message"]["id"] for e in feed] == ids  # in the order they went out


@pytest.mark.parametrize("one_statement", [True, False])
def test_applying_the_journal_in_one_statement_or_through_the_orm_records_the_same(
        api, sending_setup, smtp_sink, monkeypatch, one_statement):
    """PostgreSQL applies the journal in one statement, other databases through the ORM: same messages,
    same events, and a row whose message is no longer `sending` changes nothing."""
    from controlplane import dispatch
    from controlplane.models import HandOff

    ids = _journaled_by_a_dead_worker(api, sending_setup["mailboxes"][0], monkeypatch, "o")
    Message.objects.filter(pk=ids[2]).update(status="queued")  # not `sending`: its row is dropped, unapplied
    monkeypatch.setattr(dispatch, "_in_one_statement", lambda: one_statement)
    journal = {row.message_id: row for row in HandOff.objects.all()}
    assert dispatch.apply_hand_offs(ids) == 2
    assert not HandOff.objects.exists()
    for pk in ids[:2]:
        message, row = Message.objects.get(pk=pk), journal[pk]
        assert (message.status, message.sent_at, message.provider_response, message.message_id_header) == \
            ("sent", row.sent_at, row.provider_response, row.message_id_header)
        event = Event.objects.get(message_id=pk, type="message.sent")
        assert (event.id, event.occurred_at, event.data) == (row.event_id, row.sent_at, row.event_data)
        assert event.workspace_id == message.workspace_id and event.data["provider"] == "smtp"
    assert Message.objects.get(pk=ids[2]).status == "queued"
    assert not Event.objects.filter(message_id=ids[2], type="message.sent").exists()
    assert dispatch.apply_hand_offs(ids) == 0  # applied once
