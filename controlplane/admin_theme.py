"""The admin's sidebar (django-unfold): the pages people use, grouped as they work, each shown only to those
who may open it."""

from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from controlplane.admin_base import access

GROUPS = [
    ("Overview", [
        ("Dashboard", "monitoring", "admin:index", None),
        ("Compliance", "verified_user", "compliance:index", "view"),
        ("Recipient evidence", "person_search", "admin:controlplane_message_recipient", "view"),
    ]),
    ("Sending", [
        ("Mailboxes", "mail", "mailboxes.Mailbox", None),
        ("Sending domains", "dns", "mailboxes.SendingDomain", None),
        ("Providers", "hub", "providers.ProviderConnection", None),
        ("Pools", "workspaces", "mailboxes.Pool", None),
        ("Warm-up profiles", "trending_up", "mailboxes.WarmupProfile", None),
    ]),
    ("Activity", [
        ("Messages", "outgoing_mail", "controlplane.Message", None),
        ("Events", "bolt", "controlplane.Event", None),
        ("Suppression", "block", "suppression.Suppression", None),
        ("Webhooks", "webhook", "controlplane.WebhookEndpoint", None),
    ]),
    ("Workspaces", [
        ("Workspaces", "domain", "workspaces.Workspace", None),
        ("API keys", "key", "workspaces.WorkspaceAPIKey", None),
        ("Audit log", "history", "audit.AuditEvent", None),
    ]),
]


def _model_admin(label):
    try:
        model = apps.get_model(label)
    except LookupError:
        return None
    return admin.site._registry.get(model)


def _item(request, title, icon, target, perm):
    if "." in target and ":" not in target:
        model_admin = _model_admin(target)
        if model_admin is None or not model_admin.has_view_permission(request):
            return None
        opts = model_admin.opts
        link = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    else:
        if perm and not access(request).can_anywhere(perm):
            return None
        link = reverse(target)
    return {"title": title, "icon": icon, "link": link}


def sidebar(request):
    """Unfold's SIDEBAR navigation for this request's user."""
    groups = []
    for title, entries in GROUPS:
        items = [item for item in (_item(request, *entry) for entry in entries) if item]
        if items:
            groups.append({"title": title, "separator": True, "items": items})
    return groups
