import datetime as dt
import zoneinfo

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from controlplane.ids import id_field
from providers.crypto import EncryptedJSONField
from workspaces.models import BreakerState, ScopedQuerySet, validate_timezone

CHECK_STATUSES = [("unchecked", "unchecked"), ("pass", "pass"), ("warn", "warn"), ("fail", "fail"),
                  ("unknown", "unknown")]


class SendingDomain(BreakerState):
    workspace_lookup = "workspace"

    id = id_field("dom")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="domains")
    name = models.CharField(max_length=253)
    status = models.CharField(max_length=10, choices=CHECK_STATUSES, default="unchecked")
    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    checks = models.JSONField(default=dict, blank=True)
    check_pause_reason = models.CharField(
        max_length=500, blank=True,
        help_text="The reason the DNS checks paused this domain with; they resume it only while it still reads so.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "name"]
        verbose_name = "sending domain"
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="domain_name_unique")]

    def __str__(self):
        return self.name

    def records_to_publish(self):
        """DNS records the operator should publish: every unretired DKIM key we generated, and DMARC."""
        records = [
            {"type": "TXT", "name": f"{key.selector}._domainkey.{self.name}", "value": key.txt_value(),
             "strings": key.txt_chunks()}
            for key in self.dkim_keys.all() if key.retired_at is None
        ]
        records.append({"type": "TXT", "name": f"_dmarc.{self.name}",
                        "value": f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{self.name}; adkim=r; aspf=r"})
        return records


class DomainCheckRun(models.Model):
    """One run of a domain's DNS checks: every result with the records seen, and what changed."""

    workspace_lookup = "domain__workspace"

    TRIGGER_CHOICES = [("created", "domain created"), ("manual", "on demand"), ("command", "checkdomains"),
                       ("schedule", "daily schedule")]

    id = id_field("dcr")
    domain = models.ForeignKey(SendingDomain, on_delete=models.CASCADE, related_name="check_runs")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    trigger = models.CharField(max_length=10, choices=TRIGGER_CHOICES, default="manual")
    status = models.CharField(max_length=10, choices=CHECK_STATUSES)
    previous_status = models.CharField(max_length=10, choices=CHECK_STATUSES)
    checks = models.JSONField(default=dict, help_text="{spf, dkim, dmarc, mx, blocklists}: {status, message, records}.")
    changes = models.JSONField(default=list, blank=True,
                               help_text="Checks whose status changed: [{check, before, after, message}].")

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "-started_at"]
        verbose_name = "domain check run"
        indexes = [models.Index(fields=["domain", "-started_at"], name="domain_check_run_recent")]

    def __str__(self):
        return f"{self.domain} {self.status} at {self.started_at:%Y-%m-%d %H:%M}"


class WarmupProfile(models.Model):
    """A declarative ramp: `start`/`step`/`max`, or an explicit per-day `schedule` (last value holds)."""

    workspace_lookup = "workspace"

    id = id_field("wup")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="warmup_profiles")
    name = models.CharField(max_length=200)
    start = models.PositiveIntegerField(null=True, blank=True, help_text="Sends allowed on day 1.")
    step = models.PositiveIntegerField(null=True, blank=True, help_text="Added on each later day.")
    max = models.PositiveIntegerField(null=True, blank=True, help_text="Never above this (blank: no ceiling but the mailbox cap).")
    schedule = models.JSONField(null=True, blank=True, help_text="Explicit per-day allowances, e.g. [5, 10, 20]; the last value holds.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="warmup_name_unique")]

    def __str__(self):
        return self.name

    def clean(self):
        errors = validate_ramp(self.start, self.step, self.max, self.schedule)
        if errors:
            raise ValidationError(errors)

    def allowance(self, day_number: int) -> int:
        """Sends allowed on day `day_number` of warm-up (day 1 is the start date)."""
        day_number = max(day_number, 1)
        if self.schedule:
            return int(self.schedule[min(day_number, len(self.schedule)) - 1])
        value = (self.start or 0) + (self.step or 0) * (day_number - 1)
        return min(value, self.max) if self.max is not None else value


def validate_ramp(start, step, maximum, schedule):
    errors = {}
    if schedule not in (None, []):
        if not isinstance(schedule, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in schedule
        ):
            errors["schedule"] = ["Must be a list of whole numbers ≥ 0, one per day."]
        if start is not None or step is not None or maximum is not None:
            errors["schedule"] = ["Give either a schedule or start/step/max, not both."]
    else:
        if start is None:
            errors["start"] = ["Give start (and step, max) or a schedule."]
        if step is None and start is not None:
            errors["step"] = ["Required with start."]
        if maximum is not None and start is not None and maximum < start:
            errors["max"] = ["Must be at least start."]
    return errors


def default_window_days():
    return [1, 2, 3, 4, 5]


class Mailbox(BreakerState):
    workspace_lookup = "workspace"

    STATUS_CHOICES = [("active", "active"), ("paused", "paused"), ("retired", "retired"), ("error", "error")]

    id = id_field("mbx")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="mailboxes")
    domain = models.ForeignKey(SendingDomain, on_delete=models.PROTECT, related_name="mailboxes")
    address = models.EmailField(max_length=254)
    display_name = models.CharField(max_length=200, blank=True)
    provider = models.ForeignKey("providers.ProviderConnection", on_delete=models.PROTECT, related_name="mailboxes")
    daily_cap = models.PositiveIntegerField(default=30, validators=[MinValueValidator(0)])
    weekly_cap = models.PositiveIntegerField(default=150, validators=[MinValueValidator(0)])
    hourly_cap = models.PositiveIntegerField(null=True, blank=True, help_text="Sends per clock hour (blank: no hourly limit).")
    per_minute_cap = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Hand-offs in any 60 seconds (blank: no per-minute limit).")
    min_interval_seconds = models.PositiveIntegerField(default=60)
    jitter_seconds = models.PositiveIntegerField(default=0, help_text="Random extra delay, up to this, between sends.")
    send_window_days = models.JSONField(default=default_window_days, help_text="ISO weekdays, 1 = Monday.")
    send_window_start = models.TimeField(default=dt.time(8, 0))
    send_window_end = models.TimeField(default=dt.time(18, 0))
    send_window_timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    warmup_profile = models.ForeignKey(WarmupProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="mailboxes")
    warmup_started_on = models.DateField(null=True, blank=True)
    priority = models.IntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default="active")
    paused_reason = models.CharField(max_length=500, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Last reservation (round-robin order).")
    next_slot_at = models.DateTimeField(null=True, blank=True, help_text="Earliest time the next send may be paced.")
    last_error = models.TextField(blank=True)
    reramp_started_at = models.DateTimeField(
        null=True, blank=True, help_text="Resumed from an automatic pause at this time: its cap re-ramps from then.")
    reramp_fraction = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True,
                                          help_text="The fraction of the daily cap the re-ramp starts at.")
    reramp_days = models.PositiveIntegerField(null=True, blank=True, help_text="Days the re-ramp lasts.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "address"]
        verbose_name_plural = "mailboxes"
        constraints = [models.UniqueConstraint(fields=["workspace", "address"], name="mailbox_address_unique")]

    def __str__(self):
        return self.address

    @property
    def tz(self):
        return zoneinfo.ZoneInfo(self.send_window_timezone)

    @property
    def send_window(self):
        return {
            "days": self.send_window_days,
            "start": self.send_window_start.strftime("%H:%M"),
            "end": self.send_window_end.strftime("%H:%M"),
            "timezone": self.send_window_timezone,
        }


class MailboxDailyUsage(models.Model):
    """Sends reserved or handed off by one mailbox on one local calendar day.

    Written only by mailboxes.services.caps; the ISO-week figure is the sum of its days.
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mailbox", "day"], name="usage_mailbox_day_unique")]


class MailboxHourlyUsage(models.Model):
    """Sends reserved by one mailbox in one clock hour (UTC start), for `hourly_cap`.

    Written only by mailboxes.services.caps, beside the daily row of the same reservation.
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="hourly_usage")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mailbox", "hour"], name="usage_mailbox_hour_unique")]


class Pool(models.Model):
    workspace_lookup = "workspace"

    STRATEGY_CHOICES = [("round_robin", "round robin"), ("weighted", "weighted"), ("priority", "priority")]

    id = id_field("pool")
    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=200)
    strategy = models.CharField(max_length=20, choices=STRATEGY_CHOICES, default="round_robin")
    workloads = models.JSONField(default=list, blank=True, help_text="Workloads routed here, e.g. [\"cold\"].")
    mailboxes = models.ManyToManyField(Mailbox, blank=True, related_name="pools")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="pool_name_unique")]

    def __str__(self):
        return self.name


class DkimKey(models.Model):
    """A DKIM signing key we generated for a domain. The private key is encrypted like credentials."""

    workspace_lookup = "domain__workspace"

    id = id_field("dkim")
    domain = models.ForeignKey(SendingDomain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    private_key = EncryptedJSONField(help_text="{\"pem\": ...}, encrypted at rest.")
    public_key = models.TextField(help_text="Base64 DER SubjectPublicKeyInfo, as published in p=.")
    key_bits = models.PositiveIntegerField(default=2048)
    active = models.BooleanField(default=True, help_text="Signs outgoing mail. One active key per domain.")
    retired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["domain", "-created_at"]
        verbose_name = "DKIM key"
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkim_selector_unique"),
            models.UniqueConstraint(fields=["domain"], condition=models.Q(active=True), name="dkim_one_active"),
        ]

    def __str__(self):
        return f"{self.selector}._domainkey.{self.domain.name}"

    def txt_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_key}"

    def txt_chunks(self) -> list[str]:
        """The TXT value split into 255-byte strings, as DNS requires."""
        value = self.txt_value()
        return [value[i:i + 255] for i in range(0, len(value), 255)]
