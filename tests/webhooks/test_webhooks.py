"""Outbound webhooks: Standard Webhooks signatures a real receiver verifies, retries until it recovers,
a delivery log, refusal of private targets, roles and tenancy."""

import json
import time

import pytest

from audit.models import AuditEvent
from controlplane import webhooks
from controlplane.models import Event, WebhookDelivery
from tests.api.helpers import assert_error
from tests.webhooks.conftest import BODY, create, verified

pytestmark = pytest.mark.django_db(transaction=True)


def test_deliveries_are_signed_retried_and_none_lost(make_api, workspace, sending_setup, run_workers, receiver,
                                                     loopback_allowed, run_webhook_workers):
    sequencer = make_api(workspace, "sequencer")
    created = create(sequencer, f"{receiver.url}/hooks", event_types=["message.accepted", "message.sent"])
    assert created.status_code == 201, created.json()
    endpoint = created.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and endpoint["event_types"] == ["message.accepted", "message.sent"]
    assert "secret" not in sequencer.get(f"/api/v1/webhooks/{endpoint['id']}").json()
    assert "secret" not in json.dumps(sequencer.get("/api/v1/webhooks").json())

    receiver.answers.extend([(500, {}, "down")] * 5)  # down for a while, then it recovers
    messages = [sequencer.post("/api/v1/messages", {**BODY, "to": f"p{i}@example.com"}, format="json").json()
                for i in range(3)]
    run_workers()
    run_webhook_workers()

    expected = {(e.id, e.type) for e in Event.objects.filter(workspace=workspace,
                                                             type__in=["message.accepted", "message.sent"])}
    assert len(expected) == 6
    attempts_by_id = {}
    for request in receiver.requests:
        body = verified(secret, request)  # raises unless the signature verifies
        assert request.headers["webhook-id"] == body["id"]
        assert body["workspace"] == workspace.pk and body["message"]["id"] in {m["id"] for m in messages}
        attempts_by_id.setdefault(body["id"], []).append(body["type"])
    assert {(i, types[0]) for i, types in attempts_by_id.items()} == expected
    assert len(receiver.requests) == 6 + 5
    assert any(len(types) > 1 for types in attempts_by_id.values()), "a retried delivery kept its webhook-id"

    log = sequencer.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()
    assert len(log["results"]) == 6 and log["next"] is None
    assert {d["status"] for d in log["results"]} == {"succeeded"}
    assert sum(d["attempts"] for d in log["results"]) == 11
    assert all(d["response_status"] == 200 and d["latency_ms"] is not None for d in log["results"])


def test_an_endpoint_that_stays_down_is_dead_lettered_and_can_be_retried(api, workspace, sending_setup, run_workers,
                                                                          receiver, loopback_allowed, settings,
                                                                          run_webhook_workers):
    settings.WEBHOOK_RETRY_DELAYS = [0, 0]
    receiver.default = (503, {}, "maintenance")
    endpoint = create(api, receiver.url, event_types=["message.accepted"]).json()
    api.post("/api/v1/messages", BODY, format="json")
    run_webhook_workers()
    [delivery] = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["results"]
    assert delivery["status"] == "dead" and delivery["attempts"] == 3 and delivery["response_status"] == 503
    assert delivery["next_attempt_at"] is None and "503" in delivery["error"]

    receiver.default = (204, {}, "")
    retried = api.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    run_webhook_workers()
    again = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["results"][0]
    assert again["status"] == "succeeded" and again["attempts"] == 4 and again["delivered_at"]
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1 and len(receiver.requests) == 4


def test_the_default_schedule_retries_for_more_than_a_day():
    assert sum(webhooks.DEFAULT_RETRY_DELAYS) >= 24 * 3600
    assert webhooks.DEFAULT_RETRY_DELAYS == sorted(webhooks.DEFAULT_RETRY_DELAYS)


def test_private_and_plain_http_targets_are_refused(api, settings):
    settings.DEBUG = False
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    for url, words in [("http://hooks.example.com/in", "https"), ("https://127.0.0.1:8443/in", "private"),
                       ("https://169.254.169.254/latest", "private"), ("https://[::1]/in", "private"),
                       ("https://10.1.2.3/in", "private"), ("ftp://example.com/x", "https"),
                       ("https:///nohost", "host")]:
        error = assert_error(create(api, url), 400, "validation_error")
        assert "url" in error["fields"] and words in error["fields"]["url"][0], (url, error)
    error = assert_error(create(api, "https://hooks.example.com/in", event_types=["message.nope"]), 400,
                         "validation_error")
    assert "event_types" in error["fields"]
    assert api.get("/api/v1/webhooks").json()["results"] == []


def test_targets_are_checked_again_at_delivery_time(api, workspace, sending_setup, receiver, loopback_allowed,
                                                    settings, run_webhook_workers):
    endpoint = create(api, receiver.url, event_types=["message.accepted"]).json()
    settings.WEBHOOKS_ALLOW_PRIVATE = False  # e.g. the name now resolves somewhere private
    settings.WEBHOOK_RETRY_DELAYS = []
    api.post("/api/v1/messages", BODY, format="json")
    run_webhook_workers()
    assert receiver.requests == []
    [delivery] = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["results"]
    assert delivery["status"] == "dead" and "private" in delivery["error"]


def test_a_slow_endpoint_does_not_slow_dispatch(api, workspace, sending_setup, smtp_sink, run_workers, receiver,
                                                loopback_allowed, monkeypatch, run_webhook_workers):
    def slow(handler):
        time.sleep(2.5)
        return 200, {}, "late"

    receiver.default = slow
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 1)
    endpoint = create(api, receiver.url).json()
    for i in range(3):
        api.post("/api/v1/messages", {**BODY, "to": f"p{i}@example.com"}, format="json")
    started = time.monotonic()
    run_workers()
    assert time.monotonic() - started < 2.0
    assert len(smtp_sink.messages) == 3
    pending = WebhookDelivery.objects.filter(endpoint_id=endpoint["id"], status="pending").count()
    assert pending >= 6  # accepted + sent for each message, waiting on their own queue
    receiver.default = (200, {}, "")
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 10)
    run_webhook_workers()
    log = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["results"]
    assert {d["status"] for d in log} == {"succeeded"}


def test_roles_tenancy_and_audit(make_api, workspace, other_workspace, settings, receiver, loopback_allowed):
    admin, sequencer, reviewer = (make_api(workspace, r) for r in ("admin", "sequencer", "reviewer"))
    other = make_api(other_workspace, "admin")
    assert_error(create(reviewer, receiver.url), 403, "permission_denied")
    endpoint = create(sequencer, receiver.url, description="CRM").json()
    assert reviewer.get(f"/api/v1/webhooks/{endpoint['id']}").status_code == 200
    assert reviewer.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").status_code == 200
    assert_error(other.get(f"/api/v1/webhooks/{endpoint['id']}"), 404, "not_found")
    assert_error(other.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries"), 404, "not_found")
    assert_error(other.delete(f"/api/v1/webhooks/{endpoint['id']}"), 404, "not_found")
    assert other.get("/api/v1/webhooks").json()["results"] == []
    assert_error(reviewer.delete(f"/api/v1/webhooks/{endpoint['id']}"), 403, "permission_denied")
    assert admin.delete(f"/api/v1/webhooks/{endpoint['id']}").status_code == 204
    assert_error(admin.get(f"/api/v1/webhooks/{endpoint['id']}"), 404, "not_found")
    actions = list(AuditEvent.objects.filter(workspace=workspace, action__startswith="webhook.")
                   .values_list("action", flat=True).order_by("seq"))
    assert actions == ["webhook.created", "webhook.deleted"]
    assert endpoint["secret"] not in json.dumps(list(AuditEvent.objects.values("before", "after")))
