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


class BreakerState(models.Model):
    """A sending scope's circuit-breaker state (workspace, domain, mailbox); see docs/circuit-breakers.md."""

    health_warning = models.CharField(
        max_length=1000, blank=True, help_text="The rates past a warn threshold, as of the crossing; empty when none.")
    health_warning_rules = models.JSONField(default=list, blank=True,
                                            help_text="The rules whose warn threshold is passed.")
    breaker_rule = models.CharField(
        max_length=40, blank=True, help_text="The rule whose automatic pause holds now; empty for a manual pause.")
    resume_at = models.DateTimeField(
        null=True, blank=True, help_text="When the cool-down ends and sending resumes automatically.")
    health_since = models.DateTimeField(
        null=True, blank=True, help_text="Rates count only sends after this (the last resume from a breaker pause).")

    class Meta:
        abstract = True


def _rate(default, help_text):
    return models.DecimalField(max_digits=5, decimal_places=4, default=Decimal(default),
                               validators=[MinValueValidator(0), MaxValueValidator(1)], help_text=help_text)


class Workspace(BreakerState):
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
    mailbox_hard_bounce_warn_threshold = _rate("0.025", "Warn about a mailbox whose hard-bounce rate passes this.")
    mailbox_complaint_warn_threshold = _rate("0.001", "Warn about a mailbox whose complaint rate passes this.")
    domain_hard_bounce_warn_threshold = _rate("0.05", "Warn about a domain whose hard-bounce rate passes this.")
    domain_hard_bounce_pause_threshold = _rate("0.10", "Pause a domain whose hard-bounce rate passes this.")
    domain_complaint_warn_threshold = _rate("0.001", "Warn about a domain whose complaint rate passes this.")
    domain_complaint_pause_threshold = _rate("0.003", "Pause a domain whose complaint rate passes this.")
    workspace_hard_bounce_warn_threshold = _rate("0.05", "Warn when the workspace's hard-bounce rate passes this.")
    workspace_hard_bounce_pause_threshold = _rate("0.10", "Pause the workspace when its hard-bounce rate passes this.")
    workspace_complaint_warn_threshold = _rate("0.001", "Warn when the workspace's complaint rate passes this.")
    workspace_complaint_pause_threshold = _rate("0.003", "Pause the workspace when its complaint rate passes this.")
    health_scope_window_days = models.PositiveIntegerField(
        default=7, validators=[MinValueValidator(1)],
        help_text="Domain and workspace rates are judged over the sends of this many last days.")
    breaker_cooldown_hours = models.PositiveIntegerField(
        default=24, validators=[MinValueValidator(1)],
        help_text="An automatic pause is resumed automatically after this many hours.")
    reramp_fraction = models.DecimalField(
        max_digits=3, decimal_places=2, default=Decimal("0.5"),
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(1)],
        help_text="After a resume from an automatic pause, a mailbox's cap starts at this fraction of its daily cap…")
    reramp_days = models.PositiveIntegerField(
        default=7, validators=[MinValueValidator(1)],
        help_text="…and climbs back to the full cap over this many days.")
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

    def clean(self):
        # The mailbox's warn thresholds are not checked against the contract's pause thresholds, which may be
        # changed on their own: a warn threshold above its pause threshold only warns as the pause happens.
        errors = {}
        pairs = [(f"{scope}_{metric}_warn_threshold", f"{scope}_{metric}_pause_threshold")
                 for scope in ("domain", "workspace") for metric in ("hard_bounce", "complaint")]
        for warn, pause in pairs:
            warn_value, pause_value = getattr(self, warn), getattr(self, pause)
            if warn_value is not None and pause_value is not None and warn_value > pause_value:
                errors[warn] = [f"Must not be above the matching pause threshold ({float(pause_value) * 100:g}%): "
                                "a rate would pause before it warns."]
        if errors:
            raise ValidationError(errors)

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
