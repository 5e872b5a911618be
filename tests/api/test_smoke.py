import pytest

pytestmark = pytest.mark.django_db


def test_domain_provider_mailbox_roundtrip(api):
    r = api.post("/api/v1/domains", {"name": "Mail.Acme.com"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["name"] == "mail.acme.com"
    assert r.json()["status"] == "unchecked"
    r = api.post("/api/v1/providers", {"kind": "smtp", "name": "relay", "settings": {"host": "127.0.0.1", "port": 2525, "security": "none"},
                                        "credentials": {"username": "u", "password": "s3cret"}}, format="json")
    assert r.status_code == 201, r.json()
    assert "credentials" not in r.json()
    provider = r.json()["id"]
    r = api.post("/api/v1/mailboxes", {"address": "jane@mail.acme.com", "provider": provider, "daily_cap": 20, "weekly_cap": 80}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["usage"]["effective_cap_today"] == 20
