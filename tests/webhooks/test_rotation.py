"""Secret rotation with overlap: while it lasts, every delivery verifies with the old secret and with the new one
(the standardwebhooks library, as a receiver would); afterwards only with the new one."""

import datetime as dt
import json

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import WebhookVerificationError

from audit.models import AuditEvent
from controlplane import events, webhooks
from controlplane.models import WebhookEndpoint
from tests.admin.conftest import acme, changelist_url, login, messages_of, users  # noqa: F401 - fixtures
from tests.api.helpers import assert_error
from tests.webhooks.conftest import create, verified

pytestmark = pytest.mark.django_db(transaction=True)


def deliver_one(workspace, receiver, run_webhook_workers):
    receiver.requests.clear()
    event = events.emit(workspace=workspace, type="mailbox.paused", data={"reason": "rotation test"})
    run_webhook_workers()
    [request] = receiver.requests
    assert request.headers["webhook-id"] == event.id
    return request


def verifies(secret, request):
    try:
        verified(secret, request)
    except WebhookVerificationError:
        return False
    return True


def test_during_the_overlap_deliveries_verify_with_both_secrets_then_only_the_new_one(
        make_api, workspace, receiver, loopback_allowed, run_webhook_workers):
    api = make_api(workspace, "sequencer")
    endpoint = create(api, receiver.url).json()
    old = endpoint["secret"]

    rotated = api.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", {"overlap_seconds": 3600}, format="json")

    assert rotated.status_code == 200, rotated.json()
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    until = dt.datetime.fromisoformat(rotated.json()["rotation_overlap_until"].replace("Z", "+00:00"))
    assert abs((until - timezone.now()).total_seconds() - 3600) < 60
    assert "secret" not in api.get(f"/api/v1/webhooks/{endpoint['id']}").json()

    during = deliver_one(workspace, receiver, run_webhook_workers)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verifies(old, during) and verifies(new, during)

    # The hour passes.
    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(
        previous_secret_expires_at=timezone.now() - dt.timedelta(seconds=1))
    after = deliver_one(workspace, receiver, run_webhook_workers)
    assert verifies(new, after) and not verifies(old, after)
    assert len(after.headers["webhook-signature"].split(" ")) == 1

    webhooks.reconcile()  # forgets the old secret for good
    stored = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert stored.secret == {"key": new} and stored.previous_secret_expires_at is None


def test_rotation_without_overlap_stops_the_old_secret_at_once(api, workspace, receiver, loopback_allowed,
                                                               run_webhook_workers):
    endpoint = create(api, receiver.url).json()
    new = api.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret?overlap_seconds=0").json()["secret"]

    request = deliver_one(workspace, receiver, run_webhook_workers)
    assert verifies(new, request) and not verifies(endpoint["secret"], request)


def test_the_default_overlap_is_a_day_and_secrets_stay_out_of_storage_audit_and_answers(api, workspace, receiver,
                                                                                       loopback_allowed):
    endpoint = create(api, receiver.url).json()
    old = endpoint["secret"]
    rotated = api.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret").json()
    new = rotated["secret"]
    until = dt.datetime.fromisoformat(rotated["rotation_overlap_until"].replace("Z", "+00:00"))
    assert abs((until - timezone.now()).total_seconds() - 86400) < 60

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM controlplane_webhookendpoint WHERE id = %s", [endpoint["id"]])
        [raw] = cursor.fetchone()
    for secret in (old, new):
        for text in (secret, secret.removeprefix("whsec_")):
            assert text not in raw
    listing = json.dumps(api.get("/api/v1/webhooks").json())
    audit_rows = json.dumps(list(AuditEvent.objects.values("before", "after", "object_repr")))
    for secret in (old, new):
        assert secret.removeprefix("whsec_") not in listing and secret.removeprefix("whsec_") not in audit_rows
    rotation = AuditEvent.objects.get(action="webhook.secret_rotated")
    assert rotation.after["secret"] == "[changed]" and rotation.after["overlap_seconds"] == 86400
    assert rotation.actor.startswith("api_key:")


def test_bad_overlaps_answer_400_and_change_nothing(make_api, api, other_api, workspace, receiver, loopback_allowed):
    endpoint = create(api, receiver.url).json()
    url = f"/api/v1/webhooks/{endpoint['id']}/rotate-secret"
    for body in ({"overlap_seconds": -1}, {"overlap_seconds": "a day"}, {"overlap_seconds": 10 ** 9},
                 {"overlap": 60}):
        error = assert_error(api.post(url, body, format="json"), 400, "validation_error")
        assert set(error["fields"]) == set(body), error
    assert_error(api.post(url, [1], format="json"), 400, "validation_error")
    assert_error(other_api.post(url), 404, "not_found")
    assert_error(make_api(workspace, "reviewer").post(url), 403, "permission_denied")
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).secret == {"key": endpoint["secret"]}
    assert not AuditEvent.objects.filter(action="webhook.secret_rotated").exists()


def test_the_admin_rotates_a_secret_and_shows_the_new_one_once(login, acme, receiver, loopback_allowed):
    endpoint, old = webhooks.create_endpoint(workspace=acme.workspace, url=receiver.url)
    client = login("operator")

    response = client.post(changelist_url(WebhookEndpoint), {"action": "rotate_secrets", "apply": "1",
                                                             "overlap_hours": "2", "_selected_action": [endpoint.pk]},
                           follow=True)

    endpoint.refresh_from_db()
    new = endpoint.secret["key"]
    assert new != old and endpoint.secret["previous_key"] == old
    [notice] = [m for m in messages_of(response) if "new signing secret" in m]
    assert new in notice
    assert abs((endpoint.previous_secret_expires_at - timezone.now()).total_seconds() - 7200) < 60
    assert AuditEvent.objects.get(action="webhook.secret_rotated").actor == "user:operator"
    assert new not in client.get(changelist_url(WebhookEndpoint)).content.decode()
