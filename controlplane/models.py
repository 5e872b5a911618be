"""The send pipeline's records: messages, canonical events, idempotency keys."""

from django.db import models

from controlplane.ids import id_field
from workspaces.models import ScopedQuerySet

STATUS_CHOICES = [(s, s) for s in (
    "scheduled", "queued", "sending", "sent", "delivered", "deferred", "bounced", "complained", "failed",
    "suppressed", "cancelled",
)]
# Before hand-off: capacity is reserved and may be given back.
WAITING_STATUSES = {"scheduled", "queued", "deferred"}
TERMINAL_STATUSES = {"sent", "delivered", "bounced", "complained", "failed", "suppressed", "cancelled"}

EVENT_TYPES = [
    "message.accepted", "message.scheduled", "message.sent", "message.delivered", "message.deferred",
    "message.bounced", "message.complained", "message.unsubscribed", "message.failed", "message.suppressed",
    "message.cancelled", "mailbox.paused", "mailbox.resumed", "domain.check_failed", "domain.check_passed",
    "suppression.created",
]


class Message(models.Model):
    workspace_lookup = "workspace"

    id = id_field("msg")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="messages")
    mailbox = models.ForeignKey("mailboxes.Mailbox", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="messages")
    pool = models.ForeignKey("mailboxes.Pool", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    pinned = models.BooleanField(default=False, help_text="`from` was given: never fails over to another mailbox.")
    to_address = models.CharField(max_length=320, db_index=True)
    from_address = models.CharField(max_length=320, blank=True)
    workload = models.CharField(max_length=50, default="cold")
    subject = models.CharField(max_length=998)
    text = models.TextField()
    html = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    thread_key = models.CharField(max_length=200, blank=True, db_index=True)
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, db_index=True)
    scheduled_at = models.DateTimeField(db_index=True)
    reserved_day = models.DateField(null=True, blank=True, help_text="The mailbox-local day whose cap this holds.")
    decision = models.JSONField(default=dict, blank=True, help_text="The policy's decision: mailbox, reason, counts seen.")
    message_id_header = models.CharField(max_length=300, blank=True, db_index=True)
    provider_message_id = models.CharField(max_length=300, blank=True, db_index=True)
    provider_response = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["workspace", "to_address"], name="message_ws_to"),
            models.Index(fields=["status", "scheduled_at"], name="message_due"),
            models.Index(fields=["workspace", "thread_key", "-created_at"], name="message_thread"),
        ]

    def __str__(self):
        return f"{self.id} → {self.to_address}"


class Event(models.Model):
    """A canonical event. `seq` orders the feed (`GET /events?after=`)."""

    workspace_lookup = "workspace"

    seq = models.BigAutoField(primary_key=True)
    id = models.CharField(max_length=40, unique=True)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="events")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=40, db_index=True)
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["workspace", "seq"], name="event_ws_seq")]

    def __str__(self):
        return f"{self.type} {self.id}"


class IdempotencyRecord(models.Model):
    """The first answer to an `Idempotency-Key`, replayed for repeats with the same body (kept ≥ 24 h)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="idempotency_key_unique")]
