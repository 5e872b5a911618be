import io

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from controlplane.admin_base import NOBODY, WorkspaceScopedAdmin, WorkspaceScopedForm, adopt
from suppression import services
from suppression.models import REASON_CHOICES, Suppression
from workspaces.scoping import workspaces_for_user

INVALID_SHOWN = 20


class SuppressionForm(WorkspaceScopedForm):
    value = forms.CharField(max_length=320, label="Address or @domain",
                            help_text="jane@acme.com suppresses one address; @acme.com every address at the domain.")

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
        if workspace is not None and value:
            existing = Suppression.objects.for_workspace(workspace).filter(
                value_hash=services.value_hash(value)).first()
            if existing is not None:
                self.add_error("value", f"{value} is already suppressed in {workspace} "
                                        f"(reason: {existing.get_reason_display()}, since "
                                        f"{existing.created_at:%Y-%m-%d}).")
        return cleaned


class ImportForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=None)
    file = forms.FileField(help_text="A CSV with a column named email, address or value (else the first column is "
                                     "used), or a text file with one address or @domain per line.")
    reason = forms.ChoiceField(choices=REASON_CHOICES, initial="import")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args, workspaces, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].queryset = workspaces
        only = list(workspaces[:2])
        if len(only) == 1:
            self.fields["workspace"].initial = only[0].pk


@admin.register(Suppression)
class SuppressionAdmin(WorkspaceScopedAdmin):
    form = SuppressionForm
    change_perm = NOBODY
    add_perm = "suppressions"
    delete_perm = "delete_suppressions"
    audit_name = "suppression"
    list_display = ("__str__", "workspace", "reason", "source", "created_by", "created_at")
    list_filter = ("reason", "is_domain", "workspace")
    list_select_related = ("workspace",)
    search_fields = ("value",)
    search_help_text = "An exact address or @domain (any case)."
    show_full_result_count = False

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "value", "reason", "note"]
        return ["workspace", "value", "is_domain", "reason", "source", "note", "created_by", "created_at"]

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
        form = ImportForm(request.POST or None, request.FILES or None, workspaces=workspaces)
        if request.method == "POST" and form.is_valid():
            workspace = form.cleaned_data["workspace"]
            upload = form.cleaned_data["file"]
            lines = io.TextIOWrapper(upload.file, encoding="utf-8", errors="replace", newline="")
            result = services.bulk_import(
                workspace=workspace, values=services.read_values(lines), reason=form.cleaned_data["reason"],
                note=form.cleaned_data["note"], source=f"admin import: {upload.name}"[:300],
            )
            summary = (f"Imported {upload.name} into {workspace}: {result.created} created, "
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
