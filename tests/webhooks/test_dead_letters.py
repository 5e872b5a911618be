"""Dead letters: deliveries that exhaust the retry schedule are listed per endpoint, re-delivered from the admin,
and any range of events can be replayed, in event order, with the same event ids."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from controlplane import events
from controlplane.models import Event, WebhookDelivery, WebhookEndpoint
from tests.admin.conftest import acme, changelist_url, login, messages_of, users  # noqa: F401 - fixtures
from tests.api.helpers import assert_error
from tests.webhooks.conftest import create, verified

pytestmark = pytest.mark.django_db(transaction=True)


def emit_many(workspace, count, type="domain.check_failed"):
    return [events.emit(workspace=workspace, type=type, data={"domain": f"d{n}.example"}) for n in range(count)]


def ids_received(receiver):
    return [request.headers["webhook-id"] for request in receiver.requests]


@pytest.fixture
def down_then_up(receiver, settings):
    """A receiver that is down (503) until `up()`; two retries before a delivery is dead-lettered."""
    settings.WEBHOOK_RETRY_DELAYS = [0, 0]
    receiver.default = (503, {}, "maintenance")

    def up():
        receiver.requests.clear()
        receiver.default = (204, {}, "")

    return up


def test_exhausted_deliveries_are_dead_letters_listed_per_endpoint(api, workspace, receiver, loopback_allowed,
                                                                   down_then_up, run_webhook_workers):
    endpoint = create(api, receiver.url).json()
    healthy = create(api, f"{receiver.url}/other", event_types=["mailbox.paused"]).json()
    emitted = emit_many(workspace, 3)
    run_webhook_workers()

    dead = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=dead").json()
    assert {d["event"]["id"] for d in dead["results"]} == {e.id for e in emitted}
    assert all(d["status"] == "dead" and d["attempts"] == 3 and "503" in d["error"] and d["next_attempt_at"] is None
               for d in dead["results"])
    assert len(receiver.requests) == 9  # three attempts each, then given up
    legacy = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=failed").json()
    assert [d["id"] for d in legacy["results"]] == [d["id"] for d in dead["results"]]
    assert api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=pending").json()["results"] == []
    assert api.get(f"/api/v1/webhooks/{healthy['id']}/deliveries?status=dead").json()["results"] == []
    error = assert_error(api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=lost"), 400,
                         "validation_error")
    assert "dead" in error["fields"]["status"][0]


def test_replay_redelivers_a_range_in_event_order_with_the_same_event_ids(make_api, workspace, receiver,
                                                                          loopback_allowed, down_then_up,
                                                                          run_webhook_workers):
    api = make_api(workspace, "sequencer")
    endpoint = create(api, receiver.url, event_types=["domain.check_failed"]).json()
    before = emit_many(workspace, 2)
    ignored = emit_many(workspace, 2, type="domain.check_passed")  # not subscribed: never replayed
    lost = emit_many(workspace, 4)
    later = emit_many(workspace, 2)
    run_webhook_workers()
    down_then_up()

    response = api.post(f"/api/v1/webhooks/{endpoint['id']}/replay?since={lost[0].id}&until={lost[-1].id}")

    assert response.status_code == 202, response.json()
    assert response.json() == {"events": 4, "deliveries": 4, "first_event": lost[0].id, "last_event": lost[-1].id,
                               "since": lost[0].id, "until": lost[-1].id}
    run_webhook_workers()
    assert ids_received(receiver) == [e.id for e in lost]  # in event order, once each
    assert all(verified(endpoint["secret"], r)["type"] == "domain.check_failed" for r in receiver.requests)
    replayed = WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], replay=True)
    assert {d.status for d in replayed} == {"succeeded"} and replayed.count() == 4
    assert WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], status="dead").count() == 8  # history kept
    log = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=succeeded").json()["results"]
    assert all(d["replay"] for d in log) and len(log) == 4

    receiver.requests.clear()
    since = (later[0].occurred_at - dt.timedelta(microseconds=1)).isoformat()
    response = api.post(f"/api/v1/webhooks/{endpoint['id']}/replay", {"since": since}, format="json")
    assert response.json()["events"] == 2
    run_webhook_workers()
    assert ids_received(receiver) == [e.id for e in later]
    assert not set(ids_received(receiver)) & {e.id for e in before + ignored}

    [audited, _] = AuditEvent.objects.filter(action="webhook.replayed").order_by("seq")
    assert audited.actor.startswith("api_key:") and audited.object_id == endpoint["id"]
    assert audited.after["events"] == 4 and audited.after["since"] == lost[0].id


def test_bad_replay_ranges_answer_400(api, other_api, workspace, other_workspace, receiver, loopback_allowed,
                                      make_api):
    endpoint = create(api, receiver.url).json()
    [first, second] = emit_many(workspace, 2)
    [theirs] = emit_many(other_workspace, 1)
    url = f"/api/v1/webhooks/{endpoint['id']}/replay"

    cases = [
        ("", "since", "start of the range"),
        ("?since=yesterday", "since", "ISO 8601"),
        ("?since=2025-13-45T99:00:00Z", "since", "ISO 8601"),
        (f"?since={theirs.id}", "since", "No event"),  # another workspace's event is no event here
        ("?since=evt_nothing", "since", "No event"),
        (f"?since={second.id}&until={first.id}", "until", "after"),
        ("?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "until", "after"),
        ("?since=2025-01-01T00:00:00Z&until=2025-01-01T00:00:00Z", "until", "after"),
        ("?since=2025-01-01T00:00:00Z&until=soon", "until", "ISO 8601"),
    ]
    for query, field, words in cases:
        error = assert_error(api.post(url + query), 400, "validation_error")
        assert words in error["fields"][field][0], (query, error)
    assert not WebhookDelivery.objects.filter(replay=True).exists()
    assert not AuditEvent.objects.filter(action="webhook.replayed").exists()

    assert_error(other_api.post(f"{url}?since={first.id}"), 404, "not_found")
    assert_error(make_api(workspace, "reviewer").post(f"{url}?since={first.id}"), 403, "permission_denied")
    future = (timezone.now() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    empty = api.post(f"{url}?since={future}")
    assert empty.status_code == 202 and empty.json()["events"] == 0 and empty.json()["first_event"] is None


def test_the_admin_lists_dead_letters_per_endpoint_and_redelivers_them(login, acme, receiver, loopback_allowed,
                                                                       down_then_up, run_webhook_workers):
    endpoint = WebhookEndpoint.objects.create(workspace=acme.workspace, url=receiver.url,
                                              secret={"key": "whsec_" + "A" * 44})
    emitted = emit_many(acme.workspace, 2)
    run_webhook_workers()
    client = login("operator")

    listing = client.get(changelist_url(WebhookEndpoint)).content.decode()
    assert f"?endpoint__id__exact={endpoint.pk}&amp;status__exact=dead\">2</a>" in listing
    dead_page = client.get(changelist_url(WebhookDelivery), {"endpoint__id__exact": endpoint.pk,
                                                              "status__exact": "dead"})
    assert {d.event.id for d in dead_page.context["cl"].result_list} == {e.id for e in emitted}

    down_then_up()
    response = client.post(changelist_url(WebhookEndpoint), {"action": "redeliver_dead_letters",
                                                             "_selected_action": [endpoint.pk]}, follow=True)
    assert "Queued 2 dead letters again." in messages_of(response)
    run_webhook_workers()
    assert sorted(ids_received(receiver)) == sorted(e.id for e in emitted)
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"succeeded"}
    audited = AuditEvent.objects.get(action="webhook.dead_letters_redelivered")
    assert audited.actor == "user:operator" and audited.after == {"deliveries": 2}

    viewer = login("viewer")
    assert "redeliver_dead_letters" not in viewer.get(changelist_url(WebhookEndpoint)).content.decode()
