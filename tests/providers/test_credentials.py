"""Credentials are encrypted at rest, write-only in the API, and absent from the audit log and logs."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings

from audit.models import AuditEvent
from providers import services
from providers.models import ProviderConnection
from tests.api.helpers import SMTP

pytestmark = pytest.mark.django_db
SECRET = SMTP["credentials"]["password"]


def _raw_column(pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM providers_providerconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_secret_never_stored_returned_or_audited(api, workspace, caplog):
    caplog.set_level(logging.DEBUG)
    created = api.post("/api/v1/providers", SMTP, format="json").json()
    assert "credentials" not in created and created["has_credentials"] is True
    raw = _raw_column(created["id"])
    assert SECRET not in raw and "relay-user" not in raw
    assert ProviderConnection.objects.get(pk=created["id"]).credentials["password"] == SECRET
    listed = api.get("/api/v1/providers").content.decode()
    assert SECRET not in listed
    new_secret = "another-very-secret-value"
    r = api.patch(f"/api/v1/providers/{created['id']}",
                  {"credentials": {"username": "relay-user", "password": new_secret}}, format="json")
    assert r.status_code == 200 and "credentials" not in r.json()
    events = AuditEvent.objects.filter(workspace=workspace, object_id=created["id"]).order_by("seq")
    assert [e.action for e in events] == ["provider.created", "provider.updated"]
    assert events[1].after == {"credentials": "[changed]"}
    everything = " ".join(str((e.before, e.after)) for e in AuditEvent.objects.all())
    assert SECRET not in everything and new_secret not in everything
    assert SECRET not in caplog.text and new_secret not in caplog.text


def test_rotation_lets_the_old_key_go(workspace):
    old = Fernet.generate_key().decode()
    new = Fernet.generate_key().decode()
    with override_settings(CREDENTIALS_KEYS=[old]):
        connection_ = services.create_connection(workspace=workspace, kind="smtp", name="r",
                                                 settings={"host": "h", "port": 25, "security": "none"},
                                                 credentials={"username": "u", "password": SECRET})
        before = _raw_column(connection_.pk)
    with override_settings(CREDENTIALS_KEYS=[new, old]):
        assert services.rotate_all_credentials() == 1
    after = _raw_column(connection_.pk)
    assert after != before and SECRET not in after
    with override_settings(CREDENTIALS_KEYS=[new]):
        assert ProviderConnection.objects.get(pk=connection_.pk).credentials["password"] == SECRET
    with override_settings(CREDENTIALS_KEYS=[old]):
        with pytest.raises(Exception):
            ProviderConnection.objects.get(pk=connection_.pk).credentials


def test_log_filter_masks_secrets():
    from controlplane.logging import RedactSecretsFilter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "login with password=%s token: abc", ("pw1",), None)
    RedactSecretsFilter().filter(record)
    assert "pw1" not in record.getMessage() and "abc" not in record.getMessage()
