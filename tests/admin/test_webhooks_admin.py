"""Webhook endpoints and their delivery log in the admin: the secret shown once, deletes audited, retries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from controlplane.ids import new_id
from controlplane.models import Event, WebhookDelivery, WebhookEndpoint
from tests.admin.conftest import add_url, change_url, changelist_url, form_errors, messages_of

pytestmark = pytest.mark.django_db

HOOK_URL = "https://127.0.0.1:8443/hooks/email"


@pytest.fixture(autouse=True)
def _local_targets(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True


def create(client, workspace, url=HOOK_URL, **fields):
    data = {"workspace": workspace.pk, "url": url, "event_types": ["message.bounced", "message.complained"],
            "description": "CRM", **fields}
    return client.post(add_url(WebhookEndpoint), data, follow=True)


def endpoint_of(workspace, url="https://hooks.example.com/in"):
    return WebhookEndpoint.objects.create(workspace=workspace, url=url, secret={"key": "whsec_stored"})


def delivery_of(endpoint, *, status="dead", attempts=3, **fields):
    event = Event.objects.create(id=new_id("evt"), workspace=endpoint.workspace, type="message.bounced",
                                 occurred_at=timezone.now(), data={"bounce_type": "hard"})
    defaults = {"response_status": 503, "latency_ms": 412, "error": "HTTP 503 from the endpoint",
                "last_attempt_at": timezone.now(),
                "attempt_log": [{"at": "2025-01-15T10:00:00+00:00", "status": 503, "latency_ms": 412,
                                 "error": "HTTP 503 from the endpoint"},
                                {"at": "2025-01-15T10:05:00+00:00", "status": None, "latency_ms": None,
                                 "error": "Connection timed out"}]}
    return WebhookDelivery.objects.create(endpoint=endpoint, event=event, status=status, attempts=attempts,
                                          **{**defaults, **fields})


def test_an_operator_creates_an_endpoint_and_sees_its_secret_once(login, acme):
    client = login("operator")

    response = create(client, acme.workspace)

    endpoint = WebhookEndpoint.objects.get(url=HOOK_URL)
    secret = endpoint.secret["key"]
    [notice] = [m for m in messages_of(response) if "signing secret" in m]
    assert secret.startswith("whsec_") and secret in notice
    assert endpoint.workspace == acme.workspace
    assert endpoint.event_types == ["message.bounced", "message.complained"]
    assert secret not in client.get(change_url(endpoint)).content.decode()
    assert secret not in client.get(changelist_url(WebhookEndpoint)).content.decode()
    created = AuditEvent.objects.get(action="webhook.created", object_id=endpoint.pk)
    assert created.actor == "user:operator" and secret not in str(created.after)


def test_an_endpoint_must_be_a_public_https_url(login, acme, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    client = login("operator")

    private = create(client, acme.workspace, url="https://127.0.0.1/hook")
    plain = create(client, acme.workspace, url="ftp://hooks.example.com/in")

    assert "private" in " ".join(form_errors(private)["url"])
    assert "https://" in " ".join(form_errors(plain)["url"])
    assert not WebhookEndpoint.objects.exists()


def test_deleting_an_endpoint_is_audited(login, acme):
    endpoint = endpoint_of(acme.workspace)
    client = login("operator")

    response = client.post(changelist_url(WebhookEndpoint), {"action": "delete_selected",
                                                              "_selected_action": [endpoint.pk], "post": "yes"},
                           follow=True)

    assert response.status_code == 200
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert AuditEvent.objects.get(action="webhook.deleted", object_id=endpoint.pk).actor == "user:operator"


def test_a_viewer_reads_endpoints_but_cannot_add_change_or_delete(login, acme):
    endpoint = endpoint_of(acme.workspace)
    client = login("viewer")

    assert client.get(changelist_url(WebhookEndpoint)).status_code == 200
    assert client.get(add_url(WebhookEndpoint)).status_code == 403
    assert client.post(change_url(endpoint), {"url": "https://evil.example/", "workspace": acme.workspace.pk,
                                              "active": "on"}).status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.url == "https://hooks.example.com/in"


def test_endpoints_and_deliveries_of_another_workspace_are_invisible(login, acme, globex):
    ours = delivery_of(endpoint_of(acme.workspace, "https://hooks.acme.example/in"))
    theirs = delivery_of(endpoint_of(globex.workspace, "https://hooks.globex.example/in"))
    client = login("operator")

    endpoints = client.get(changelist_url(WebhookEndpoint)).content.decode()
    deliveries = client.get(changelist_url(WebhookDelivery)).content.decode()

    assert "hooks.acme.example" in endpoints and "hooks.globex.example" not in endpoints
    assert ours.pk in deliveries and theirs.pk not in deliveries
    assert client.get(change_url(theirs.endpoint)).status_code == 302
    assert client.get(change_url(theirs)).status_code == 302
    client.post(changelist_url(WebhookDelivery), {"action": "retry_now", "_selected_action": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.status == "dead"


def test_the_delivery_log_shows_status_response_latency_error_and_every_attempt(login, acme):
    delivery = delivery_of(endpoint_of(acme.workspace))
    client = login("viewer")

    listing = client.get(changelist_url(WebhookDelivery)).content.decode()
    detail = client.get(change_url(delivery)).content.decode()

    for text in ("dead", "503", "412 ms", "HTTP 503 from the endpoint", "message.bounced"):
        assert text in listing
    assert "Connection timed out" in detail and "2025-01-15T10:05:00+00:00" in detail


def test_retry_now_sends_a_failed_delivery_again_and_is_audited(login, acme):
    delivery = delivery_of(endpoint_of(acme.workspace))
    client = login("operator")

    response = client.post(changelist_url(WebhookDelivery), {"action": "retry_now",
                                                              "_selected_action": [delivery.pk]}, follow=True)

    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at is not None
    assert any("Queued again 1 webhook delivery" in m for m in messages_of(response))
    assert AuditEvent.objects.get(action="webhook.delivery_retried", object_id=delivery.pk).actor == "user:operator"


def test_a_viewer_is_not_offered_retry(login, acme):
    delivery = delivery_of(endpoint_of(acme.workspace))
    client = login("viewer")

    page = client.get(changelist_url(WebhookDelivery))
    client.post(changelist_url(WebhookDelivery), {"action": "retry_now", "_selected_action": [delivery.pk]})

    assert "retry_now" not in page.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "dead"


@pytest.mark.parametrize("model", [WebhookEndpoint, WebhookDelivery])
def test_webhook_changelists_cost_the_same_whatever_they_hold(login, acme, model):
    client = login("operator")

    def grow(count):
        for n in range(count):
            delivery_of(endpoint_of(acme.workspace, f"https://hooks{n}.example/in"))

    def count_queries():
        client.get(changelist_url(model))
        with CaptureQueriesContext(connection) as captured:
            response = client.get(changelist_url(model))
        return len(captured), len(response.context["cl"].result_list)

    grow(2)
    small, rows_small = count_queries()
    grow(18)
    large, rows_large = count_queries()

    assert rows_large == rows_small + 18
    assert small == large
