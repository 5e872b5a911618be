from django.db import models

from controlplane.ids import id_field
from providers.crypto import EncryptedJSONField
from workspaces.models import ScopedQuerySet

KIND_CHOICES = [
    ("smtp", "SMTP"),
    ("google_workspace", "Google Workspace"),
    ("microsoft_365", "Microsoft 365"),
    ("ses", "Amazon SES"),
    ("mailgun", "Mailgun"),
    ("sendgrid", "SendGrid"),
    ("postmark", "Postmark"),
]


class ProviderConnection(models.Model):
    """A way to hand mail off: an SMTP server, a mailbox provider's API, or an ESP account."""

    workspace_lookup = "workspace"

    id = id_field("prv")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="providers")
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    name = models.CharField(max_length=200)
    settings = models.JSONField(default=dict, blank=True)
    credentials = EncryptedJSONField(default=dict, blank=True)
    credentials_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="provider_name_unique")]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"
