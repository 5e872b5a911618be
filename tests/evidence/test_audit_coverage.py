"""Every change the contract lists (§4.9) writes exactly one well-formed audit event."""

import pytest

from audit import services as audit
from audit.models import AuditEvent
from tests.api.helpers import SMTP

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(api, workspace, sending_setup, make_user):
    ids = {"mailbox": sending_setup["mailboxes"][0].pk, "domain": sending_setup["domain"].pk}
    ids["user"] = make_user("riley")
    return ids


def _steps(api, workspace, world):
    from providers.services import rotate_all_credentials
    from workspaces import roles, services

    state = {}

    def provider_update():
        pid = api.post("/api/v1/providers", {**SMTP, "name": "second"}, format="json").json()["id"]
        state["provider"] = pid
        return api.patch(f"/api/v1/providers/{pid}", {"credentials": {"username": "u", "password": "new-secret"}},
                         format="json")

    def suppression_delete():
        sid = api.post("/api/v1/suppressions", {"value": "gone@example.com"}, format="json").json()["id"]
        return api.delete(f"/api/v1/suppressions/{sid}")

    def message_cancel():
        mid = api.post("/api/v1/messages", {"to": "c@example.com", "subject": "s", "text": "t"}, format="json").json()["id"]
        return api.post(f"/api/v1/messages/{mid}/cancel")

    def api_key_revoke():
        key, _ = services.create_api_key(workspace=workspace, name="temp")
        return services.revoke_api_key(key=key)

    return [
        ("role.granted", lambda: roles.grant_role(user=world["user"], workspace=workspace, role="viewer")),
        ("role.revoked", lambda: roles.revoke_role(user=world["user"], workspace=workspace)),
        ("api_key.created", lambda: services.create_api_key(workspace=workspace, name="k2")),
        ("api_key.revoked", api_key_revoke),
        ("provider.created", lambda: api.post("/api/v1/providers", {**SMTP, "name": "third"}, format="json")),
        ("provider.updated", provider_update),
        ("domain.created", lambda: api.post("/api/v1/domains", {"name": "new.example"}, format="json")),
        ("mailbox.updated", lambda: api.patch(f"/api/v1/mailboxes/{world['mailbox']}", {"daily_cap": 9}, format="json")),
        ("mailbox.paused", lambda: api.post(f"/api/v1/mailboxes/{world['mailbox']}/pause", {"reason": "r"}, format="json")),
        ("mailbox.resumed", lambda: api.post(f"/api/v1/mailboxes/{world['mailbox']}/resume")),
        ("pool.created", lambda: api.post("/api/v1/pools", {"name": "p2"}, format="json")),
        ("warmup_profile.created", lambda: api.post("/api/v1/warmup-profiles", {"name": "w", "start": 1, "step": 1},
                                                    format="json")),
        ("workspace.paused", lambda: api.post("/api/v1/workspace/pause", {"reason": "incident"}, format="json")),
        ("workspace.resumed", lambda: api.post("/api/v1/workspace/resume")),
        ("suppression.created", lambda: api.post("/api/v1/suppressions", {"value": "s@example.com"}, format="json")),
        ("suppression.deleted", suppression_delete),
        ("suppression.imported", lambda: api.post("/api/v1/suppressions/bulk", {"values": ["a@x.com"]}, format="json")),
        ("message.accepted", lambda: api.post("/api/v1/messages", {"to": "m@example.com", "subject": "s", "text": "t"},
                                              format="json")),
        ("message.rejected", lambda: api.post("/api/v1/messages", {"to": "s@example.com", "subject": "s", "text": "t"},
                                              format="json")),
        ("message.cancelled", message_cancel),
        ("audit.exported", lambda: b"".join(api.get("/api/v1/audit/export").streaming_content)),
        ("recipient.access_exported", lambda: api.get("/api/v1/recipients/m@example.com", {"format": "access"})),
        ("recipient.erased", lambda: api.post("/api/v1/recipients/m@example.com/erase")),
        ("credentials.key_rotated", rotate_all_credentials),
    ]


def test_each_audited_action_writes_one_well_formed_event(api, workspace, world):
    for action, step in _steps(api, workspace, world):
        before = AuditEvent.objects.filter(action=action).count()
        step()
        events = list(AuditEvent.objects.filter(action=action).order_by("-id"))
        assert len(events) - before == 1, f"{action}: {len(events) - before} events"
        event = events[0]
        assert event.actor_type in {"api_key", "system", "user"} and (event.actor_label or event.actor_id), action
        assert event.occurred_at and event.hash == audit.compute_hash(event), action
        assert event.object_type, action
        text = str((event.before, event.after, event.object_repr))
        assert "hunter2" not in text and "new-secret" not in text, action
        if event.actor_type == "api_key":
            assert event.request_id, action
    assert audit.verify(workspace).ok
    assert audit.verify(None).ok
