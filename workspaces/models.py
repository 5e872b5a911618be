import zoneinfo
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from controlplane.ids import id_field


def validate_timezone(value):
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(f"“{value}” is not a known IANA time zone (e.g. Europe/Paris).")


class ScopedQuerySet(models.QuerySet):
    """Every workspace-owned model's queryset; see workspaces/scoping.py."""

    def for_workspace(self, workspace):
        return self.filter(**{self.model.workspace_lookup: workspace})

    def for_user(self, user, perm="view"):
        from workspaces.scoping import workspaces_for_user

        if user.is_superuser:
            return self.all()
        return self.filter(**{f"{self.model.workspace_lookup}__in": workspaces_for_user(user, perm)})


class WorkspaceQuerySet(models.QuerySet):
    def for_user(self, user, perm="view"):
        from workspaces.scoping import workspaces_for_user

        return workspaces_for_user(user, perm)


class Workspace(models.Model):
    workspace_lookup = "pk"

    id = id_field("ws")
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    sender_identification = models.CharField(
        max_length=300, blank=True, help_text="Who is sending, appended to cold mail (e.g. “Acme Ltd”)."
    )
    postal_address = models.TextField(blank=True, help_text="Appended to cold mail with the opt-out line.")
    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=500, blank=True)
    hard_bounce_threshold = models.DecimalField(
        max_digits=5, decimal_places=4, default=Decimal("0.05"),
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Pause a mailbox whose hard-bounce rate passes this fraction.",
    )
    complaint_threshold = models.DecimalField(
        max_digits=5, decimal_places=4, default=Decimal("0.003"),
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Pause a mailbox whose complaint rate passes this fraction.",
    )
    health_min_sends = models.PositiveIntegerField(
        default=20, help_text="Rates are judged only over at least this many recent sends."
    )
    pause_domains_on_auth_failure = models.BooleanField(
        default=True,
        help_text="Pause a domain's sending while its SPF, DKIM or DMARC check fails; resume when they pass.",
    )
    message_body_retention_days = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)],
        help_text="Message subjects, bodies, headers and metadata are removed after this many days.")
    event_retention_days = models.PositiveIntegerField(
        default=400, validators=[MinValueValidator(1)], help_text="Canonical events are deleted after this many days.")
    audit_retention_days = models.PositiveIntegerField(
        default=2557, validators=[MinValueValidator(365)],
        help_text="Audit events older than this are removed; the chain stays verifiable from the cut.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("manage_identities", "Manage domains, providers, mailboxes, pools and warm-up"),
            ("manage_suppressions", "Add and import suppressions"),
            ("delete_suppressions", "Remove suppressions"),
            ("manage_messages", "Send and cancel messages"),
            ("manage_webhooks", "Manage webhook endpoints"),
            ("manage_api_keys", "Create and revoke API keys"),
            ("manage_roles", "Grant and revoke roles"),
            ("pause_workspace", "Pause and resume the workspace"),
            ("view_audit", "Read the audit log"),
            ("export_audit", "Export the audit log"),
            ("role_owner", "Role: owner"),
            ("role_admin", "Role: admin"),
            ("role_operator", "Role: operator"),
            ("role_reviewer", "Role: reviewer"),
            ("role_viewer", "Role: viewer"),
        ]

    def __str__(self):
        return self.name

    @property
    def workspace(self):
        return self

    @property
    def tz(self):
        return zoneinfo.ZoneInfo(self.timezone)


class WorkspaceAPIKey(AbstractAPIKey):
    """An API key bound to exactly one workspace. Only the hash is stored."""

    workspace_lookup = "workspace"

    ROLE_CHOICES = [("sequencer", "sequencer"), ("reviewer", "reviewer"), ("admin", "admin")]

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    role = models.CharField(max_length=20, choices=ROLE_CHOICES, default="sequencer")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"
