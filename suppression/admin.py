import io

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from controlplane.admin_base import NOBODY, WorkspaceScopedAdmin, WorkspaceScopedForm, access, adopt
from suppression import services
from suppression.models import REASON_CHOICES, ProviderSuppressionSync, Suppression
from workspaces.scoping import workspaces_for_user

INVALID_SHOWN = 20
AGENCY_WIDE = "Agency-wide (every workspace)"
WORKSPACE_REQUIRED = "Choose a workspace: only superusers add agency-wide entries."


class SuppressionForm(WorkspaceScopedForm):
    value = forms.CharField(max_length=320, label="Address or @domain",
                            help_text="jane@acme.com suppresses one address; @acme.com every address at the domain "
                                      "(not its subdomains); @*.acme.com every address at any subdomain of acme.com "
                                      "(mail.acme.com, a.b.acme.com), not at acme.com itself.")

    class Meta:
        model = Suppression
        fields = ["workspace", "value", "reason", "note"]

    def clean_value(self):
        try:
            return services.normalise(self.cleaned_data["value"])
        except services.InvalidValue as exc:
            raise forms.ValidationError(str(exc))

    def clean(self):
        cleaned = super().clean()
        workspace, value = self.target_workspace(), cleaned.get("value")
        if value and (workspace is not None or "workspace" not in self.errors):
            existing = Suppression.objects.for_workspace(workspace).filter(
                value_hash=services.value_hash(value)).first()
            if existing is not None:
                self.add_error("value", f"{value} is already suppressed in {workspace or 'every workspace'} "
                                        f"(reason: {existing.get_reason_display()}, since "
                                        f"{existing.created_at:%Y-%m-%d}).")
        return cleaned


class ImportForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=None, error_messages={"required": WORKSPACE_REQUIRED})
    file = forms.FileField(help_text="A CSV with a column named email, address or value (else the first column is "
                                     "used), or a text file with one address or @domain per line.")
    reason = forms.ChoiceField(choices=REASON_CHOICES, initial="import")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args, workspaces, allow_global=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].queryset = workspaces
        if allow_global:
            self.fields["workspace"].required = False
            self.fields["workspace"].empty_label = AGENCY_WIDE
            self.fields["workspace"].help_text = "Empty: the agency-wide list, which blocks sends in every workspace."
        only = list(workspaces[:2])
        if len(only) == 1 and not allow_global:
            self.fields["workspace"].initial = only[0].pk


class ScopeFilter(admin.SimpleListFilter):
    title = "list"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [("global", "Agency-wide"), ("workspace", "Workspaces' own")]

    def queryset(self, request, queryset):
        if self.value() in ("global", "workspace"):
            return queryset.filter(workspace__isnull=self.value() == "global")
        return queryset


@admin.register(Suppression)
class SuppressionAdmin(WorkspaceScopedAdmin):
    """Workspace lists and the agency-wide list (no workspace): everyone who sees a workspace sees the
    agency-wide entries, which block its sends too; only superusers add or remove them."""

    form = SuppressionForm
    change_perm = NOBODY
    add_perm = "suppressions"
    delete_perm = "delete_suppressions"
    audit_name = "suppression"
    list_display = ("__str__", "applies_in", "kind", "reason", "source", "created_by", "created_at")
    list_filter = ("reason", ScopeFilter, "kind", "workspace")
    list_select_related = ("workspace",)
    search_fields = ("value",)
    search_help_text = "An exact address, @domain or @*.domain (any case)."
    show_full_result_count = False
    readonly_fields = ("applies_in", "unsubscribe_evidence")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "value", "reason", "note"]
        return ["applies_in", "value", "kind", "reason", "source", "source_event", "unsubscribe_evidence", "note",
                "created_by", "created_at"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if not access(request).is_superuser and access(request).can_anywhere(self.view_perm):
            queryset = queryset | Suppression.objects.filter(workspace__isnull=True)
        return queryset

    def has_view_permission(self, request, obj=None):
        if obj is not None and obj.workspace_id is None:
            return self.allowed(request, self.view_perm)
        return super().has_view_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "workspace":
            field.error_messages["required"] = WORKSPACE_REQUIRED
            field.required = not access(request).is_superuser
            if not field.required:
                field.empty_label = AGENCY_WIDE
                field.help_text = "Empty: the agency-wide list, which blocks sends in every workspace."
        return field

    @admin.display(description="Applies in", ordering="workspace__name")
    def applies_in(self, obj):
        return obj.workspace or AGENCY_WIDE

    @admin.display(description="Unsubscribe evidence")
    def unsubscribe_evidence(self, obj):
        evidence = obj.evidence or {}
        if not evidence:
            return "—"
        return format_html("{} at {} from IP {} with user agent “{}” (message {})",
                           evidence.get("method", "").replace("_", " "), evidence.get("at", "?"),
                           evidence.get("ip") or "?", evidence.get("user_agent") or "?", evidence.get("message", "?"))

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            digest = services.value_hash(services.normalise(term))
        except services.InvalidValue:
            return queryset.none(), False
        return queryset.filter(value_hash=digest), False

    def save_model(self, request, obj, form, change):
        if obj.workspace is None and not access(request).is_superuser:
            raise PermissionDenied
        entry, _ = services.suppress(workspace=obj.workspace, value=form.cleaned_data["value"], reason=obj.reason,
                                     note=obj.note, source="admin")
        adopt(obj, entry)

    def record_save(self, request, obj, change):
        pass

    def delete_model(self, request, obj):
        services.remove(entry=obj)

    # Import ----------------------------------------------------------------------------------

    def has_import_permission(self, request):
        return self.has_add_permission(request)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="suppression_suppression_import"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_import": self.has_import_permission(request)}
        return super().changelist_view(request, extra_context)

    def import_view(self, request):
        if not self.has_import_permission(request):
            raise PermissionDenied
        workspaces = workspaces_for_user(request.user, self.add_perm)
        form = ImportForm(request.POST or None, request.FILES or None, workspaces=workspaces,
                          allow_global=access(request).is_superuser)
        if request.method == "POST" and form.is_valid():
            workspace = form.cleaned_data["workspace"]
            upload = form.cleaned_data["file"]
            lines = io.TextIOWrapper(upload.file, encoding="utf-8", errors="replace", newline="")
            result = services.bulk_import(
                workspace=workspace, values=services.read_values(lines), reason=form.cleaned_data["reason"],
                note=form.cleaned_data["note"], source=f"admin import: {upload.name}"[:300],
            )
            summary = (f"Imported {upload.name} into {workspace or 'the agency-wide list'}: {result.created} created, "
                       f"{result.existing} already present, {len(result.invalid)} invalid.")
            messages.success(request, summary)
            if result.invalid:
                shown = ", ".join(result.invalid[:INVALID_SHOWN])
                more = f" and {len(result.invalid) - INVALID_SHOWN} more" if len(result.invalid) > INVALID_SHOWN else ""
                messages.warning(request, f"Not imported (not an address or @domain): {shown}{more}.")
            return HttpResponseRedirect(reverse("admin:suppression_suppression_changelist",
                                                current_app=self.admin_site.name))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import suppressions",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/suppression/suppression/import.html", context)


@admin.register(ProviderSuppressionSync)
class ProviderSuppressionSyncAdmin(WorkspaceScopedAdmin):
    """What each ESP connection's suppression sync did last, and the removals its provider kept."""

    change_perm = NOBODY
    list_display = ("connection", "workspace", "last_run_at", "listed", "imported", "pushed", "not_pushed_count",
                    "last_error")
    list_select_related = ("connection", "workspace")
    list_filter = ("workspace",)
    fields = ("connection", "workspace", "last_run_at", "last_success_at", "listed", "imported", "pushed",
              "not_pushed_list", "last_error")
    readonly_fields = ("not_pushed_list",)

    @admin.display(description="Not pushed")
    def not_pushed_count(self, obj):
        return len(obj.not_pushed or [])

    @admin.display(description="Removals the provider kept")
    def not_pushed_list(self, obj):
        if not obj.not_pushed:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {}</li>", (
            (item.get("address", "?"), item.get("problem", "?")) for item in obj.not_pushed)))
