"""An endpoint whose deliveries have all failed for three days is disabled by the periodic job, with an audit
event and a notice in the admin; what arrives while it is disabled is dead-lettered, and replay recovers it."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from controlplane import events, webhooks
from controlplane.models import WebhookDelivery, WebhookEndpoint
from tests.admin.conftest import acme, changelist_url, login, messages_of, users  # noqa: F401 - fixtures
from tests.api.helpers import assert_error
from tests.webhooks.conftest import create

pytestmark = pytest.mark.django_db(transaction=True)

THREE_DAYS = dt.timedelta(days=3, minutes=1)


def emit(workspace, n=0):
    return events.emit(workspace=workspace, type="domain.check_failed", data={"domain": f"d{n}.example"})


@pytest.fixture
def failing(receiver, settings, loopback_allowed):
    """Long retry schedules (nothing is dead-lettered by the schedule in these tests); the receiver is down."""
    settings.WEBHOOK_RETRY_DELAYS = [0, 0, 3600, 3600, 3600]
    receiver.default = (500, {}, "boom")
    return receiver


def test_three_days_of_failures_disable_the_endpoint_and_nothing_is_lost(api, workspace, failing,
                                                                         run_webhook_workers):
    endpoint = create(api, failing.url).json()
    first = emit(workspace, 1)
    run_webhook_workers()  # three attempts, all failing; the next one is an hour away
    stored = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert stored.active and stored.failing_since is not None
    assert api.get(f"/api/v1/webhooks/{endpoint['id']}").json()["failing_since"]

    assert webhooks.disable_failing_endpoints(timezone.now() + dt.timedelta(days=2)) == []  # not yet
    webhooks.reconcile(timezone.now() + THREE_DAYS)

    body = api.get(f"/api/v1/webhooks/{endpoint['id']}").json()
    assert body["active"] is False and body["disabled_at"]
    assert "failed for 3 days" in body["disabled_reason"] and "answered 500" in body["disabled_reason"]
    [pending_then] = WebhookDelivery.objects.filter(event__id=first.id)
    assert pending_then.status == "dead" and "disabled" in pending_then.error
    audited = AuditEvent.objects.get(action="webhook.disabled")
    assert audited.actor == "system:webhook reconciler" and audited.object_id == endpoint["id"]
    assert audited.after["active"] is False and audited.after["dead_lettered"] == 1

    failing.requests.clear()
    failing.default = (200, {}, "")
    while_disabled = [emit(workspace, n) for n in range(2, 5)]
    run_webhook_workers()
    assert failing.requests == []  # nothing is sent to a disabled endpoint...
    dead = api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries?status=dead").json()["results"]
    assert {d["event"]["id"] for d in dead} == {e.id for e in [first, *while_disabled]}  # ...and nothing dropped
    assert_error(api.post(f"/api/v1/webhooks/{endpoint['id']}/replay?since={first.id}"), 400, "validation_error")

    enabled = api.post(f"/api/v1/webhooks/{endpoint['id']}/enable")
    assert enabled.status_code == 200
    assert enabled.json()["active"] is True and enabled.json()["dead_letters"] == 4
    assert enabled.json()["disabled_reason"] == "" and enabled.json()["failing_since"] is None
    assert api.post(f"/api/v1/webhooks/{endpoint['id']}/replay?since={first.id}").json()["events"] == 4
    run_webhook_workers()
    assert [r.headers["webhook-id"] for r in failing.requests] == [e.id for e in [first, *while_disabled]]
    [audited] = AuditEvent.objects.filter(action="webhook.enabled")
    assert audited.before["active"] is False and audited.after == {"active": True, "dead_letters": 4}


def test_a_success_ends_the_streak(api, workspace, failing, run_webhook_workers):
    endpoint = create(api, failing.url).json()
    emit(workspace, 1)
    run_webhook_workers()
    failing.default = (200, {}, "")
    emit(workspace, 2)
    run_webhook_workers()
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).failing_since is None

    assert webhooks.disable_failing_endpoints(timezone.now() + THREE_DAYS) == []
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).active


def test_an_operator_disables_and_re_enables_through_the_api(make_api, workspace, receiver, loopback_allowed,
                                                             other_api):
    api = make_api(workspace, "sequencer")
    endpoint = create(api, receiver.url).json()
    url = f"/api/v1/webhooks/{endpoint['id']}"

    assert_error(api.post(f"{url}/disable", {"reason": ""}, format="json"), 400, "validation_error")
    assert_error(other_api.post(f"{url}/disable"), 404, "not_found")
    assert_error(make_api(workspace, "reviewer").post(f"{url}/enable"), 403, "permission_denied")
    disabled = api.post(f"{url}/disable", {"reason": "CRM migration this weekend"}, format="json").json()
    assert disabled["active"] is False and disabled["disabled_reason"] == "CRM migration this weekend"
    emit(workspace)
    assert WebhookDelivery.objects.get().status == "dead"
    assert api.post(f"{url}/enable").json()["dead_letters"] == 1
    actions = list(AuditEvent.objects.filter(action__in=["webhook.disabled", "webhook.enabled"])
                   .order_by("seq").values_list("action", flat=True))
    assert actions == ["webhook.disabled", "webhook.enabled"]


def test_the_admin_lists_disabled_endpoints_and_why_and_re_enables_them(login, acme, receiver, loopback_allowed):
    endpoint, _ = webhooks.create_endpoint(workspace=acme.workspace, url=receiver.url)
    healthy, _ = webhooks.create_endpoint(workspace=acme.workspace, url=f"{receiver.url}/healthy")
    webhooks.disable_endpoint(endpoint=endpoint, reason="Every delivery attempt failed for 3 days")
    client = login("operator")

    page = client.get(changelist_url(WebhookEndpoint))
    [notice] = [m for m in messages_of(page) if 'id="disabled-webhooks"' in m]
    assert endpoint.url in notice and "Every delivery attempt failed for 3 days" in notice
    assert f"{receiver.url}/healthy" not in notice
    assert notice in page.content.decode()  # shown on the page itself

    response = client.post(changelist_url(WebhookEndpoint), {"action": "enable_endpoints",
                                                             "_selected_action": [endpoint.pk]}, follow=True)
    assert "Re-enabled 1 webhook endpoint." in messages_of(response)
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.disabled_reason == ""
    assert 'id="disabled-webhooks"' not in response.content.decode()
    assert AuditEvent.objects.get(action="webhook.enabled").actor == "user:operator"

    viewer = login("viewer")
    response = viewer.post(changelist_url(WebhookEndpoint), {"action": "disable_endpoints", "apply": "1",
                                                             "reason": "no", "_selected_action": [healthy.pk]})
    healthy.refresh_from_db()
    assert healthy.active


def test_the_admin_disables_with_a_reason(login, acme, receiver, loopback_allowed):
    endpoint, _ = webhooks.create_endpoint(workspace=acme.workspace, url=receiver.url)
    client = login("operator")

    response = client.post(changelist_url(WebhookEndpoint), {"action": "disable_endpoints", "apply": "1",
                                                             "reason": "Receiver retired",
                                                             "_selected_action": [endpoint.pk]}, follow=True)

    assert "Disabled 1 webhook endpoint." in messages_of(response)
    endpoint.refresh_from_db()
    assert not endpoint.active and endpoint.disabled_reason == "Receiver retired"
    assert AuditEvent.objects.get(action="webhook.disabled").actor == "user:operator"
