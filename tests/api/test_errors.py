"""Every error has the contract's shape; bad input is explained per field and changes nothing."""

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from mailboxes.models import Mailbox
from providers.models import ProviderConnection
from tests.api.helpers import SMTP, assert_error, create_identities

pytestmark = pytest.mark.django_db


def test_missing_and_wrong_keys_are_401():
    client = APIClient()
    assert_error(client.get("/api/v1/domains"), 401, "not_authenticated")
    client.credentials(HTTP_AUTHORIZATION="Api-Key abc.def")
    assert_error(client.get("/api/v1/domains"), 401, "not_authenticated")


def test_revoked_key_is_401(workspace):
    from workspaces import services

    key, raw = services.create_api_key(workspace=workspace, name="k", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.get("/api/v1/domains").status_code == 200
    services.revoke_api_key(key=key)
    assert_error(client.get("/api/v1/domains"), 401, "not_authenticated")


def test_malformed_json_unknown_path_and_method(api):
    r = api.post("/api/v1/domains", data="{not json", content_type="application/json")
    assert_error(r, 400, "malformed_json")
    assert_error(api.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error(api.delete("/api/v1/domains"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"kind": "carrier-pigeon", "name": "x", "settings": {}, "credentials": {}}, "kind"),
        ({**SMTP, "settings": {"host": "h", "port": 99999, "security": "none"}}, "settings.port"),
        ({**SMTP, "credentials": {"username": "only-user"}}, "credentials"),
        ({**SMTP, "credentials": {"username": "u", "password": "p", "extra": "x"}}, "credentials"),
        ({"kind": "mailgun", "name": "mg", "settings": {"region": "us"}, "credentials": {"api_key": "k"}}, "settings.domain"),
    ],
)
def test_provider_validation(api, payload, field):
    error = assert_error(api.post("/api/v1/providers", payload, format="json"), 400, "validation_error")
    assert field in error["fields"], error
    assert ProviderConnection.objects.count() == 0


@pytest.mark.parametrize(
    "change, field",
    [
        ({"daily_cap": -1}, "daily_cap"),
        ({"daily_cap": 50, "weekly_cap": 40}, "weekly_cap"),
        ({"send_window": {"days": [1, 2], "start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"}}, "send_window"),
        ({"send_window": {"days": [8], "start": "09:00", "end": "17:00", "timezone": "UTC"}}, "send_window"),
        ({"send_window": {"days": [1], "start": "18:00", "end": "09:00", "timezone": "UTC"}}, "send_window"),
        ({"address": "not-an-address"}, "address"),
        ({"address": "bob@unknown-domain.com"}, "address"),
        ({"provider": "prv_nope"}, "provider"),
    ],
)
def test_mailbox_validation_changes_nothing(api, change, field):
    ids = create_identities(api)
    before_audit = AuditEvent.objects.count()
    payload = {"address": "bob@mail.acme.com", "provider": ids["provider"], **change}
    error = assert_error(api.post("/api/v1/mailboxes", payload, format="json"), 400, "validation_error")
    assert field in error["fields"], error
    assert Mailbox.objects.count() == 1
    r = api.patch(f"/api/v1/mailboxes/{ids['mailbox']}", {k: v for k, v in change.items() if k != "address"} or change,
                  format="json")
    assert r.status_code == 400
    mailbox = Mailbox.objects.get(pk=ids["mailbox"])
    assert (mailbox.daily_cap, mailbox.weekly_cap, mailbox.address) == (30, 120, "jane@mail.acme.com")
    assert AuditEvent.objects.count() == before_audit


def test_domain_and_warmup_validation(api):
    assert "name" in assert_error(api.post("/api/v1/domains", {"name": "not a domain"}, format="json"), 400,
                                  "validation_error")["fields"]
    api.post("/api/v1/domains", {"name": "acme.com"}, format="json")
    assert "name" in assert_error(api.post("/api/v1/domains", {"name": "ACME.com"}, format="json"), 400,
                                  "validation_error")["fields"]
    r = api.post("/api/v1/warmup-profiles", {"name": "bad", "start": 10, "step": 1, "max": 5}, format="json")
    assert "max" in assert_error(r, 400, "validation_error")["fields"]
    r = api.post("/api/v1/warmup-profiles", {"name": "bad", "schedule": [5, -1]}, format="json")
    assert "schedule" in assert_error(r, 400, "validation_error")["fields"]


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"] if schema["Content-Type"].startswith("application/vnd.oai.openapi+json") else None
    if paths is None:
        import yaml

        paths = yaml.safe_load(schema.content)["paths"]
    for path in ["/api/v1/mailboxes", "/api/v1/suppressions/check", "/api/v1/audit/export", "/api/v1/workspace/pause"]:
        assert any(p.rstrip("/") == path for p in paths), path
    assert client.get("/api/v1/docs/").status_code == 200
