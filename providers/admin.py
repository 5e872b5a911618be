import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from controlplane.admin_base import WorkspaceScopedAdmin, WorkspaceScopedForm, adopt
from providers import kinds, services
from providers.models import ProviderConnection


def _spec_rows():
    for kind, (settings, alternatives) in kinds.SPEC.items():
        setting_names = [f"{name}{'' if required else ' (optional)'}" for name, required in settings.items()]
        if kind in kinds.HTTP_KINDS:
            setting_names.append("api_url (optional)")
        options = " or ".join("{" + ", ".join(sorted(option)) + "}" if option else "none" for option in alternatives)
        yield kind, ", ".join(setting_names) or "none", options


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value, not even the one just typed into a form that failed validation."""

    def format_value(self, value):
        return None


class ProviderConnectionForm(WorkspaceScopedForm):
    settings = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
                               help_text='A JSON object, e.g. {"host": "smtp.acme.com", "port": 587, '
                                         '"security": "starttls"}.')
    credentials_input = forms.CharField(
        label="Credentials", required=False, widget=WriteOnlyTextarea(attrs={"rows": 4, "cols": 60,
                                                                             "autocomplete": "off"}),
        help_text="Write-only: a JSON object of this kind's credentials. Stored encrypted and never shown again; "
                  "leave empty when changing a connection to keep the stored credentials.",
    )

    class Meta:
        model = ProviderConnection
        fields = ["workspace", "kind", "name", "settings"]

    def clean_settings(self):
        value = self.cleaned_data.get("settings")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object.")
        return value

    def clean(self):
        cleaned = super().clean()
        adding = self.instance._state.adding
        kind = cleaned.get("kind") if adding else self.instance.kind
        self.new_credentials = None
        if not kind:
            return cleaned
        if "settings" in cleaned:
            for name, problems in kinds.validate_settings(kind, cleaned["settings"]).items():
                label = name.removeprefix("settings.")
                for problem in problems:
                    self.add_error("settings", problem if label == "settings" else f"{label}: {problem}")
        raw = (cleaned.get("credentials_input") or "").strip()
        if not raw and not adding:
            return cleaned
        try:
            credentials = json.loads(raw) if raw else {}
        except ValueError:
            self.add_error("credentials_input", "Not valid JSON: give an object such as "
                                                '{"username": "…", "password": "…"}.')
            return cleaned
        for problems in kinds.validate_credentials(kind, credentials).values():
            for problem in problems:
                self.add_error("credentials_input", problem)
        if "credentials_input" not in self.errors:
            self.new_credentials = credentials
        return cleaned


@admin.register(ProviderConnection)
class ProviderConnectionAdmin(WorkspaceScopedAdmin):
    form = ProviderConnectionForm
    audit_name = "provider"
    readonly_on_change = ("workspace", "kind")
    list_display = ("name", "kind", "workspace", "credentials_status", "credentials_updated_at", "mailbox_count")
    list_filter = ("kind", "workspace")
    search_fields = ("name",)
    list_select_related = ("workspace",)
    readonly_fields = ("credentials_status", "credentials_updated_at", "kinds_reference")

    def get_fields(self, request, obj=None):
        fields = ["workspace", "kind", "name", "settings", "credentials_input"]
        if obj is not None:
            fields += ["credentials_status", "credentials_updated_at"]
        if self.has_change_permission(request, obj) or (obj is None and self.has_add_permission(request)):
            fields.append("kinds_reference")
        if obj is not None and not self.has_change_permission(request, obj):
            fields.remove("credentials_input")
        return fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("credentials").annotate(mailbox_count=Count("mailboxes"))

    @admin.display(description="Mailboxes", ordering="mailbox_count")
    def mailbox_count(self, obj):
        return obj.mailbox_count

    @admin.display(description="Credentials")
    def credentials_status(self, obj):
        return "stored" if obj.credentials_updated_at else "none"

    @admin.display(description="What each kind takes")
    def kinds_reference(self, obj):
        return format_html(
            "<table><thead><tr><th>Kind</th><th>Settings</th><th>Credentials</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", _spec_rows()),
        )

    actions = ["sync_suppressions_now"]

    def has_suppressions_permission(self, request, obj=None):
        return self.allowed(request, "suppressions", obj)

    @admin.action(description="Sync suppressions now", permissions=["suppressions"])
    def sync_suppressions_now(self, request, queryset):
        from providers import suppression_sync

        kept = queryset.filter(kind__in=suppression_sync.SYNC_KINDS)
        skipped = queryset.count() - kept.count()
        if skipped:
            self.message_user(request, f"Skipped {skipped}: only SES, Postmark and SendGrid connections keep a "
                                       "suppression list.", messages.WARNING)
        if kept.exists():
            self.act_on_each(request, kept, perm="suppressions", apply=suppression_sync.request_sync,
                             done="queued a suppression sync of")

    def save_model(self, request, obj, form, change):
        if change:
            saved = services.update_connection(connection=obj, name=obj.name, settings=obj.settings,
                                               credentials=form.new_credentials)
        else:
            saved = services.create_connection(workspace=obj.workspace, kind=obj.kind, name=obj.name,
                                               settings=obj.settings, credentials=form.new_credentials)
        adopt(obj, saved)

    def record_save(self, request, obj, change):
        pass
