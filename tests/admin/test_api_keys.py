"""API keys in the admin: the raw key shown once, the hash never, revocation audited."""

import re

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.admin.conftest import add_url, changelist_url, messages_of, url
from workspaces.models import WorkspaceAPIKey

pytestmark = pytest.mark.django_db


def api_status(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client.get("/api/v1/workspace").status_code


def create_key(client, acme, name="crm sync"):
    response = client.post(add_url(WorkspaceAPIKey), {"workspace": acme.workspace.pk, "name": name,
                                                      "role": "sequencer"}, follow=True)
    [notice] = [m for m in messages_of(response) if "API key" in m]
    raw = re.search(r"is: (\S+) ", notice).group(1)
    return WorkspaceAPIKey.objects.get(name=name), raw, response


def test_a_new_key_is_shown_once_and_works(login, acme):
    client = login("admin")
    key, raw, response = create_key(client, acme)

    assert api_status(raw) == 200
    assert raw not in client.get(changelist_url(WorkspaceAPIKey)).content.decode()
    assert key.workspace == acme.workspace and key.role == "sequencer"
    assert AuditEvent.objects.get(action="api_key.created", object_id=key.prefix).actor == "user:admin"


def test_the_hashed_key_never_appears_in_a_page(login, acme):
    client = login("admin")
    key, raw, created_page = create_key(client, acme)
    pages = [
        created_page,
        client.get(changelist_url(WorkspaceAPIKey)),
        client.get(url("workspaces_workspaceapikey_change", key.prefix)),
        client.get(url("index")),
    ]

    for page in pages:
        assert page.status_code == 200
        assert key.hashed_key not in page.content.decode()
    assert key.prefix in pages[1].content.decode()


def test_revoking_keys_stops_them_and_is_audited(login, acme):
    client = login("admin")
    key, raw, _ = create_key(client, acme)

    response = client.post(changelist_url(WorkspaceAPIKey), {"action": "revoke_keys", "_selected_action": [key.prefix],
                                                             "index": 0}, follow=True)

    assert "Revoked 1 API key." in messages_of(response)
    key.refresh_from_db()
    assert key.revoked
    assert api_status(raw) in (401, 403)
    assert AuditEvent.objects.get(action="api_key.revoked", object_id=key.prefix).actor == "user:admin"


def test_a_key_cannot_be_edited_or_deleted(login, acme):
    client = login("admin")
    page = client.get(url("workspaces_workspaceapikey_change", acme.key.prefix)).content.decode()

    assert 'name="_save"' not in page
    assert client.post(url("workspaces_workspaceapikey_delete", acme.key.prefix), {"post": "yes"}).status_code == 403
    assert WorkspaceAPIKey.objects.filter(pk=acme.key.pk).exists()


def test_viewers_see_keys_but_cannot_revoke_them(login, acme):
    client = login("viewer")
    listing = client.get(changelist_url(WorkspaceAPIKey)).content.decode()
    client.post(changelist_url(WorkspaceAPIKey), {"action": "revoke_keys", "_selected_action": [acme.key.prefix],
                                                  "index": 0})

    assert acme.key.name in listing
    assert "Revoke the selected keys" not in listing
    acme.key.refresh_from_db()
    assert not acme.key.revoked
