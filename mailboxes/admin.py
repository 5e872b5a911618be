import datetime as dt

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.validators import slug_re
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from controlplane.admin_base import WorkspaceScopedAdmin, WorkspaceScopedForm, scoped_choices
from mailboxes.api.serializers import CHECK_NAMES, HOSTNAME_RE
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from mailboxes.services import caps, identities

WEEKDAYS = [(1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"), (7, "Sun")]


# Sending domains ----------------------------------------------------------------------------


class SendingDomainForm(WorkspaceScopedForm):
    class Meta:
        model = SendingDomain
        fields = ["workspace", "name"]

    def clean_name(self):
        name = self.cleaned_data["name"].strip().lower().rstrip(".")
        if not HOSTNAME_RE.match(name):
            raise forms.ValidationError(f"“{self.cleaned_data['name']}” is not a domain name (e.g. mail.acme.com).")
        return name


@admin.register(SendingDomain)
class SendingDomainAdmin(WorkspaceScopedAdmin):
    form = SendingDomainForm
    audit_name = "domain"
    readonly_on_change = ("workspace", "name")
    list_display = ("name", "workspace", "status", "checks_summary", "paused", "paused_reason", "mailbox_count",
                    "checked_at")
    list_filter = ("status", "paused", "workspace")
    search_fields = ("name",)
    list_select_related = ("workspace",)
    readonly_fields = ("status", "checked_at", "paused", "paused_reason", "checks_detail", "records_to_publish_table")
    actions = ["pause_domains", "resume_domains"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "name"]
        return ["workspace", "name", "status", "checked_at", "checks_detail", "records_to_publish_table", "paused",
                "paused_reason"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(mailbox_count=Count("mailboxes"))

    @admin.display(description="Mailboxes", ordering="mailbox_count")
    def mailbox_count(self, obj):
        return obj.mailbox_count

    @admin.display(description="Checks")
    def checks_summary(self, obj):
        checks = obj.checks or {}
        return ", ".join(f"{name}: {(checks.get(name) or {}).get('status', 'unchecked')}" for name in CHECK_NAMES)

    @admin.display(description="DNS checks")
    def checks_detail(self, obj):
        checks = obj.checks or {}
        rows = []
        for name in CHECK_NAMES:
            check = checks.get(name) or {"status": "unchecked", "message": "Not checked yet.", "records": []}
            rows.append((name, check.get("status", ""), check.get("message", ""),
                         "; ".join(str(r) for r in check.get("records") or [])))
        return format_html(
            "<table><thead><tr><th>Check</th><th>Status</th><th>Message</th><th>Records found</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="Records to publish")
    def records_to_publish_table(self, obj):
        return format_html(
            "<table><thead><tr><th>Type</th><th>Name</th><th>Value</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                             ((r["type"], r["name"], r["value"]) for r in obj.records_to_publish())),
        )

    @admin.action(description="Pause sending from the selected domains", permissions=["change"])
    def pause_domains(self, request, queryset):
        return self.act_with_reason(
            request, queryset, perm=self.change_perm, title="Pause sending domains", button="Pause these domains",
            apply=lambda domain, reason: identities.set_domain_paused(domain=domain, paused=True, reason=reason),
            done="paused",
        )

    @admin.action(description="Resume sending from the selected domains", permissions=["change"])
    def resume_domains(self, request, queryset):
        self.act_on_each(request, queryset.filter(paused=True), perm=self.change_perm, done="resumed",
                         apply=lambda domain: identities.set_domain_paused(domain=domain, paused=False))


# Warm-up profiles ---------------------------------------------------------------------------


class WarmupProfileForm(WorkspaceScopedForm):
    schedule = forms.JSONField(required=False, help_text="Explicit per-day allowances, e.g. [5, 10, 20]; the last "
                                                          "value holds. Leave empty to use start/step/max.")

    class Meta:
        model = WarmupProfile
        fields = ["workspace", "name", "start", "step", "max", "schedule"]

    def clean_schedule(self):
        return self.cleaned_data.get("schedule") or None


@admin.register(WarmupProfile)
class WarmupProfileAdmin(WorkspaceScopedAdmin):
    form = WarmupProfileForm
    audit_name = "warmup_profile"
    list_display = ("name", "workspace", "ramp", "mailbox_count", "created_at")
    list_filter = ("workspace",)
    search_fields = ("name",)
    list_select_related = ("workspace",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(mailbox_count=Count("mailboxes"))

    @admin.display(description="Mailboxes", ordering="mailbox_count")
    def mailbox_count(self, obj):
        return obj.mailbox_count

    @admin.display(description="Ramp")
    def ramp(self, obj):
        if obj.schedule:
            return "schedule " + ", ".join(str(n) for n in obj.schedule)
        ceiling = f", at most {obj.max}" if obj.max is not None else ""
        return f"{obj.start} on day 1, +{obj.step} a day{ceiling}"


# Pools --------------------------------------------------------------------------------------


class WorkloadsField(forms.CharField):
    """Workload names typed as a comma-separated list, stored as a sorted JSON list."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        names = sorted({part.strip() for part in (value or "").split(",") if part.strip()})
        invalid = [n for n in names if not slug_re.match(n)]
        if invalid:
            raise forms.ValidationError(f"Workload names are letters, digits, - and _: {', '.join(invalid)}.")
        return names


class PoolForm(WorkspaceScopedForm):
    workloads = WorkloadsField(required=False, help_text="Workloads routed to this pool, e.g. “cold, warm”.")

    class Meta:
        model = Pool
        fields = ["workspace", "name", "strategy", "workloads", "mailboxes"]


@admin.register(Pool)
class PoolAdmin(WorkspaceScopedAdmin):
    form = PoolForm
    audit_name = "pool"
    list_display = ("name", "workspace", "strategy", "workloads_list", "mailbox_count")
    list_filter = ("strategy", "workspace")
    search_fields = ("name",)
    list_select_related = ("workspace",)
    autocomplete_fields = ("mailboxes",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(mailbox_count=Count("mailboxes"))

    @admin.display(description="Mailboxes", ordering="mailbox_count")
    def mailbox_count(self, obj):
        return obj.mailbox_count

    @admin.display(description="Workloads")
    def workloads_list(self, obj):
        return ", ".join(obj.workloads or []) or "—"


# Mailboxes ----------------------------------------------------------------------------------


class MailboxForm(WorkspaceScopedForm):
    send_window_days = forms.TypedMultipleChoiceField(
        choices=WEEKDAYS, coerce=int, widget=forms.CheckboxSelectMultiple, label="Send window days",
    )
    pools = forms.ModelMultipleChoiceField(queryset=Pool.objects.none(), required=False)

    class Meta:
        model = Mailbox
        fields = ["workspace", "address", "display_name", "provider", "daily_cap", "weekly_cap",
                  "min_interval_seconds", "jitter_seconds", "send_window_days", "send_window_start",
                  "send_window_end", "send_window_timezone", "warmup_profile", "warmup_started_on", "priority",
                  "weight", "pools"]

    def clean_address(self):
        return self.cleaned_data["address"].strip().lower()

    def clean(self):
        cleaned = super().clean()
        workspace = self.target_workspace()
        address = cleaned.get("address")
        if workspace is not None and address:
            domain_name = address.rsplit("@", 1)[1]
            domain = SendingDomain.objects.for_workspace(workspace).filter(name=domain_name).first()
            if domain is None:
                self.add_error("address", f"{domain_name} is not a sending domain of {workspace}; "
                                          "add the domain first.")
            else:
                self.instance.domain = domain
        daily, weekly = cleaned.get("daily_cap"), cleaned.get("weekly_cap")
        if daily is not None and weekly is not None and weekly < daily:
            self.add_error("weekly_cap", f"Must be at least the daily cap ({daily}).")
        start, end = cleaned.get("send_window_start"), cleaned.get("send_window_end")
        if start and end and start >= end:
            self.add_error("send_window_end", "Must be after the start (windows do not span midnight).")
        if cleaned.get("warmup_profile") and not cleaned.get("warmup_started_on"):
            cleaned["warmup_started_on"] = dt.date.today()
        if "send_window_days" in cleaned:
            cleaned["send_window_days"] = sorted(set(cleaned["send_window_days"]))
        return cleaned


class UsageChangeList(ChangeList):
    """Reads the whole page's usage in one query."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        usage = caps.usage_for(self.result_list)
        for mailbox in self.result_list:
            mailbox.page_usage = usage.get(mailbox.pk)


@admin.register(Mailbox)
class MailboxAdmin(WorkspaceScopedAdmin):
    form = MailboxForm
    audit_name = "mailbox"
    list_display = ("address", "workspace", "domain", "provider", "status_and_reason", "usage_today",
                    "usage_this_week", "last_used_at")
    list_filter = ("status", "workspace", "domain", "provider")
    search_fields = ("address", "display_name")
    list_select_related = ("workspace", "domain", "provider", "warmup_profile")
    readonly_fields = ("domain", "status", "paused_reason", "usage_summary", "last_used_at")
    actions = ["pause_mailboxes", "resume_mailboxes"]
    fieldsets = (
        (None, {"fields": ("workspace", "address", "display_name", "domain", "provider", "status", "paused_reason")}),
        ("Caps and usage", {"fields": ("daily_cap", "weekly_cap", "usage_summary", "warmup_profile",
                                       "warmup_started_on")}),
        ("Pacing and window", {"fields": ("min_interval_seconds", "jitter_seconds", "send_window_days",
                                          "send_window_start", "send_window_end", "send_window_timezone")}),
        ("Rotation", {"fields": ("priority", "weight", "pools", "last_used_at")}),
    )

    def get_changelist(self, request, **kwargs):
        return UsageChangeList

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            hidden = {"domain", "status", "paused_reason", "usage_summary", "last_used_at"}
            return [(name, {**options, "fields": tuple(f for f in options["fields"] if f not in hidden)})
                    for name, options in self.fieldsets]
        if not self.has_change_permission(request, obj):
            return [(name, {**options, "fields": tuple("pool_names" if f == "pools" else f for f in options["fields"])})
                    for name, options in self.fieldsets]
        return self.fieldsets

    @admin.display(description="Pools")
    def pool_names(self, obj):
        return ", ".join(pool.name for pool in obj.pools.all()) or "—"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "pools" in form.base_fields:
            field_class = self.choice_field_class(request, multiple=True) or forms.ModelMultipleChoiceField
            form.base_fields["pools"] = field_class(
                queryset=scoped_choices(Pool, request), required=False, widget=forms.CheckboxSelectMultiple,
                initial=list(obj.pools.values_list("pk", flat=True)) if obj is not None else [],
                help_text="Pools this mailbox sends for.",
            )
        return form

    def save_related(self, request, form, formsets, change):
        if "pools" in form.cleaned_data:
            form.instance.pools.set(form.cleaned_data["pools"])
        super().save_related(request, form, formsets, change)

    def audit_snapshot(self, obj):
        data = super().audit_snapshot(obj)
        if obj.pk is not None and not obj._state.adding:
            data["pools"] = sorted(str(pk) for pk in obj.pools.values_list("pk", flat=True))
        return data

    @admin.display(description="Status", ordering="status")
    def status_and_reason(self, obj):
        return f"{obj.status}: {obj.paused_reason}" if obj.paused_reason else obj.status

    def _usage(self, obj):
        usage = getattr(obj, "page_usage", None)
        return usage if usage is not None else caps.usage(obj)

    @admin.display(description="Today / effective cap")
    def usage_today(self, obj):
        usage = self._usage(obj)
        return f"{usage['today']} / {usage['effective_cap_today']}"

    @admin.display(description="This week / weekly cap")
    def usage_this_week(self, obj):
        usage = self._usage(obj)
        return f"{usage['this_week']} / {obj.weekly_cap}"

    @admin.display(description="Usage")
    def usage_summary(self, obj):
        usage = self._usage(obj)
        warmup = f", warm-up day {usage['warmup_day']}" if usage.get("warmup_day") else ""
        return (f"{usage['today']} sent today of {usage['effective_cap_today']} allowed{warmup}; "
                f"{usage['this_week']} this week of {obj.weekly_cap} (local day {usage['local_day']}).")

    @admin.action(description="Pause the selected mailboxes", permissions=["change"])
    def pause_mailboxes(self, request, queryset):
        return self.act_with_reason(
            request, queryset, perm=self.change_perm, title="Pause mailboxes", button="Pause these mailboxes",
            apply=lambda mailbox, reason: identities.pause_mailbox(mailbox=mailbox, reason=reason), done="paused",
        )

    @admin.action(description="Resume the selected mailboxes", permissions=["change"])
    def resume_mailboxes(self, request, queryset):
        self.act_on_each(request, queryset.filter(status="paused"), perm=self.change_perm, done="resumed",
                         apply=lambda mailbox: identities.resume_mailbox(mailbox=mailbox))
