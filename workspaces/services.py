"""Workspace writes: creation, settings, the kill switch and API keys, all audited."""

from django.db import transaction

from audit import services as audit
from workspaces.models import Workspace, WorkspaceAPIKey


@transaction.atomic
def create_workspace(*, slug, name, timezone="UTC", postal_address="", sender_identification="") -> Workspace:
    workspace = Workspace(slug=slug, name=name, timezone=timezone, postal_address=postal_address,
                          sender_identification=sender_identification or name)
    workspace.full_clean()
    workspace.save()
    audit.record(workspace=workspace, action="workspace.created", obj=workspace, after=audit.snapshot(workspace))
    return workspace


@transaction.atomic
def set_paused(*, workspace: Workspace, paused: bool, reason: str = "", rule: str = "", resume_at=None,
               note: str = "", now=None) -> Workspace:
    """The kill switch, by hand or by the circuit breaker `rule` (until `resume_at`); `note` says why it resumes."""
    from mailboxes.services import breakers

    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    before = {"paused": workspace.paused, "paused_reason": workspace.paused_reason}
    workspace.paused, workspace.paused_reason = paused, reason if paused else ""
    fields, breaker_before, breaker_after = breakers.pause_change(workspace, paused=paused, rule=rule,
                                                                  resume_at=resume_at, now=now)
    workspace.save(update_fields=["paused", "paused_reason", "updated_at", *fields])
    audit.record(workspace=workspace, action="workspace.paused" if paused else "workspace.resumed", obj=workspace,
                 before={**before, **breaker_before},
                 after={"paused": workspace.paused, "paused_reason": workspace.paused_reason, **breaker_after,
                        **({"reason": note} if note else {})})
    if not paused:
        from controlplane.dispatch import enqueue_waiting

        enqueue_waiting(workspace=workspace)
    return workspace


@transaction.atomic
def create_api_key(*, workspace: Workspace, name: str, role: str = "sequencer") -> tuple[WorkspaceAPIKey, str]:
    if role not in dict(WorkspaceAPIKey.ROLE_CHOICES):
        raise ValueError(f"Unknown key role “{role}”; choose sequencer, reviewer or admin.")
    key, raw = WorkspaceAPIKey.objects.create_key(name=name, workspace=workspace, role=role)
    audit.record(workspace=workspace, action="api_key.created", obj=key, object_id=key.prefix,
                 after={"name": name, "role": role, "prefix": key.prefix})
    return key, raw


@transaction.atomic
def revoke_api_key(*, key: WorkspaceAPIKey) -> WorkspaceAPIKey:
    key = WorkspaceAPIKey.objects.select_for_update().get(pk=key.pk)
    if not key.revoked:
        key.revoked = True
        key.save(update_fields=["revoked"])
        audit.record(workspace=key.workspace, action="api_key.revoked", obj=key, object_id=key.prefix,
                     before={"revoked": False}, after={"revoked": True})
    return key
