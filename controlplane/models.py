"""The send pipeline's records: messages, canonical events, idempotency keys."""

from django.db import models

from controlplane.ids import id_field
from providers.crypto import EncryptedJSONField
from workspaces.models import ScopedQuerySet

STATUS_CHOICES = [(s, s) for s in (
    "scheduled", "queued", "sending", "sent", "delivered", "deferred", "bounced", "complained", "failed",
    "suppressed", "cancelled",
)]
# Before hand-off: capacity is reserved and may be given back.
WAITING_STATUSES = {"scheduled", "queued", "deferred"}
TERMINAL_STATUSES = {"sent", "delivered", "bounced", "complained", "failed", "suppressed", "cancelled"}
# Handed off to a provider: the sends health rates and the dashboard's rate charts count.
HANDED_OFF_STATUSES = ("sent", "delivered", "bounced", "complained")

EVENT_TYPES = [
    "message.accepted", "message.scheduled", "message.sent", "message.delivered", "message.deferred",
    "message.bounced", "message.complained", "message.unsubscribed", "message.failed", "message.suppressed",
    "message.cancelled", "mailbox.paused", "mailbox.resumed", "domain.check_failed", "domain.check_passed",
    "suppression.created",
]


class Message(models.Model):
    workspace_lookup = "workspace"

    id = id_field("msg")
    # Indexes are those the queries need (Meta): each one is written again on every status change.
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="messages",
                                  db_index=False)
    mailbox = models.ForeignKey("mailboxes.Mailbox", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="messages", db_index=False)
    pool = models.ForeignKey("mailboxes.Pool", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             db_index=False)
    pinned = models.BooleanField(default=False, help_text="`from` was given: never fails over to another mailbox.")
    to_address = models.CharField(max_length=320)
    from_address = models.CharField(max_length=320, blank=True)
    workload = models.CharField(max_length=50, default="cold")
    subject = models.CharField(max_length=998)
    text = models.TextField()
    html = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    thread_key = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=STATUS_CHOICES)
    scheduled_at = models.DateTimeField()
    reserved_day = models.DateField(null=True, blank=True, help_text="The mailbox-local day whose cap this holds.")
    reserved_hour = models.DateTimeField(null=True, blank=True, help_text="The clock hour (UTC) whose hourly cap this holds.")
    decision = models.JSONField(default=dict, blank=True, help_text="The policy's decision: mailbox, reason, counts seen.")
    message_id_header = models.CharField(max_length=300, blank=True)
    provider_message_id = models.CharField(max_length=300, blank=True)
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
            models.Index(fields=["to_address"], name="message_to"),  # a recipient's history, in any workspace
            # Partial where a value comes later or not at all (ids at hand-off, thread keys when the sequencer
            # threads): a row without one is not written to the index on intake and on every status change.
            models.Index(fields=["message_id_header"], name="message_id_header",  # bounces and the admin search
                         condition=~models.Q(message_id_header="")),
            models.Index(fields=["provider_message_id"], name="message_provider_id",  # provider callbacks
                         condition=~models.Q(provider_message_id="")),
            models.Index(fields=["status", "scheduled_at"], name="message_due"),
            models.Index(fields=["workspace", "thread_key", "-created_at"], name="message_thread",
                         condition=~models.Q(thread_key="")),
            models.Index(fields=["workspace", "scheduled_at"], name="message_ws_scheduled"),
            # A mailbox's due messages in the order the claim takes them (`id` breaks ties), so a claim reads
            # only what it takes.
            models.Index(fields=["mailbox", "scheduled_at", "id"], name="message_mailbox_waiting",
                         condition=models.Q(status__in=["queued", "scheduled", "deferred"])),
            # A mailbox's handed-off sends in a time range (health rates, the per-minute cap, bounce matching),
            # from this index alone. Only handed-off messages have a `sent_at`, so no index of every row is needed.
            models.Index(fields=["mailbox", "sent_at"], name="message_mailbox_handed_off",
                         condition=models.Q(status__in=HANDED_OFF_STATUSES, sent_at__isnull=False)),
        ]

    def __str__(self):
        return self.id


class Event(models.Model):
    """A canonical event. `seq` orders the feed (`GET /events?after=`)."""

    workspace_lookup = "workspace"

    seq = models.BigAutoField(primary_key=True)
    id = models.CharField(max_length=40, unique=True)
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="events",
                                  db_index=False)
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="events",
                                db_index=False)
    type = models.CharField(max_length=40)
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["workspace", "seq"], name="event_ws_seq"),
            models.Index(fields=["workspace", "type", "occurred_at"], name="event_ws_type_time"),
            models.Index(fields=["message"], name="event_message"),
        ]

    def __str__(self):
        return f"{self.type} {self.id}"


class HandOff(models.Model):
    """The hand-off journal: "the provider accepted this message", written before anything more goes
    over that message's connection.

    One narrow row per accepted message is the only write of a burst per message (a batch's connections
    take turns, and each round's rows are one statement: `dispatch.Journal`); the status change to `sent`
    and the `message.sent` event (carried here, ready to insert) are applied from these rows once per
    claimed batch, in one transaction (`dispatch.apply_hand_offs`). A worker that dies before that
    leaves its rows behind, and the reconciler applies them before it releases the expired leases: so a
    message is handed off again only if its worker died between the provider's answer and this row
    (contract §4.8). A row exists only while its message is `sending`; `message_id` is a plain column
    (no foreign-key check per insert) as the row lives for one batch."""

    message_id = models.CharField(primary_key=True, max_length=40)
    event_id = models.CharField(max_length=40)
    sent_at = models.DateTimeField()
    message_id_header = models.CharField(max_length=300, blank=True)
    provider_message_id = models.CharField(max_length=300, blank=True)
    provider_response = models.TextField(blank=True)
    event_data = models.JSONField(default=dict)

    def __str__(self):
        return self.message_id


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


class WebhookEndpoint(models.Model):
    """Where a workspace wants its events: a URL, the event types it takes (empty: all) and a signing secret."""

    workspace_lookup = "workspace"

    id = id_field("whk")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    event_types = models.JSONField(default=list, blank=True, help_text="Event types delivered here; empty: every type.")
    description = models.CharField(max_length=300, blank=True)
    secret = EncryptedJSONField(default=dict, blank=True, help_text="{\"key\": \"whsec_...\"} (and \"previous_key\" "
                                "while a rotation overlaps), encrypted at rest.")
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Until then deliveries are signed with the previous secret too.")
    active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="The first failed attempt with no success since; cleared by a success.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = "webhook endpoint"

    def __str__(self):
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


# "dead": dead-lettered, given up after the retry schedule or because the endpoint is disabled.
DELIVERY_STATUSES = [(s, s) for s in ("pending", "succeeded", "dead")]


class WebhookDelivery(models.Model):
    """One event on its way to one endpoint: retried with backoff until it succeeds or is dead-lettered."""

    workspace_lookup = "endpoint__workspace"

    id = id_field("whd")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="webhook_deliveries")
    status = models.CharField(max_length=10, choices=DELIVERY_STATUSES, default="pending", db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempt_log = models.JSONField(default=list, blank=True,
                                   help_text="Every attempt: {at, status, latency_ms, error}.")
    replay = models.BooleanField(default=False, help_text="Created by a replay of the endpoint's events.")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint"),
                   models.Index(fields=["endpoint", "status", "-id"], name="webhook_delivery_status")]

    def __str__(self):
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class BounceScanState(models.Model):
    """How far the IMAP bounce reader has read one mailbox's inbox (UIDs only grow within a UIDVALIDITY)."""

    workspace_lookup = "mailbox__workspace"

    mailbox = models.OneToOneField("mailboxes.Mailbox", on_delete=models.CASCADE, related_name="bounce_scan")
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    bounces_found = models.PositiveIntegerField(default=0)

    objects = ScopedQuerySet.as_manager()

    def __str__(self):
        return f"{self.mailbox_id} @ {self.last_uid}"
