"""The append-only, hash-chained audit log: one chain per workspace (and one for events of no workspace)."""

from django.db import models

from controlplane.ids import id_field
from workspaces.models import ScopedQuerySet


class AppendOnlyError(RuntimeError):
    pass


class AuditEventQuerySet(ScopedQuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events are append-only.")

    def delete(self):
        raise AppendOnlyError("Audit events are append-only.")


class AuditChain(models.Model):
    """The head of one chain. Locked FOR UPDATE while an event is appended."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=40, unique=True)  # workspace id, or "global"
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="")
    # Retention cut: events up to `cut_seq` were removed; the first kept event follows `cut_hash`.
    cut_seq = models.BigIntegerField(default=0)
    cut_hash = models.CharField(max_length=64, blank=True)
    cut_at = models.DateTimeField(null=True, blank=True)


class AuditEvent(models.Model):
    workspace_lookup = "workspace"

    id = id_field("aud")
    workspace = models.ForeignKey(
        "workspaces.Workspace", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    chain = models.CharField(max_length=40)
    seq = models.BigIntegerField()
    occurred_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=150, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=150, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["chain", "seq"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_chain_seq_unique")]
        indexes = [models.Index(fields=["workspace", "occurred_at"], name="audit_ws_time"),
                   models.Index(fields=["action"], name="audit_action")]

    def __str__(self):
        return f"#{self.seq} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only.")

    @property
    def actor(self):
        return f"{self.actor_type}:{self.actor_label or self.actor_id}"
