import datetime as dt
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.validators import slug_re
from django.db.models import Count
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from controlplane.admin_base import ReasonForm, WorkspaceScopedAdmin, WorkspaceScopedForm, scoped_choices
from mailboxes import jobs
from mailboxes.api.serializers import CHECK_NAMES, HOSTNAME_RE
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from mailboxes.services import breakers, caps, health, identities
from providers import limits

WEEKDAYS = [(1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"), (7, "Sun")]


# Circuit-breaker overrides (mailboxes, domains, workspaces) -------------------------------------


class PostponeForm(ReasonForm):
    hours = forms.IntegerField(min_value=1, max_value=24 * 90, initial=24,
                               help_text="Hours added to the automatic resume (counted from now if it was cancelled).")


class BreakerOverrideActions:
    """Actions on a scope a circuit breaker paused: resume now, postpone or cancel the automatic resume.

    Each asks for a reason and writes one audit entry; `breaker_perm` is the permission that may pause and
    resume the scope (defaults to the admin's `change_perm`)."""

    breaker_perm = None
    breaker_actions = ["resume_before_cooldown", "postpone_auto_resume", "cancel_auto_resume"]
    paused_lookup = {"paused": True}

    def has_breaker_permission(self, request, obj=None):
        return self.allowed(request, self.breaker_perm or self.change_perm, obj)

    def breaker_paused(self, queryset):
        return queryset.exclude(breaker_rule="").filter(**self.paused_lookup)

    @admin.action(description="Resume now, before the cool-down of an automatic pause ends",
                  permissions=["breaker"])
    def resume_before_cooldown(self, request, queryset):
        return self.act_with_reason(
            request, self.breaker_paused(queryset), perm=self.breaker_perm or self.change_perm,
            title="Resume before the cool-down ends", button="Resume now", done="resumed",
            apply=lambda scope, reason: breakers.resume_now(scope=scope, reason=reason))

    @admin.action(description="Postpone the automatic resume", permissions=["breaker"])
    def postpone_auto_resume(self, request, queryset):
        return self.act_with_form(
            request, self.breaker_paused(queryset), perm=self.breaker_perm or self.change_perm,
            title="Postpone the automatic resume", button="Postpone", form_class=PostponeForm, done="postponed",
            apply=lambda scope, data: breakers.postpone_auto_resume(scope=scope, hours=data["hours"],
                                                                    reason=data["reason"]))

    @admin.action(description="Cancel the automatic resume (stay paused until resumed by hand)",
                  permissions=["breaker"])
    def cancel_auto_resume(self, request, queryset):
        return self.act_with_reason(
            request, self.breaker_paused(queryset).exclude(resume_at=None),
            perm=self.breaker_perm or self.change_perm, title="Cancel the automatic resume",
            button="Cancel the automatic resume", done="kept paused",
            apply=lambda scope, reason: breakers.cancel_auto_resume(scope=scope, reason=reason))


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
class SendingDomainAdmin(BreakerOverrideActions, WorkspaceScopedAdmin):
    form = SendingDomainForm
    audit_name = "domain"
    readonly_on_change = ("workspace", "name")
    list_display = ("name", "workspace", "status", "checks_summary", "paused", "paused_reason", "mailbox_count",
                    "checked_at")
    list_filter = ("status", "paused", "workspace")
    search_fields = ("name",)
    list_select_related = ("workspace",)
    readonly_fields = ("status", "checked_at", "paused", "paused_reason", "checks_detail", "records_to_publish_table",
                       "health_warning", "breaker_rule", "resume_at", "health_since")
    actions = ["check_dns_now", "pause_domains", "resume_domains", *BreakerOverrideActions.breaker_actions]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "name"]
        return ["workspace", "name", "status", "checked_at", "checks_detail", "records_to_publish_table", "paused",
                "paused_reason", "health_warning", "breaker_rule", "resume_at", "health_since"]

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
            '<table id="records-to-publish"><thead><tr><th>Type</th><th>Name</th><th>Value</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>", (
                (r["type"], _copyable(r["name"], "name"), _copyable(r["value"], "value"),
                 _copyable(" ".join(f'"{s}"' for s in r["strings"]), "value as 255-character strings", show=False)
                 if len(r.get("strings") or []) > 1 else "")
                for r in obj.records_to_publish())),
        )

    @admin.action(description="Check DNS now", permissions=["change"])
    def check_dns_now(self, request, queryset):
        objects, left_out = self.permitted(request, queryset, self.change_perm)
        for domain in objects:
            jobs.enqueue_domain_check(domain.pk, "manual")
        if objects:
            names = ", ".join(d.name for d in objects[:10]) + (f" and {len(objects) - 10} more" if len(objects) > 10
                                                               else "")
            self.message_user(request, f"Queued DNS checks of {names}. Each domain's status and checks update here "
                                       "when its check finishes (usually within a minute).", messages.SUCCESS)
        if left_out:
            self.message_user(request, f"Left {left_out} domain{'s' if left_out != 1 else ''} unchecked: your role "
                                       "does not allow it in their workspace.", messages.WARNING)

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


def _copyable(text, what, show=True):
    """`text` with a button that copies it (controlplane/static/controlplane/copy.js)."""
    return format_html('<div class="cp-copy-row">{}<button type="button" class="cp-button cp-secondary cp-small" '
                       'data-copy="{}" title="Copy the {}">{}</button></div>',
                       format_html("<code>{}</code>", text) if show else "", text, what,
                       "Copy" if show else f"Copy the {what}")


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
        fields = ["workspace", "address", "display_name", "provider", "daily_cap", "weekly_cap", "hourly_cap",
                  "per_minute_cap", "min_interval_seconds", "jitter_seconds", "send_window_days", "send_window_start",
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
class MailboxAdmin(BreakerOverrideActions, WorkspaceScopedAdmin):
    form = MailboxForm
    paused_lookup = {"status": "paused"}
    audit_name = "mailbox"
    list_display = ("address", "workspace", "domain", "provider", "status_and_reason", "usage_today",
                    "usage_this_week", "last_used_at")
    list_filter = ("status", "workspace", "domain", "provider")
    search_fields = ("address", "display_name")
    list_select_related = ("workspace", "domain", "provider", "warmup_profile")
    readonly_fields = ("domain", "status", "paused_reason", "usage_summary", "last_used_at", "sending_verdict",
                       "breaker_state", "health_charts")
    actions = ["pause_mailboxes", "resume_mailboxes", "change_caps", "assign_warmup_profile", "move_to_pool",
               "retire_mailboxes", *BreakerOverrideActions.breaker_actions]
    fieldsets = (
        ("Can this mailbox send?", {"fields": ("sending_verdict",)}),
        ("Hard bounces and complaints, last 30 days", {"fields": ("health_charts",)}),
        ("Circuit breakers", {"fields": ("breaker_state",)}),
        (None, {"fields": ("workspace", "address", "display_name", "domain", "provider", "status", "paused_reason")}),
        ("Caps and usage", {"fields": ("daily_cap", "weekly_cap", "hourly_cap", "per_minute_cap", "usage_summary",
                                       "warmup_profile",
                                       "warmup_started_on")}),
        ("Pacing and window", {"fields": ("min_interval_seconds", "jitter_seconds", "send_window_days",
                                          "send_window_start", "send_window_end", "send_window_timezone")}),
        ("Rotation", {"fields": ("priority", "weight", "pools", "last_used_at")}),
    )

    def get_changelist(self, request, **kwargs):
        return UsageChangeList

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            hidden = {"domain", "status", "paused_reason", "usage_summary", "last_used_at", "sending_verdict",
                      "breaker_state", "health_charts"}
            return [(name, {**options, "fields": tuple(f for f in options["fields"] if f not in hidden)})
                    for name, options in self.fieldsets if any(f not in hidden for f in options["fields"])]
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

    # Bulk changes ------------------------------------------------------------------------------

    def _bulk_update(self, mailbox, **fields):
        mailbox = Mailbox.objects.select_for_update().select_related("workspace").get(pk=mailbox.pk)
        before = self.audit_snapshot(mailbox)
        if fields:
            Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
        return mailbox, before

    @admin.action(description="Change caps of the selected mailboxes", permissions=["change"])
    def change_caps(self, request, queryset):
        def apply(mailbox, data):
            fields = {name: data[name] for name in ("daily_cap", "weekly_cap") if data.get(name) is not None}
            mailbox, before = self._bulk_update(mailbox, **fields)
            self.record_change(mailbox, before)

        return self.act_with_form(request, queryset, perm=self.change_perm, title="Change caps",
                                  button="Change these caps", form_class=CapsForm, apply=apply, done="updated")

    @admin.action(description="Assign a warm-up profile to the selected mailboxes", permissions=["change"])
    def assign_warmup_profile(self, request, queryset):
        def apply(mailbox, data):
            profile = data["warmup_profile"]
            fields = {"warmup_profile": profile,
                      "warmup_started_on": (data["warmup_started_on"] or dt.date.today()) if profile else None}
            mailbox, before = self._bulk_update(mailbox, **fields)
            self.record_change(mailbox, before)

        return self.act_with_form(
            request, queryset, perm=self.change_perm, title="Assign a warm-up profile", button="Assign this profile",
            form_class=WarmupAssignForm, apply=apply, done="updated", check=one_workspace,
            form_kwargs=lambda objects: {"workspace": objects[0].workspace if objects else None})

    @admin.action(description="Move the selected mailboxes to a pool", permissions=["change"])
    def move_to_pool(self, request, queryset):
        def apply(mailbox, data):
            mailbox, before = self._bulk_update(mailbox)
            if not data["keep_other_pools"]:
                for pool in mailbox.pools.exclude(pk=data["pool"].pk):
                    pool.mailboxes.remove(mailbox)
            data["pool"].mailboxes.add(mailbox)
            self.record_change(mailbox, before)

        return self.act_with_form(
            request, queryset, perm=self.change_perm, title="Move mailboxes to a pool", button="Move to this pool",
            form_class=PoolMoveForm, apply=apply, done="moved", check=one_workspace,
            form_kwargs=lambda objects: {"workspace": objects[0].workspace if objects else None})

    @admin.action(description="Retire the selected mailboxes (no new sends, history kept)", permissions=["change"])
    def retire_mailboxes(self, request, queryset):
        def apply(mailbox, data):
            mailbox, before = self._bulk_update(mailbox, status="retired", paused_reason=data["reason"])
            self.record_change(mailbox, before, action="mailbox.retired")

        return self.act_with_form(
            request, queryset.exclude(status="retired"), perm=self.change_perm, title="Retire mailboxes",
            button="Retire these mailboxes", form_class=RetireForm, apply=apply, done="retired",
            intro="A retired mailbox is never chosen for a new send and cannot be pinned; its messages, events "
                  "and usage stay as they are; messages already waiting for it stay waiting until you cancel them.")

    def get_urls(self):
        from django.urls import path

        from controlplane.admin_onboarding import bulk_add_view

        view = self.admin_site.admin_view(lambda request: bulk_add_view(self, request))
        return [path("bulk-add/", view, name="mailboxes_mailbox_bulk_add"), *super().get_urls()]

    def get_object(self, request, object_id, from_field=None):
        queryset = self.get_queryset(request).select_related("workspace", "domain", "provider", "warmup_profile")
        try:
            return queryset.get(pk=object_id)
        except (Mailbox.DoesNotExist, ValueError):
            return None

    @staticmethod
    def _breakers(obj):
        """The breaker state of the page's mailbox, read once for the breaker block and the verdict."""
        if not hasattr(obj, "page_breakers"):
            obj.page_breakers = breakers.state_for(obj)
        return obj.page_breakers

    @admin.display(description="State")
    def breaker_state(self, obj):
        return render_to_string("admin/mailboxes/mailbox/breaker_state.html", {"b": self._breakers(obj)})

    @admin.display(description="Rates per day")
    def health_charts(self, obj):
        from controlplane.admin_dashboard import mailbox_rates

        return render_to_string("admin/mailboxes/mailbox/health_charts.html", {"rates": mailbox_rates(obj)})

    @admin.display(description="Verdict")
    def sending_verdict(self, obj):
        figures = self._breakers(obj)["scopes"][0]["figures"]
        return render_to_string("admin/mailboxes/mailbox/sending_verdict.html",
                                {"s": sending_state(obj, figures=figures)})


WEEKDAY_NAMES = dict(WEEKDAYS)


def one_workspace(objects):
    if len({m.workspace_id for m in objects}) > 1:
        return "Select mailboxes of one workspace: warm-up profiles and pools belong to a workspace."
    return None


class CapsForm(forms.Form):
    daily_cap = forms.IntegerField(min_value=0, required=False, help_text="Leave empty to keep each mailbox's.")
    weekly_cap = forms.IntegerField(min_value=0, required=False, help_text="Leave empty to keep each mailbox's.")

    def clean(self):
        cleaned = super().clean()
        daily, weekly = cleaned.get("daily_cap"), cleaned.get("weekly_cap")
        if daily is None and weekly is None and not self.errors:
            raise forms.ValidationError("Give a daily cap, a weekly cap, or both.")
        if daily is not None and weekly is not None and weekly < daily:
            self.add_error("weekly_cap", f"Must be at least the daily cap ({daily}).")
        return cleaned


class WarmupAssignForm(forms.Form):
    warmup_profile = forms.ModelChoiceField(queryset=WarmupProfile.objects.none(), required=False,
                                            empty_label="No warm-up (remove the profile)")
    warmup_started_on = forms.DateField(required=False, help_text="Day 1 of the ramp; empty: today.",
                                        widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["warmup_profile"].queryset = WarmupProfile.objects.filter(workspace=workspace).order_by("name")


class PoolMoveForm(forms.Form):
    pool = forms.ModelChoiceField(queryset=Pool.objects.none())
    keep_other_pools = forms.BooleanField(required=False, label="Keep them in their other pools too",
                                          help_text="Unticked: they leave every other pool.")

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pool"].queryset = Pool.objects.filter(workspace=workspace).order_by("name")


class RetireForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Kept on the mailbox and in the audit log.")


def _pct(value):
    return f"{(Decimal(value) * 100).quantize(Decimal('0.01'))}%"


def sending_state(mailbox, now=None, figures=None):
    """Whether `mailbox` can hand off a message now and, if not, every reason why and when it next can
    (`figures`: the mailbox's health rates, when already read)."""
    now = now or timezone.now()
    workspace, domain = mailbox.workspace, mailbox.domain
    usage = caps.usage(mailbox, now)
    blockers = []
    if workspace.paused:
        blockers.append(f"The workspace is paused: {workspace.paused_reason or 'no reason given'}.")
    if mailbox.status == "paused":
        blockers.append(f"The mailbox is paused: {mailbox.paused_reason or 'no reason given'}.")
    elif mailbox.status == "retired":
        blockers.append("The mailbox is retired: it takes no new sends (its history is kept).")
    elif mailbox.status == "error":
        blockers.append(f"The mailbox is in error: {mailbox.paused_reason or mailbox.last_error or 'see the last provider error'}.")
    if domain.paused:
        blockers.append(f"Its domain {domain.name} is paused: {domain.paused_reason or 'no reason given'}.")

    later = []
    next_at = None
    if usage["remaining_this_week"] == 0:
        later.append(f"The weekly cap of {mailbox.weekly_cap} is used up ({usage['this_week']} sent this week).")
    elif usage["remaining_today"] == 0:
        later.append(f"Today's cap of {usage['effective_cap_today']} is used up ({usage['today']} sent today).")
    if later:
        next_at = caps.next_available_at(mailbox, now)
    else:
        slot = caps.slot_on_day(mailbox, now)
        if slot is None:
            later.append("It is outside the send window now.")
            next_at = caps.next_available_at(mailbox, now)
        elif slot > now:
            next_at = slot
            if mailbox.next_slot_at and slot == mailbox.next_slot_at:
                later.append(f"Pacing: at least {mailbox.min_interval_seconds} s between sends.")
            else:
                later.append("The send window has not opened yet today.")

    warmup_day = usage.get("warmup_day")
    if warmup_day:
        allowance = mailbox.warmup_profile.allowance(warmup_day)
        if allowance < mailbox.daily_cap:
            cap_why = (f"warm-up day {warmup_day} of “{mailbox.warmup_profile.name}” allows {allowance} "
                       f"(below the daily cap of {mailbox.daily_cap})")
        else:
            cap_why = (f"the daily cap of {mailbox.daily_cap} (warm-up day {warmup_day} of "
                       f"“{mailbox.warmup_profile.name}” would allow {allowance})")
    else:
        cap_why = f"the daily cap of {mailbox.daily_cap} (no warm-up profile)"
    today = caps.local_day(mailbox, now)
    if reramp_day := breakers.reramp_day(mailbox, today):
        cap_why += (f"; re-ramp day {reramp_day} of {mailbox.reramp_days} after an automatic pause allows "
                    f"{breakers.reramp_allowance(mailbox, today)}")
    if usage["remaining_this_week"] < usage["effective_cap_today"] - usage["today"]:
        cap_why += f"; the weekly cap leaves only {usage['remaining_this_week']} this week"

    figures = figures or health.rates(mailbox)
    judged = figures["sends"] >= workspace.health_min_sends
    if blockers:
        verdict = "Cannot send"
    elif later:
        verdict = "Cannot send now"
    else:
        verdict = "Can send now"
    return {
        "verdict": verdict,
        "ok": not blockers and not later,
        "blockers": blockers,
        "later": later,
        "next_at": next_at,
        "no_next": (bool(later) and next_at is None and not blockers),
        "usage": usage,
        "cap_why": cap_why,
        "weekly_cap": mailbox.weekly_cap,
        "window": {"days": ", ".join(WEEKDAY_NAMES.get(d, str(d)) for d in sorted(mailbox.send_window_days or []))
                   or "no day", "start": mailbox.send_window_start.strftime("%H:%M"),
                   "end": mailbox.send_window_end.strftime("%H:%M"), "timezone": mailbox.send_window_timezone},
        "min_interval": mailbox.min_interval_seconds,
        "jitter": mailbox.jitter_seconds,
        "next_slot_at": mailbox.next_slot_at if mailbox.next_slot_at and mailbox.next_slot_at > now else None,
        "health": {
            "sends": figures["sends"], "hard_bounces": figures["hard_bounces"], "complaints": figures["complaints"],
            "hard_bounce_rate": _pct(figures["hard_bounce_rate"]), "complaint_rate": _pct(figures["complaint_rate"]),
            "hard_bounce_threshold": _pct(workspace.hard_bounce_threshold),
            "complaint_threshold": _pct(workspace.complaint_threshold),
            "hard_bounce_over": judged and figures["hard_bounce_rate"] > workspace.hard_bounce_threshold,
            "complaint_over": judged and figures["complaint_rate"] > workspace.complaint_threshold,
            "judged": judged, "min_sends": workspace.health_min_sends,
        },
        "domain": domain,
        "domain_checks": [(name, ((domain.checks or {}).get(name) or {}).get("status", "unchecked"))
                          for name in CHECK_NAMES],
        "last_error": mailbox.last_error,
        "rate_limits": _rate_limits(mailbox),
        "provider_warnings": limits.excess(mailbox),
        **_waiting(mailbox),
    }


WAIT_REASONS = {
    "send_at": "its requested send time", "send_window": "the send window", "pacing": "pacing between sends",
    "per_minute_cap": "the per-minute cap", "hourly_cap": "the hourly cap",
}


def _rate_limits(mailbox):
    parts = []
    if mailbox.hourly_cap is not None:
        parts.append(f"at most {mailbox.hourly_cap} per clock hour")
    if mailbox.per_minute_cap:
        parts.append(f"at most {mailbox.per_minute_cap} hand-offs in any 60 seconds")
    return "; ".join(parts)


def _waiting(mailbox, shown=10):
    """What the mailbox has waiting, soonest first, each with when it goes and why it waits (two queries)."""
    from controlplane.models import Message

    waiting = Message.objects.filter(mailbox=mailbox, status__in=["queued", "scheduled", "deferred"])
    rows = []
    for message in waiting.order_by("scheduled_at", "id").only("id", "to_address", "status", "scheduled_at",
                                                                "decision", "provider_response")[:shown]:
        if message.status == "deferred":
            why = f"a retry after a provider error ({(message.provider_response or 'no reply')[:120]})"
        else:
            why = WAIT_REASONS.get((message.decision or {}).get("wait_reason"), "due now")
        rows.append({"id": message.id, "to": message.to_address, "status": message.status,
                     "at": message.scheduled_at, "why": why})
    return {"waiting": rows, "waiting_total": waiting.count() if len(rows) == shown else len(rows)}
