"""A key's role decides what it may do: sequencer sends and suppresses, reviewer reads and exports, admin does all."""

import pytest

from audit.models import AuditEvent
from tests.api.helpers import SMTP, assert_error, create_identities

pytestmark = pytest.mark.django_db


@pytest.fixture
def ids(api):
    return create_identities(api)


@pytest.mark.parametrize("role", ["sequencer", "reviewer"])
def test_non_admin_keys_cannot_change_identities(make_api, workspace, ids, role):
    client = make_api(workspace, role)
    for path, body in [("domains", {"name": "x.com"}), ("providers", SMTP), ("pools", {"name": "p"}),
                       ("warmup-profiles", {"name": "w", "start": 1, "step": 1}),
                       ("mailboxes", {"address": "z@mail.acme.com", "provider": ids["provider"]})]:
        assert_error(client.post(f"/api/v1/{path}", body, format="json"), 403, "permission_denied")
        assert client.get(f"/api/v1/{path}").status_code == 200
    assert_error(client.patch(f"/api/v1/mailboxes/{ids['mailbox']}", {"daily_cap": 1}, format="json"), 403,
                 "permission_denied")
    assert_error(client.post(f"/api/v1/mailboxes/{ids['mailbox']}/pause", {"reason": "x"}, format="json"), 403,
                 "permission_denied")
    assert_error(client.post("/api/v1/workspace/pause", {"reason": "x"}, format="json"), 403, "permission_denied")


def test_admin_pauses_and_resumes_with_audit(api, workspace, ids):
    r = api.post(f"/api/v1/mailboxes/{ids['mailbox']}/pause", {"reason": "client asked"}, format="json")
    assert r.json()["status"] == "paused" and r.json()["paused_reason"] == "client asked"
    assert_error(api.post(f"/api/v1/mailboxes/{ids['mailbox']}/pause", {}, format="json"), 400, "validation_error")
    assert api.post(f"/api/v1/mailboxes/{ids['mailbox']}/resume").json()["status"] == "active"
    r = api.post("/api/v1/workspace/pause", {"reason": "incident"}, format="json")
    assert r.json()["paused"] is True and r.json()["paused_reason"] == "incident"
    assert api.post("/api/v1/workspace/resume").json()["paused"] is False
    actions = list(AuditEvent.objects.filter(workspace=workspace, action__contains="pause").values_list("action", flat=True))
    assert actions == ["mailbox.paused", "workspace.paused"]
    resumed = AuditEvent.objects.get(workspace=workspace, action="workspace.resumed")
    assert resumed.before == {"paused": True, "paused_reason": "incident"}


def test_updates_record_only_what_changed(api, workspace, ids):
    r = api.patch(f"/api/v1/mailboxes/{ids['mailbox']}", {"daily_cap": 25, "send_window": {
        "days": [1, 2, 3], "start": "09:00", "end": "17:30", "timezone": "Europe/Paris"}}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["send_window"] == {"days": [1, 2, 3], "start": "09:00", "end": "17:30", "timezone": "Europe/Paris"}
    event = AuditEvent.objects.filter(workspace=workspace, action="mailbox.updated").latest("seq")
    assert event.before["daily_cap"] == 30 and event.after["daily_cap"] == 25
    assert "address" not in event.after
    assert api.patch(f"/api/v1/pools/{ids['pool']}", {"mailboxes": []}, format="json").json()["mailboxes"] == []
    assert api.get(f"/api/v1/mailboxes/{ids['mailbox']}").json()["pools"] == []
