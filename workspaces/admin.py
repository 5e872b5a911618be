from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import mark_safe
from rest_framework_api_key.models import APIKey

from django.db.models import Count, Q

from controlplane.admin_base import NOBODY, SUPERUSERS, WorkspaceScopedAdmin, WorkspaceScopedForm, access, adopt
from mailboxes.admin import BreakerOverrideActions
from workspaces import roles, services
from workspaces.models import Workspace, WorkspaceAPIKey

admin.site.site_header = "Outbound control plane"
admin.site.site_title = "Outbound control plane"
admin.site.index_title = "Workspaces, sending identities, suppression and audit"

if admin.site.is_registered(APIKey):
    # The library's own key model is unused: keys here always belong to a workspace.
    admin.site.unregister(APIKey)


BREAKER_SETTINGS = (
    "mailbox_hard_bounce_warn_threshold", "mailbox_complaint_warn_threshold",
    "domain_hard_bounce_warn_threshold", "domain_hard_bounce_pause_threshold",
    "domain_complaint_warn_threshold", "domain_complaint_pause_threshold",
    "workspace_hard_bounce_warn_threshold", "workspace_hard_bounce_pause_threshold",
    "workspace_complaint_warn_threshold", "workspace_complaint_pause_threshold",
    "health_scope_window_days", "breaker_cooldown_hours", "reramp_fraction", "reramp_days",
)


class BreakerSettingsForm(forms.ModelForm):
    class Meta:
        model = Workspace
        fields = BREAKER_SETTINGS


class WorkspaceForm(WorkspaceScopedForm):
    class Meta:
        model = Workspace
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("paused") and not (cleaned.get("paused_reason") or "").strip():
            self.add_error("paused_reason", "Give a reason for pausing: everyone who sees the workspace reads it.")
        return cleaned


@admin.register(Workspace)
class WorkspaceAdmin(BreakerOverrideActions, WorkspaceScopedAdmin):
    form = WorkspaceForm
    change_perm = "change"
    add_perm = SUPERUSERS
    delete_perm = NOBODY
    audit_name = "workspace"
    readonly_on_change = ("slug",)
    list_display = ("name", "slug", "timezone", "paused", "paused_reason")
    list_filter = ("paused",)
    search_fields = ("name", "slug")
    readonly_fields = ("id", "created_at", "updated_at", *BREAKER_SETTINGS, "health_warning", "breaker_rule",
                       "resume_at", "health_since")
    actions = ["pause_workspaces", "resume_workspaces", "change_breaker_settings",
               *BreakerOverrideActions.breaker_actions]
    breaker_perm = "pause"
    fieldsets = (
        (None, {"fields": ("id", "slug", "name", "timezone")}),
        ("Cold mail footer", {"fields": ("sender_identification", "postal_address")}),
        ("Kill switch", {"fields": ("paused", "paused_reason")}),
        ("Mailbox health thresholds", {"fields": ("hard_bounce_threshold", "complaint_threshold", "health_min_sends")}),
        ("Circuit breakers", {"fields": BREAKER_SETTINGS, "description": "Rates are fractions (0.001 = 0.1 %). "
                              "Change them with the action “Change circuit-breaker settings” on the list page."}),
        ("Circuit breaker state", {"fields": ("health_warning", "breaker_rule", "resume_at", "health_since")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def has_pause_permission(self, request, obj=None):
        return self.allowed(request, "pause", obj)

    def has_roles_permission(self, request, obj=None):
        return self.allowed(request, "roles", obj)

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and not self.has_pause_permission(request, obj):
            fields += ["paused", "paused_reason"]
        return fields

    def save_model(self, request, obj, form, change):
        if change:
            current = Workspace.objects.select_for_update().get(pk=obj.pk)
            obj._pause_requested = (obj.paused, obj.paused_reason if obj.paused else "")
            obj.paused, obj.paused_reason = current.paused, current.paused_reason
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        requested = getattr(obj, "_pause_requested", None)
        if requested is not None and requested != (obj.paused, obj.paused_reason):
            paused, reason = requested
            adopt(obj, services.set_paused(workspace=obj, paused=paused, reason=reason))

    @admin.action(description="Pause sending (kill switch)", permissions=["pause"])
    def pause_workspaces(self, request, queryset):
        return self.act_with_reason(
            request, queryset, perm="pause", title="Pause sending", button="Pause sending",
            apply=lambda ws, reason: services.set_paused(workspace=ws, paused=True, reason=reason), done="paused",
        )

    @admin.action(description="Resume sending", permissions=["pause"])
    def resume_workspaces(self, request, queryset):
        self.act_on_each(request, queryset.filter(paused=True), perm="pause",
                         apply=lambda ws: services.set_paused(workspace=ws, paused=False), done="resumed")

    @admin.action(description="Change circuit-breaker settings", permissions=["change"])
    def change_breaker_settings(self, request, queryset):
        def apply(workspace, data):
            before = self.audit_snapshot(Workspace.objects.select_for_update().get(pk=workspace.pk))
            Workspace.objects.filter(pk=workspace.pk).update(**{name: data[name] for name in BREAKER_SETTINGS})
            self.record_change(workspace, before)

        return self.act_with_form(
            request, queryset, perm=self.change_perm, title="Change circuit-breaker settings", button="Save settings",
            form_class=BreakerSettingsForm, apply=apply, done="updated",
            check=lambda objects: None if len(objects) == 1 else "Select one workspace to change its settings.",
            form_kwargs=lambda objects: {"instance": objects[0]},
            intro="Rates are fractions of the sends judged (0.001 = 0.1 %); a rate above a threshold warns or "
                  "pauses. See docs/circuit-breakers.md for the defaults and where they come from.")

    # Members & roles -------------------------------------------------------------------------

    def get_urls(self):
        return [
            path("<path:object_id>/members/", self.admin_site.admin_view(self.members_view),
                 name="workspaces_workspace_members"),
            path("<path:object_id>/onboarding/", self.admin_site.admin_view(self.onboarding_view),
                 name="workspaces_workspace_onboarding"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_manage_roles"] = obj is not None and self.has_roles_permission(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def onboarding_view(self, request, object_id):
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET"])
        workspace = self.get_object(request, unquote(object_id))
        if workspace is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        steps = onboarding_steps(request, workspace)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Set up {workspace}",
            "subtitle": None,
            "opts": self.opts,
            "original": workspace,
            "steps": steps,
            "done": sum(1 for step in steps if step["done"]),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/workspaces/workspace/onboarding.html", context)

    def members_view(self, request, object_id):
        workspace = self.get_object(request, unquote(object_id))
        if workspace is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_roles_permission(request, workspace):
            raise PermissionDenied
        grant_form = GrantRoleForm(prefix="grant")
        if request.method == "POST":
            if request.POST.get("operation") == "revoke":
                error = self._revoke(request, workspace)
                if error is None:
                    return HttpResponseRedirect(request.path)
                messages.error(request, error)
            else:
                grant_form = GrantRoleForm(request.POST, prefix="grant", workspace=workspace)
                if grant_form.is_valid():
                    user, role = grant_form.cleaned_data["username"], grant_form.cleaned_data["role"]
                    roles.grant_role(user=user, workspace=workspace, role=role)
                    messages.success(request, f"{user.get_username()} is now {role} of {workspace}.")
                    return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Members & roles of {workspace}",
            "subtitle": None,
            "opts": self.opts,
            "original": workspace,
            "members": roles.members(workspace),
            "grant_form": grant_form,
            "role_names": roles.ROLE_NAMES,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/workspaces/workspace/members.html", context)

    def _revoke(self, request, workspace):
        username = request.POST.get("username", "")
        user = get_user_model().objects.filter(username=username).first()
        if user is None or roles.role_of(user, workspace) is None:
            return f"{username or 'That user'} holds no role in {workspace}."
        if _is_last_owner(user, workspace):
            return f"{username} is the last owner of {workspace}; make someone else owner first."
        roles.revoke_role(user=user, workspace=workspace)
        messages.success(request, f"{username} no longer holds a role in {workspace}.")
        return None


def _link(name, query="", *args):
    return reverse(f"admin:{name}", args=args) + query


def onboarding_steps(request, workspace):
    """The setup steps in the order operators follow them, each done or not, with where to do it."""
    from controlplane.models import WebhookEndpoint
    from mailboxes.models import Mailbox, SendingDomain

    can = access(request)
    in_ws = f"?workspace__id__exact={workspace.pk}"
    domains = SendingDomain.objects.filter(workspace=workspace).aggregate(
        total=Count("id"), passing=Count("id", filter=Q(status="pass")),
        failing=Count("id", filter=Q(status="fail")))
    mailboxes = Mailbox.objects.filter(workspace=workspace, status="active").aggregate(
        total=Count("id"), unramped=Count("id", filter=Q(warmup_profile__isnull=True)))
    keys = WorkspaceAPIKey.objects.filter(workspace=workspace, revoked=False).count()
    hooks = WebhookEndpoint.objects.filter(workspace=workspace, active=True).count()
    manage = can.can_in("identities", workspace.pk)
    return [
        {"key": "domains", "title": "Register sending domains", "done": domains["total"] > 0,
         "detail": f"{domains['total']} domain{'s' if domains['total'] != 1 else ''} registered.",
         "url": _link("mailboxes_sendingdomain_add") if manage and not domains["total"]
         else _link("mailboxes_sendingdomain_changelist", in_ws),
         "action": "Add a domain" if not domains["total"] else "See domains"},
        {"key": "authentication", "title": "Publish DNS records until SPF, DKIM and DMARC pass",
         "done": domains["total"] > 0 and domains["passing"] == domains["total"],
         "detail": (f"{domains['passing']} of {domains['total']} domains pass"
                    + (f", {domains['failing']} fail" if domains["failing"] else "") + "."),
         "url": _link("mailboxes_sendingdomain_changelist", in_ws),
         "action": "Open domains (records to publish, “Check DNS now”)"},
        {"key": "mailboxes", "title": "Connect mailboxes", "done": mailboxes["total"] > 0,
         "detail": f"{mailboxes['total']} active mailbox{'es' if mailboxes['total'] != 1 else ''}.",
         "url": _link("mailboxes_mailbox_add") if manage and not mailboxes["total"]
         else _link("mailboxes_mailbox_changelist", in_ws),
         "action": "Add a mailbox" if not mailboxes["total"] else "See mailboxes",
         "more": [{"url": _link("mailboxes_mailbox_bulk_add", f"?workspace={workspace.pk}"),
                   "action": "Add mailboxes in bulk (CSV)"}] if manage else []},
        {"key": "warmup", "title": "Assign warm-up profiles",
         "done": mailboxes["total"] > 0 and mailboxes["unramped"] == 0,
         "detail": f"{mailboxes['unramped']} active mailbox{'es' if mailboxes['unramped'] != 1 else ''} without "
                   "a warm-up profile.",
         "url": _link("mailboxes_mailbox_changelist", in_ws + "&warmup_profile__isnull=True"),
         "action": "Select mailboxes, then “Assign a warm-up profile”"},
        {"key": "api_key", "title": "Point the sequencer at the API (create an API key)", "done": keys > 0,
         "detail": f"{keys} active API key{'s' if keys != 1 else ''}.",
         "url": _link("workspaces_workspaceapikey_add") if can.can_in("api_keys", workspace.pk)
         else _link("workspaces_workspaceapikey_changelist", in_ws),
         "action": "Create an API key"},
        {"key": "webhook", "title": "Subscribe a webhook", "done": hooks > 0,
         "detail": f"{hooks} active webhook endpoint{'s' if hooks != 1 else ''}.",
         "url": _link("controlplane_webhookendpoint_add") if can.can_in("webhooks", workspace.pk)
         else _link("controlplane_webhookendpoint_changelist", in_ws),
         "action": "Add a webhook endpoint"},
    ]


def _is_last_owner(user, workspace):
    owners = [member for member, role in roles.members(workspace) if role == "owner"]
    return owners == [user]


class GrantRoleForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=[(name, name) for name in roles.ROLE_NAMES])

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"No active user is named “{username}”; create it with `createuser` first.")
        return user

    def clean(self):
        cleaned = super().clean()
        user, role = cleaned.get("username"), cleaned.get("role")
        if user is not None and role and role != "owner" and _is_last_owner(user, self.workspace):
            self.add_error("role", f"{user.get_username()} is the last owner of {self.workspace}; "
                                   "make someone else owner first.")
        return cleaned


# API keys -----------------------------------------------------------------------------------


class APIKeyForm(WorkspaceScopedForm):
    class Meta:
        model = WorkspaceAPIKey
        fields = ["workspace", "name", "role"]


class PrefixChangeList(ChangeList):
    """Links to keys by prefix: a key's primary key embeds its hash, which pages never show."""

    def url_for_result(self, result):
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=(quote(result.prefix),),
                       current_app=self.model_admin.admin_site.name)


@admin.register(WorkspaceAPIKey)
class WorkspaceAPIKeyAdmin(WorkspaceScopedAdmin):
    form = APIKeyForm
    change_perm = NOBODY
    add_perm = "api_keys"
    delete_perm = NOBODY
    list_display = ("name", "prefix", "role", "workspace", "created", "revoked")
    list_filter = ("revoked", "role", "workspace")
    search_fields = ("name", "=prefix")
    list_select_related = ("workspace",)
    actions = ["revoke_keys"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "name", "role"]
        return ["workspace", "name", "prefix", "role", "created", "revoked"]

    def has_revoke_permission(self, request, obj=None):
        return self.allowed(request, "api_keys", obj)

    def get_object(self, request, object_id, from_field=None):
        return super().get_object(request, object_id, from_field="prefix")

    def get_changelist(self, request, **kwargs):
        return PrefixChangeList

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        checkbox = forms.CheckboxInput({"class": "action-select", "aria-label": f"Select this key - {obj}"},
                                       lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, obj.prefix)

    def response_action(self, request, queryset):
        prefixes = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if prefixes:
            post = request.POST.copy()
            post.setlist(helpers.ACTION_CHECKBOX_NAME,
                         list(queryset.filter(prefix__in=prefixes).values_list("pk", flat=True)))
            request.POST = post
        return super().response_action(request, queryset)

    def save_model(self, request, obj, form, change):
        key, raw = services.create_api_key(workspace=obj.workspace, name=obj.name, role=obj.role)
        adopt(obj, key)
        messages.warning(request, f"The API key for “{key.name}” is: {raw} — store it somewhere safe now: "
                                  "it is shown only this once.")

    def record_save(self, request, obj, change):
        pass

    def response_add(self, request, obj, post_url_continue=None):
        return HttpResponseRedirect(reverse("admin:workspaces_workspaceapikey_changelist",
                                            current_app=self.admin_site.name))

    def log_addition(self, request, obj, message):
        """No admin LogEntry: it would store, and link to, the primary key that embeds the hash."""

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        self.act_on_each(request, queryset.filter(revoked=False), perm="api_keys",
                         apply=lambda key: services.revoke_api_key(key=key),
                         done="revoked")
