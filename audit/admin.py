import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from audit import export
from audit.models import AuditEvent
from controlplane.admin_base import NOBODY, WorkspaceScopedAdmin, scoped
from workspaces.scoping import workspaces_for_user


class ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        actions = (scoped(AuditEvent.objects.all(), request.user, model_admin.view_perm)
                   .order_by("action").values_list("action", flat=True).distinct())
        return [(action, action) for action in actions]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


class ActorTypeFilter(admin.SimpleListFilter):
    title = "actor type"
    parameter_name = "actor_type"

    def lookups(self, request, model_admin):
        return [("user", "user"), ("api_key", "API key"), ("system", "system")]

    def queryset(self, request, queryset):
        return queryset.filter(actor_type=self.value()) if self.value() else queryset


class ExportForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=None, required=False)
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("jsonl", "JSON lines")], initial="csv")
    since = forms.DateTimeField(required=False, help_text="From this time (inclusive), UTC.",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, help_text="Until this time (exclusive), UTC.",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    action = forms.CharField(required=False, help_text="Only this action, e.g. mailbox.paused.")

    def __init__(self, *args, workspaces, all_allowed, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["workspace"]
        field.queryset = workspaces
        field.required = not all_allowed
        field.empty_label = "All workspaces" if all_allowed else None
        only = list(workspaces[:2])
        if len(only) == 1:
            field.initial = only[0].pk

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until <= since:
            self.add_error("until", "Must be after “since”.")
        return cleaned


@admin.register(AuditEvent)
class AuditEventAdmin(WorkspaceScopedAdmin):
    """The log is append-only: everyone who may read it reads it; no one adds, changes or deletes."""

    view_perm = "audit"
    change_perm = NOBODY
    add_perm = NOBODY
    delete_perm = NOBODY
    list_display = ("occurred_at", "workspace", "actor_display", "action", "object_type", "object_repr",
                    "request_id")
    list_filter = (ActionFilter, ActorTypeFilter, "occurred_at", "workspace")
    list_select_related = ("workspace",)
    search_fields = ("=object_id", "=request_id", "=actor_label", "object_repr")
    search_help_text = "An object id, request id or actor name (exact), or words of the object's name."
    ordering = ("-occurred_at",)
    show_full_result_count = False
    fields = ("workspace", "seq", "occurred_at", "actor_display", "ip", "request_id", "action", "object_type",
              "object_id", "object_repr", "before_pretty", "after_pretty", "prev_hash", "hash")
    readonly_fields = fields
    actions = None

    @admin.display(description="Actor")
    def actor_display(self, obj):
        return obj.actor

    @admin.display(description="Before")
    def before_pretty(self, obj):
        return _pretty(obj.before)

    @admin.display(description="After")
    def after_pretty(self, obj):
        return _pretty(obj.after)

    # Export ----------------------------------------------------------------------------------

    def has_export_permission(self, request):
        return self.allowed(request, "export_audit")

    def get_urls(self):
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name="audit_auditevent_export"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_export": self.has_export_permission(request)}
        return super().changelist_view(request, extra_context)

    def export_view(self, request):
        if not self.has_export_permission(request):
            raise PermissionDenied
        form = ExportForm(request.POST or None, workspaces=workspaces_for_user(request.user, "export_audit"),
                          all_allowed=request.user.is_superuser)
        if request.method == "POST" and form.is_valid():
            return self._stream_export(request, **form.cleaned_data)
        context = {
            **self.admin_site.each_context(request),
            "title": "Export the audit log",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/audit/auditevent/export.html", context)

    def _stream_export(self, request, *, workspace, format, since, until, action):
        filters = {"since": since, "until": until, "action": action or None}
        return export.streamed_response(workspace=workspace, fmt=format, filters=filters, via="admin")


def _pretty(value):
    if value is None:
        return "—"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))
