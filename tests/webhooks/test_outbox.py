"""The outbox: an event and its deliveries commit or roll back together; a delivery whose job never reached Redis
is found by the periodic job and still delivered; fan-out stays cheap."""

import datetime as dt

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane import events, webhooks
from controlplane.models import Event, WebhookDelivery, WebhookEndpoint
from tests.resilience.test_redis_restart import OwnRedis
from tests.webhooks.conftest import create, verified

pytestmark = pytest.mark.django_db(transaction=True)


def emit(workspace, type="domain.check_passed", **data):
    return events.emit(workspace=workspace, type=type, data=data or {"domain": "mail.acme.com"})


def test_a_rolled_back_event_leaves_no_delivery_and_sends_nothing(api, workspace, receiver, loopback_allowed,
                                                                  run_webhook_workers):
    create(api, receiver.url)

    with pytest.raises(RuntimeError), transaction.atomic():
        emit(workspace)
        assert WebhookDelivery.objects.count() == 1  # written with the event, inside its transaction
        raise RuntimeError("the caller fails after emitting")

    run_webhook_workers()
    assert not Event.objects.exists() and not WebhookDelivery.objects.exists()
    assert receiver.requests == []


@pytest.fixture
def own_redis(settings):
    from django.conf import settings as django_settings

    redis = OwnRedis().start()
    settings.RQ_QUEUES = {name: {"URL": redis.url, "DEFAULT_TIMEOUT": 300} for name in django_settings.RQ_QUEUE_NAMES}
    yield redis
    redis.stop()


def test_a_committed_event_is_delivered_after_redis_died_before_the_enqueue(api, workspace, receiver,
                                                                            loopback_allowed, own_redis):
    import django_rq
    from rq import SimpleWorker

    secret = create(api, receiver.url).json()["secret"]

    with transaction.atomic():
        event = emit(workspace)
        own_redis.stop()  # Redis dies between the event's write and its commit: the enqueue after commit fails

    [delivery] = WebhookDelivery.objects.all()
    assert delivery.status == "pending" and delivery.event_id == event.pk
    own_redis.start()  # back, empty: no job knows of the delivery
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - dt.timedelta(minutes=5))  # time passes

    assert webhooks.reconcile() == 1
    SimpleWorker([django_rq.get_queue("webhooks")], connection=django_rq.get_connection("webhooks")).work(burst=True)

    [request] = receiver.requests
    assert verified(secret, request)["id"] == event.id
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert webhooks.reconcile() == 0


def test_fan_out_without_endpoints_is_one_query(workspace, other_workspace):
    WebhookEndpoint.objects.create(workspace=other_workspace, url="https://hooks.example.com/", secret={"key": "k"})
    with transaction.atomic():
        event = Event.objects.create(id="evt_lonely", workspace=workspace, type="domain.check_passed",
                                     occurred_at=timezone.now())
        with CaptureQueriesContext(connection) as captured:
            assert webhooks.fan_out(event) == []
    assert len(captured) == 1
    assert "workspace_id" in captured[0]["sql"]


def test_fan_out_many_writes_hundreds_of_deliveries_in_two_queries(workspace, other_workspace):
    ours = [WebhookEndpoint.objects.create(workspace=workspace, url=f"https://hooks{n}.example.com/",
                                           secret={"key": "k"}, event_types=types)
            for n, types in enumerate([[], ["domain.check_failed"]])]
    theirs = WebhookEndpoint.objects.create(workspace=other_workspace, url="https://hooks.globex.example/",
                                            secret={"key": "k"})
    now = timezone.now()
    saved = Event.objects.bulk_create(
        [Event(id=f"evt_{n:04d}", workspace=workspace if n % 3 else other_workspace, occurred_at=now,
               type="domain.check_failed" if n % 2 else "domain.check_passed") for n in range(300)])

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        pending = webhooks.fan_out_many(saved)
    assert len(captured) == 2  # the endpoints of every workspace involved, then one insert

    ours_events = [e for e in saved if e.workspace_id == workspace.pk]
    expected = {(ours[0].pk, e.pk) for e in ours_events}
    expected |= {(ours[1].pk, e.pk) for e in ours_events if e.type == "domain.check_failed"}
    expected |= {(theirs.pk, e.pk) for e in saved if e.workspace_id == other_workspace.pk}
    assert set(WebhookDelivery.objects.values_list("endpoint_id", "event_id")) == expected
    assert len(pending) == len(expected) == WebhookDelivery.objects.filter(status="pending").count()


def test_emit_writes_the_delivery_in_the_emitting_transaction(api, workspace, receiver, loopback_allowed):
    create(api, receiver.url, event_types=["domain.check_failed"])
    with transaction.atomic():
        emit(workspace, "domain.check_passed")  # not subscribed
        failed = emit(workspace, "domain.check_failed")
        assert list(WebhookDelivery.objects.values_list("event_id", "status")) == [(failed.pk, "pending")]
