"""The send pipeline in the admin: messages as evidence, the event feed, recipient evidence and erasure,
and the compliance page reviewers land on.

Messages arrive through the API only: nobody adds or edits one here. Operators cancel messages that
are still waiting; owners and admins (short permission ``change``) erase a recipient.
"""

import csv
import io
import json
import re
from pathlib import Path

from django import forms
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join

from audit.export import escape_cell
from audit.models import AuditEvent
from controlplane import admin_dashboard, intake, recipients, webhooks
from controlplane.admin_base import NOBODY, WorkspaceScopedAdmin, WorkspaceScopedForm, access, adopt, scoped
from controlplane.api.errors import PolicyRejection
from controlplane.models import EVENT_TYPES, WAITING_STATUSES, Event, Message, WebhookDelivery, WebhookEndpoint
from mailboxes.models import Pool
from suppression import services as suppression
from suppression.models import Suppression
from workspaces.models import Workspace
from workspaces.scoping import workspaces_for_user

CANCEL_PERM = "messages"
ERASE_PERM = "change"
LISTED_IDS = 20
RECENT_AUDIT_EVENTS = 25
COMPLIANCE_DOCS = Path(settings.BASE_DIR) / "docs" / "compliance"

WHY_NOT_CANCELLABLE = {
    "sending": "being handed off to the provider right now",
    "sent": "already handed off to the provider",
    "delivered": "already delivered",
    "bounced": "already handed off (it bounced)",
    "complained": "already handed off (the recipient complained)",
    "failed": "already failed",
    "suppressed": "already stopped by suppression",
    "cancelled": "already cancelled",
}

DECISION_REASONS = {
    "pinned": "`from` pinned this mailbox",
    "thread_key": "kept the mailbox of its thread",
}


def _when(value):
    """An ISO 8601 string (as stored in decisions and serialised events) as an aware datetime."""
    if not value or not isinstance(value, str):
        return value or None
    return parse_datetime(value.replace("Z", "+00:00"))


def _pretty_json(value):
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def data_rows(data):
    """An event's data as (key, text) rows; nested values are shown as JSON."""
    rows = []
    for key, value in sorted((data or {}).items()):
        text = value if isinstance(value, str) else _pretty_json(value)
        rows.append((key, text))
    return rows


def explain_reason(reason):
    if not reason:
        return ""
    if reason.startswith("rotation:"):
        return f"rotation ({reason.split(':', 1)[1].replace('_', ' ')}) within the pool"
    return DECISION_REASONS.get(reason, reason)


# Messages ------------------------------------------------------------------------------------


class WorkloadFilter(admin.SimpleListFilter):
    """Workloads the user's pools serve (plus the default), read from pools rather than scanning messages."""

    title = "workload"
    parameter_name = "workload"

    def lookups(self, request, model_admin):
        names = {"cold"}
        for workloads in scoped(Pool.objects.all(), request.user).values_list("workloads", flat=True):
            names.update(workloads or [])
        if self.value():
            names.add(self.value())
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(workload=self.value()) if self.value() else queryset


class EventTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in EVENT_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


def why_not_cancellable(message):
    return WHY_NOT_CANCELLABLE.get(message.status, message.status)


def _listed(items):
    shown = "; ".join(items[:LISTED_IDS])
    more = f"; and {len(items) - LISTED_IDS} more" if len(items) > LISTED_IDS else ""
    return shown + more


@admin.register(Message)
class MessageAdmin(WorkspaceScopedAdmin):
    """Read-only: messages come from the API. The change page reads as one line of evidence."""

    change_perm = NOBODY
    add_perm = NOBODY
    delete_perm = NOBODY
    list_display = ("id", "status", "recipient", "sender", "workload", "workspace", "scheduled_at", "sent_at",
                    "created_at")
    list_filter = ("status", WorkloadFilter, "mailbox", "created_at", "workspace")
    list_select_related = ("workspace",)
    search_fields = ("to_address",)
    search_help_text = "An exact recipient address (any case), a message id, or a Message-ID header in <…>."
    show_full_result_count = False
    fields = ("workspace", "status", "to_address", "from_address", "workload")
    actions = ["cancel_messages"]

    def has_cancel_permission(self, request, obj=None):
        return self.allowed(request, CANCEL_PERM, obj)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith("<") and term.endswith(">"):
            return queryset.filter(message_id_header=term), False
        if "@" not in term:
            return queryset.filter(pk=term), False
        try:
            address = recipients.normalise(term)
        except suppression.InvalidValue:
            return queryset.none(), False
        return queryset.filter(to_address=address), False

    @admin.display(description="To", ordering="to_address")
    def recipient(self, obj):
        return obj.to_address or "(erased)"

    @admin.display(description="From (mailbox)", ordering="from_address")
    def sender(self, obj):
        if obj.mailbox_id is None:
            return obj.from_address or "—"
        url = reverse("admin:mailboxes_mailbox_change", args=(quote(obj.mailbox_id),),
                      current_app=self.admin_site.name)
        return format_html('<a href="{}">{}</a>', url, obj.from_address or obj.mailbox_id)

    # Cancelling ---------------------------------------------------------------------------------

    @admin.action(description="Cancel the selected messages (only those still waiting)", permissions=["cancel"])
    def cancel_messages(self, request, queryset):
        self.cancel_each(request, queryset)

    def cancel_each(self, request, queryset):
        """Cancels what the user may cancel and what is still waiting; reports the rest, with why."""
        allowed, left_out = self.permitted(request, queryset, CANCEL_PERM)
        cancelled, refused = [], []
        for message in allowed:
            if message.status not in WAITING_STATUSES:
                refused.append(f"{message.id} is {message.status}: {why_not_cancellable(message)}")
                continue
            try:
                intake.cancel(message=message)
            except PolicyRejection as rejection:
                refused.append(f"{message.id}: {rejection.message}")
                continue
            cancelled.append(message.id)
        if cancelled:
            held = "message; the slot it held is" if len(cancelled) == 1 else "messages; the slots they held are"
            self.message_user(request, f"Cancelled {len(cancelled)} {held} free again.", messages.SUCCESS)
        if refused:
            noun = "message was" if len(refused) == 1 else "messages were"
            self.message_user(request, f"{len(refused)} {noun} not cancelled (only scheduled, queued or deferred "
                                       f"messages can be): {_listed(refused)}.", messages.WARNING)
        if left_out:
            noun = "message" if left_out == 1 else "messages"
            self.message_user(request, f"Left {left_out} {noun} unchanged: your role does not allow cancelling in "
                                       f"{'its' if left_out == 1 else 'their'} workspace.", messages.WARNING)
        return cancelled

    def cancel_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        message = self.get_object(request, unquote(object_id))
        if message is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_cancel_permission(request, message):
            raise PermissionDenied
        self.cancel_each(request, Message.objects.filter(pk=message.pk))
        return HttpResponseRedirect(reverse("admin:controlplane_message_change", args=(quote(message.pk),),
                                            current_app=self.admin_site.name))

    # The evidence page --------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("recipient/", view(self.recipient_view), name="controlplane_message_recipient"),
            path("recipient/erase/", view(self.erase_view), name="controlplane_message_erase"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="controlplane_message_cancel"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}),
                         "recipient_url": reverse("admin:controlplane_message_recipient",
                                                  current_app=self.admin_site.name)}
        return super().changelist_view(request, extra_context)

    def get_object(self, request, object_id, from_field=None):
        queryset = self.get_queryset(request).select_related("mailbox__provider", "mailbox__domain", "pool")
        try:
            return queryset.get(pk=object_id)
        except (Message.DoesNotExist, ValueError):
            return None

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self.evidence(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def evidence(self, request, message):
        decision = dict(message.decision or {})
        seen = decision.pop("usage_seen", None) or {}
        known = {"mailbox", "from", "pool", "reason", "local_day", "scheduled_at"}
        events = [{"id": event.id, "type": event.type, "at": event.occurred_at, "rows": data_rows(event.data)}
                  for event in message.events.order_by("seq")]
        return {
            "message": message,
            "decision": decision,
            "decision_reason": explain_reason(decision.get("reason")),
            "decision_scheduled_at": _when(decision.get("scheduled_at")),
            "decision_seen": seen,
            "decision_other": data_rows({k: v for k, v in decision.items() if k not in known}),
            "mailbox_url": (reverse("admin:mailboxes_mailbox_change", args=(quote(message.mailbox_id),),
                                    current_app=self.admin_site.name) if message.mailbox_id else None),
            "provider": message.mailbox.provider if message.mailbox_id else None,
            "timeline": events,
            "is_waiting": message.status in WAITING_STATUSES,
            "can_cancel": message.status in WAITING_STATUSES and self.has_cancel_permission(request, message),
            "cancel_url": reverse("admin:controlplane_message_cancel", args=(quote(message.pk),),
                                  current_app=self.admin_site.name),
            "recipient_url": reverse("admin:controlplane_message_recipient", current_app=self.admin_site.name),
        }

    # Recipient evidence -------------------------------------------------------------------------

    def recipient_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RecipientForm(request.GET if "address" in request.GET else None)
        found = None
        if form.is_bound and form.is_valid():
            address = form.cleaned_data["address"]
            found = recipient_evidence(request, address)
            download = request.GET.get("format")
            if download == "json":
                return evidence_json(address, found)
            if download == "csv":
                return evidence_csv(address, found)
        context = {
            **self.admin_site.each_context(request),
            "title": "Recipient evidence",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "found": found,
            "address": form.cleaned_data["address"] if found is not None else "",
            "erase_url": reverse("admin:controlplane_message_erase", current_app=self.admin_site.name),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/controlplane/message/recipient.html", context)

    def erase_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        workspace = scoped(Workspace.objects.all(), request.user).filter(pk=request.POST.get("workspace", "")).first()
        if workspace is None:
            raise Http404("No such workspace.")
        if not access(request).can_in(ERASE_PERM, workspace.pk):
            raise PermissionDenied
        form = RecipientForm(request.POST)
        if not form.is_valid():
            messages.error(request, "; ".join(form.errors.get("address", ["Give one address."])))
            return HttpResponseRedirect(reverse("admin:controlplane_message_recipient",
                                                current_app=self.admin_site.name))
        address = form.cleaned_data["address"]
        if request.POST.get("confirm") != "yes":
            held = recipients.history(workspace, address)
            context = {
                **self.admin_site.each_context(request),
                "title": "Erase this address?",
                "subtitle": None,
                "opts": self.opts,
                "workspace": workspace,
                "address": address,
                "held": held,
                "event_count": sum(len(m["events"]) for m in held["messages"]),
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, "admin/controlplane/message/erase_confirmation.html", context)
        result = recipients.erase(workspace=workspace, address=address)
        messages.success(request, (
            f"Erased the address from {workspace}: {result['messages']} message"
            f"{'' if result['messages'] == 1 else 's'} and {result['events']} event"
            f"{'' if result['events'] == 1 else 's'} no longer hold it or any content. It stays suppressed, "
            f"stored only as a hash (sha256:{result['address_hash'][:16]}…), so it is never contacted again."))
        return HttpResponseRedirect(reverse("admin:controlplane_message_recipient", current_app=self.admin_site.name))


class RecipientForm(forms.Form):
    address = forms.CharField(max_length=320, widget=forms.TextInput(attrs={"size": 50, "autofocus": True,
                                                                             "placeholder": "jane@acme.com"}),
                              help_text="One address, any case.")

    def clean_address(self):
        try:
            return recipients.normalise(self.cleaned_data["address"])
        except suppression.InvalidValue as exc:
            raise forms.ValidationError(str(exc))


def workspaces_holding(user, address):
    """The workspaces `user` can view that hold a message to `address` or a suppression matching it."""
    with_messages = (scoped(Message.objects.filter(to_address=address), user)
                     .order_by().values_list("workspace_id", flat=True).distinct())
    with_suppression = (scoped(Suppression.objects.filter(value_hash__in=suppression.candidate_hashes(address)), user)
                        .order_by().values_list("workspace_id", flat=True))
    ids = set(with_messages) | set(with_suppression)
    return list(Workspace.objects.filter(pk__in=ids).order_by("name", "slug"))


def recipient_evidence(request, address):
    """[{workspace, history, messages (for display), can_erase}] for every visible workspace holding anything."""
    found = []
    for workspace in workspaces_holding(request.user, address):
        history = recipients.history(workspace, address)
        found.append({
            "workspace": workspace,
            "history": history,
            "suppression_since": _when((history["suppression"] or {}).get("created_at")),
            "messages": [_display_message(row) for row in history["messages"]],
            "can_erase": access(request).can_in(ERASE_PERM, workspace.pk),
        })
    return found


def _display_message(row):
    decision = row.get("decision") or {}
    return {
        **row,
        "created": _when(row["created_at"]),
        "scheduled": _when(row["scheduled_at"]),
        "sent": _when(row["sent_at"]),
        "decision_reason": explain_reason(decision.get("reason")),
        "decision_seen": decision.get("usage_seen") or {},
        "timeline": [{**event, "at": _when(event["occurred_at"]), "rows": data_rows(event["data"])}
                     for event in row["events"]],
    }


def _download(body, content_type, extension):
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = (f'attachment; filename="recipient-evidence-'
                                       f'{timezone.now():%Y%m%d-%H%M%S}.{extension}"')
    return response


def evidence_json(address, found):
    body = {
        "address": address,
        "generated_at": timezone.now().isoformat().replace("+00:00", "Z"),
        "workspaces": [{"workspace": {"id": item["workspace"].pk, "slug": item["workspace"].slug,
                                      "name": item["workspace"].name},
                        "suppressed": item["history"]["suppressed"], "suppression": item["history"]["suppression"],
                        "messages": item["history"]["messages"]} for item in found],
    }
    return _download(json.dumps(body, indent=2, ensure_ascii=False), "application/json; charset=utf-8", "json")


CSV_COLUMNS = ["workspace", "address", "suppressed", "suppression_matched", "suppression_reason",
               "suppression_source", "suppression_created_at", "message", "status", "from", "mailbox", "provider",
               "workload", "decision_reason", "created_at", "scheduled_at", "sent_at", "provider_response", "event",
               "event_type", "event_at", "event_data"]


def evidence_csv(address, found):
    """One row per event (a message without events, or a workspace with only a suppression, gets one row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in found:
        history = item["history"]
        state = history["suppression"] or {}
        head = [item["workspace"].slug, address, "yes" if history["suppressed"] else "no", state.get("matched"),
                state.get("reason"), state.get("source"), state.get("created_at")]
        for message in history["messages"] or [None]:
            if message is None:
                writer.writerow([escape_cell(v) for v in head + [""] * (len(CSV_COLUMNS) - len(head))])
                continue
            body = [message["id"], message["status"], message["from"], message["mailbox"], message["provider"],
                    message["workload"], (message["decision"] or {}).get("reason"), message["created_at"],
                    message["scheduled_at"], message["sent_at"], message["provider_response"]]
            for event in message["events"] or [None]:
                tail = ([event["id"], event["type"], event["occurred_at"], event["data"]] if event
                        else ["", "", "", ""])
                writer.writerow([escape_cell(v) for v in head + body + tail])
    return _download(buffer.getvalue(), "text/csv; charset=utf-8", "csv")


# Events --------------------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(WorkspaceScopedAdmin):
    """The canonical event feed, newest first; nobody adds, changes or deletes an event here."""

    change_perm = NOBODY
    add_perm = NOBODY
    delete_perm = NOBODY
    list_display = ("occurred_at", "type", "message_link", "workspace", "data_summary")
    list_filter = (EventTypeFilter, "occurred_at", "workspace")
    list_select_related = ("workspace", "message")
    search_fields = ("=id", "=message__id")
    search_help_text = "An event id or a message id (exact)."
    ordering = ("-seq",)
    show_full_result_count = False
    fields = ("id", "type", "workspace", "message_link", "occurred_at", "data_pretty")
    readonly_fields = fields
    actions = None

    @admin.display(description="Message")
    def message_link(self, obj):
        if obj.message_id is None:
            return "—"
        url = reverse("admin:controlplane_message_change", args=(quote(obj.message_id),),
                      current_app=self.admin_site.name)
        to = obj.message.to_address or "(erased)"
        return format_html('<a href="{}">{}</a> to {}', url, obj.message_id, to)

    @admin.display(description="Data")
    def data_summary(self, obj):
        text = json.dumps(obj.data or {}, sort_keys=True, ensure_ascii=False, default=str)
        return text if len(text) <= 160 else text[:159] + "…"

    @admin.display(description="Data")
    def data_pretty(self, obj):
        return format_html("<pre>{}</pre>", _pretty_json(obj.data or {}))


# Compliance -----------------------------------------------------------------------------------


def is_reviewer_only(user) -> bool:
    """True for a staff user whose every workspace role is `reviewer` (superusers never are)."""
    if not (user.is_active and user.is_staff) or user.is_superuser:
        return False
    visible = set(workspaces_for_user(user, "view").values_list("pk", flat=True))
    reviewing = set(workspaces_for_user(user, "role_reviewer").values_list("pk", flat=True))
    return bool(visible) and visible == reviewing


_DOC_ROW = re.compile(r"^\|\s*\[(?P<title>[^\]]+)\]\((?P<file>[\w.-]+\.md)\)\s*\|\s*(?P<answers>.*?)\s*\|\s*$")


def compliance_docs():
    """[(name, title, what it answers)] from the compliance README's table, then any page it does not list."""
    if not COMPLIANCE_DOCS.is_dir():
        return []
    files = {p.stem: p for p in COMPLIANCE_DOCS.glob("*.md")}
    docs, listed = [], set()
    readme = files.get("README")
    for line in (readme.read_text(encoding="utf-8").splitlines() if readme else []):
        match = _DOC_ROW.match(line.strip())
        if match and Path(match["file"]).stem in files:
            name = Path(match["file"]).stem
            docs.append((name, match["title"], match["answers"]))
            listed.add(name)
    for name in sorted(files):
        if name not in listed and name != "README":
            docs.append((name, f"{name}.md", ""))
    return [{"name": name, "title": title, "answers": answers,
             "url": reverse("compliance:doc", args=(name,))} for name, title, answers in docs]


def _require_workspace_reader(request):
    if not access(request).can_anywhere("view"):
        raise PermissionDenied


def compliance_view(request):
    _require_workspace_reader(request)
    user = request.user
    can = access(request)
    recent = (scoped(AuditEvent.objects.all(), user, "audit").select_related("workspace")
              .order_by("-occurred_at", "-seq")[:RECENT_AUDIT_EVENTS] if can.can_anywhere("audit") else [])
    workspaces = list(scoped(Workspace.objects.all(), user).order_by("name", "slug")[:50])
    context = {
        **admin.site.each_context(request),
        "title": "Compliance",
        "subtitle": None,
        "workspaces": workspaces,
        "can_read_audit": can.can_anywhere("audit"),
        "can_export_audit": can.can_anywhere("export_audit"),
        "recent_audit": recent,
        "recipient_form": RecipientForm(),
        "recipient_url": reverse("admin:controlplane_message_recipient"),
        "docs": compliance_docs(),
        "docs_readme_url": reverse("compliance:doc", args=("README",)) if (COMPLIANCE_DOCS / "README.md").is_file()
        else None,
    }
    request.current_app = admin.site.name
    return TemplateResponse(request, "admin/compliance/index.html", context)


def compliance_doc_view(request, name):
    _require_workspace_reader(request)
    files = {p.stem: p for p in COMPLIANCE_DOCS.glob("*.md")} if COMPLIANCE_DOCS.is_dir() else {}
    if name not in files:
        raise Http404("No such compliance page.")
    context = {
        **admin.site.each_context(request),
        "title": files[name].name,
        "subtitle": None,
        "text": files[name].read_text(encoding="utf-8"),
        "docs": compliance_docs(),
        "name": name,
    }
    request.current_app = admin.site.name
    return TemplateResponse(request, "admin/compliance/doc.html", context)


def _site_index(request, extra_context=None):
    """The admin index; a user who is only ever a reviewer lands on the compliance page instead."""
    if is_reviewer_only(request.user):
        return HttpResponseRedirect(reverse("compliance:index"))
    response = admin.site.index(request, extra_context)
    if admin.site.index_template is None and access(request).can_anywhere("view"):
        response.context_data["compliance_url"] = reverse("compliance:index")
        response.context_data["recipient_url"] = reverse("admin:controlplane_message_recipient")
        response.context_data["can_read_audit"] = access(request).can_anywhere("audit")
        workspaces = admin_dashboard.dashboard_workspaces(request)
        workspace = admin_dashboard.chosen_workspace(request, workspaces)
        if workspace is not None:
            response.context_data["dashboard_workspaces"] = workspaces
            response.context_data["dashboard"] = admin_dashboard.compute(request, workspace)
        response.template_name = ["admin/dashboard/index.html", "admin/index.html"]
    return response


site_index = admin.site.admin_view(_site_index)

compliance_urls = [
    path("", admin.site.admin_view(compliance_view), name="index"),
    path("docs/<slug:name>/", admin.site.admin_view(compliance_doc_view), name="doc"),
]


# Webhooks ------------------------------------------------------------------------------------

WEBHOOK_PERM = "webhooks"


class WebhookEndpointForm(WorkspaceScopedForm):
    url = forms.CharField(max_length=2000, widget=forms.URLInput(attrs={"size": 80}),
                          help_text="A public https:// URL; deliveries follow the Standard Webhooks spec.")
    event_types = forms.MultipleChoiceField(choices=[(name, name) for name in EVENT_TYPES], required=False,
                                            widget=forms.CheckboxSelectMultiple,
                                            help_text="Leave all unticked to receive every event type.")

    class Meta:
        model = WebhookEndpoint
        fields = ["workspace", "url", "event_types", "description"]

    def clean_url(self):
        value = self.cleaned_data["url"].strip()
        try:
            webhooks.resolve_target(value)
        except webhooks.UnsafeTarget as exc:
            raise forms.ValidationError(str(exc))
        return value

    def clean_event_types(self):
        return list(dict.fromkeys(self.cleaned_data.get("event_types") or []))


class RotateSecretForm(forms.Form):
    overlap_hours = forms.IntegerField(
        min_value=0, max_value=webhooks.MAX_OVERLAP_SECONDS // 3600, initial=24,
        help_text="For this long every delivery is signed with the old secret too, so receivers can switch "
                  "without losing one. 0 stops the old secret at once.")


LISTED_DISABLED_ENDPOINTS = 10


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(WorkspaceScopedAdmin):
    """Endpoints are created through the webhooks service: the signing secret is shown once, on creation and on
    rotation. Disabling, re-enabling and re-delivering dead letters are audited actions."""

    form = WebhookEndpointForm
    change_perm = WEBHOOK_PERM
    audit_name = "webhook"
    list_display = ("url", "workspace", "event_types_list", "state", "dead_letters", "pending_retries",
                    "description", "created_at")
    list_filter = ("active", "workspace")
    list_select_related = ("workspace",)
    search_fields = ("url", "description")
    readonly_fields = ("state", "secret_state", "deliveries_link", "created_at")
    actions = ["enable_endpoints", "disable_endpoints", "redeliver_dead_letters", "rotate_secrets"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workspace", "url", "event_types", "description"]
        return ["workspace", "url", "event_types", "description", "state", "secret_state", "deliveries_link",
                "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            dead_count=Count("deliveries", filter=Q(deliveries__status="dead")),
            retrying_count=Count("deliveries", filter=Q(deliveries__status="pending", deliveries__attempts__gt=0)),
        )

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            self.notify_disabled(request)
        return super().changelist_view(request, extra_context)

    def notify_disabled(self, request):
        """A notice naming the disabled endpoints and why: their events wait as dead letters."""
        disabled = list(scoped(WebhookEndpoint.objects.filter(active=False), request.user)
                        .only("id", "url", "active", "disabled_at", "disabled_reason")
                        .order_by("-disabled_at", "-id")[:LISTED_DISABLED_ENDPOINTS + 1])
        if not disabled:
            return
        rows = [(reverse("admin:controlplane_webhookendpoint_change", args=[quote(e.pk)],
                         current_app=self.admin_site.name), e.url, self.state(e))
                for e in disabled[:LISTED_DISABLED_ENDPOINTS]]
        more = "+" if len(disabled) > LISTED_DISABLED_ENDPOINTS else ""
        self.message_user(request, format_html(
            '<span id="disabled-webhooks">{}{} disabled webhook endpoint(s): nothing is sent to them and the events '
            "they subscribe to wait as dead letters. Re-enable them, then re-deliver their dead letters.</span>"
            "<ul>{}</ul>", len(rows), more, format_html_join("", '<li><a href="{}">{}</a>: {}</li>', rows)),
            messages.WARNING)

    def audit_exclude(self):
        return super().audit_exclude() + ("secret",)

    @admin.display(description="Event types")
    def event_types_list(self, obj):
        return ", ".join(obj.event_types or []) or "every type"

    @admin.display(description="State", ordering="active")
    def state(self, obj):
        if obj.active:
            return "enabled"
        since = f" since {obj.disabled_at:%Y-%m-%d %H:%M} UTC" if obj.disabled_at else ""
        return f"disabled{since}: {obj.disabled_reason}" if obj.disabled_reason else f"disabled{since}"

    @admin.display(description="Dead letters", ordering="dead_count")
    def dead_letters(self, obj):
        count = getattr(obj, "dead_count", 0)
        if not count:
            return 0
        url = reverse("admin:controlplane_webhookdelivery_changelist", current_app=self.admin_site.name)
        return format_html('<a href="{}?endpoint__id__exact={}&amp;status__exact=dead">{}</a>', url, obj.pk, count)

    @admin.display(description="Retrying")
    def pending_retries(self, obj):
        return getattr(obj, "retrying_count", 0)

    @admin.display(description="Signing secret")
    def secret_state(self, obj):
        text = "Set. It was shown once, when the endpoint was created or its secret rotated, and is never shown again."
        if obj.previous_secret_expires_at and obj.previous_secret_expires_at > timezone.now():
            text += (f" Until {obj.previous_secret_expires_at:%Y-%m-%d %H:%M} UTC deliveries are signed with the "
                     "previous secret too.")
        return text

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj):
        url = reverse("admin:controlplane_webhookdelivery_changelist", current_app=self.admin_site.name)
        dead = WebhookDelivery.objects.filter(endpoint_id=obj.pk, status="dead").count()
        return format_html('<a href="{}?endpoint__id__exact={}">Delivery log</a> · '
                           '<a href="{}?endpoint__id__exact={}&amp;status__exact=dead">{} dead letter{}</a>',
                           url, obj.pk, url, obj.pk, dead, "" if dead == 1 else "s")

    @admin.action(description="Re-enable", permissions=["change"])
    def enable_endpoints(self, request, queryset):
        self.act_on_each(request, queryset, perm=WEBHOOK_PERM, done="re-enabled",
                         apply=lambda endpoint: webhooks.enable_endpoint(endpoint=endpoint))

    @admin.action(description="Disable", permissions=["change"])
    def disable_endpoints(self, request, queryset):
        return self.act_with_reason(request, queryset, perm=WEBHOOK_PERM, title="Disable webhook endpoints",
                                    button="Disable", done="disabled",
                                    apply=lambda endpoint, reason: webhooks.disable_endpoint(endpoint=endpoint,
                                                                                             reason=reason))

    @admin.action(description="Re-deliver dead letters", permissions=["change"])
    def redeliver_dead_letters(self, request, queryset):
        endpoints, left_out = self.permitted(request, queryset.select_related("workspace"), WEBHOOK_PERM)
        disabled = [e for e in endpoints if not e.active]
        with transaction.atomic():
            queued = sum(webhooks.redeliver_dead(endpoint=e) for e in endpoints if e.active)
        self.message_user(request, f"Queued {queued} dead letter{'' if queued == 1 else 's'} again.",
                          messages.SUCCESS if queued else messages.WARNING)
        if disabled:
            self.message_user(request, "Left the dead letters of disabled endpoints waiting: re-enable "
                                       f"{', '.join(e.url for e in disabled)} first.", messages.WARNING)
        if left_out:
            self.report(request, [], left_out, "")

    @admin.action(description="Rotate signing secret", permissions=["change"])
    def rotate_secrets(self, request, queryset):
        def rotate(endpoint, data):
            secret = webhooks.rotate_secret(endpoint=endpoint, overlap_seconds=data["overlap_hours"] * 3600)
            self.message_user(request, format_html(
                "The new signing secret of {} is <code>{}</code>. Copy it now: it is shown only this once.",
                endpoint.url, secret), messages.WARNING)

        return self.act_with_form(request, queryset.select_related("workspace"), perm=WEBHOOK_PERM,
                                  title="Rotate signing secrets", button="Rotate", form_class=RotateSecretForm,
                                  apply=rotate, done="rotated the secret of")

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        endpoint, secret = webhooks.create_endpoint(
            workspace=form.cleaned_data["workspace"], url=form.cleaned_data["url"],
            event_types=form.cleaned_data.get("event_types") or [],
            description=form.cleaned_data.get("description") or "")
        adopt(obj, endpoint)
        request._webhook_secret = secret

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_webhook_secret", None)
        if secret:
            self.message_user(request, format_html(
                "The signing secret of {} is <code>{}</code>. Copy it now: it is shown only this once.",
                obj.url, secret), messages.WARNING)
        return super().response_add(request, obj, post_url_continue)

    def delete_model(self, request, obj):
        webhooks.delete_endpoint(endpoint=obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for endpoint in queryset.select_related("workspace"):
                webhooks.delete_endpoint(endpoint=endpoint)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WorkspaceScopedAdmin):
    """The delivery log and dead letters: read-only, with "Re-deliver now" for those whose role manages webhooks."""

    change_perm = NOBODY
    add_perm = NOBODY
    delete_perm = NOBODY
    list_display = ("id", "endpoint_url", "event_type", "status", "attempts", "response_status", "latency",
                    "error_summary", "next_attempt_at", "created_at")
    list_filter = ("status", "endpoint", "created_at")
    list_select_related = ("endpoint", "event")
    search_fields = ("=id", "=event__id")
    search_help_text = "A delivery id or an event id (exact)."
    show_full_result_count = False
    fields = ("id", "endpoint_url", "event_type", "status", "attempts", "response_status", "latency", "error",
              "next_attempt_at", "last_attempt_at", "delivered_at", "created_at", "response_body", "attempt_table")
    readonly_fields = fields
    actions = ["retry_now"]

    def has_retry_permission(self, request, obj=None):
        return self.allowed(request, WEBHOOK_PERM, obj)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint__workspace", "event")

    @admin.display(description="Endpoint", ordering="endpoint__url")
    def endpoint_url(self, obj):
        return obj.endpoint.url

    @admin.display(description="Event")
    def event_type(self, obj):
        return f"{obj.event.type} ({obj.event.id})"

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, obj):
        return f"{obj.latency_ms} ms" if obj.latency_ms is not None else "—"

    @admin.display(description="Error")
    def error_summary(self, obj):
        text = obj.error or ""
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="Attempts log")
    def attempt_table(self, obj):
        rows = []
        for attempt in obj.attempt_log or []:
            attempt = attempt if isinstance(attempt, dict) else {"error": str(attempt)}
            rows.append((attempt.get("at", ""), attempt.get("status", attempt.get("response_status", "")) or "—",
                         f"{attempt['latency_ms']} ms" if attempt.get("latency_ms") is not None else "—",
                         attempt.get("error", "") or ""))
        if not rows:
            return "No attempt yet."
        return format_html(
            "<table><thead><tr><th>At</th><th>Response</th><th>Latency</th><th>Error</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))

    @admin.action(description="Re-deliver now", permissions=["retry"])
    def retry_now(self, request, queryset):
        self.act_on_each(request, queryset, perm=WEBHOOK_PERM, done="queued again",
                         apply=lambda delivery: webhooks.retry_delivery(delivery=delivery))
