"""“Add mailboxes in bulk”: a CSV is checked row by row on a preview page, then created all at once or not at
all."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from controlplane.admin_base import scoped
from mailboxes.services import onboarding
from workspaces.models import Workspace

MAX_BYTES = 2 * 1024 * 1024
EXAMPLE = ("address,display_name,provider,daily_cap,weekly_cap,warmup_profile,pools\n"
           "alex@mail.acme.com,Alex at Acme,Acme relay,30,150,Gentle ramp,Outbound\n"
           "blair@mail.acme.com,Blair at Acme,Acme relay,30,150,,Outbound;Follow-ups\n")


class BulkMailboxForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=Workspace.objects.none(), empty_label=None)
    file = forms.FileField(required=False, label="CSV file", help_text="UTF-8, a header row, one mailbox per row.")
    text = forms.CharField(required=False, label="Or paste the CSV", widget=forms.Textarea(attrs={"rows": 8}))

    def __init__(self, *args, workspaces, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].queryset = workspaces

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > MAX_BYTES:
                self.add_error("file", f"The file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it.")
                return cleaned
            try:
                cleaned["text"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                self.add_error("file", "The file is not UTF-8 text: save it as “CSV UTF-8” and try again.")
                return cleaned
        if not (cleaned.get("text") or "").strip() and not self.errors:
            raise forms.ValidationError("Choose a CSV file or paste its rows.")
        return cleaned


def bulk_add_view(model_admin, request):
    """GET: the form; POST: the preview of every row; POST with confirm: create them all, or nothing."""
    workspaces = scoped(Workspace.objects.all(), request.user, model_admin.perm_for("add")).order_by("name", "slug")
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    initial = {"workspace": request.GET.get("workspace")} if request.GET.get("workspace") else {}
    form = BulkMailboxForm(request.POST or None, request.FILES or None, workspaces=workspaces, initial=initial)
    plan = error = None
    if request.method == "POST" and form.is_valid():
        try:
            plan = onboarding.plan(workspace=form.cleaned_data["workspace"], text=form.cleaned_data["text"])
        except onboarding.InvalidFile as invalid:
            error = str(invalid)
        if plan is not None and plan.ok and request.POST.get("confirm") == "yes":
            try:
                made = onboarding.create(plan=plan)
            except onboarding.Conflict as conflict:
                error = str(conflict)
            else:
                noun = "mailbox" if len(made) == 1 else "mailboxes"
                model_admin.message_user(request, f"Added {len(made)} {noun} to {plan.workspace}.", messages.SUCCESS)
                changelist = reverse("admin:mailboxes_mailbox_changelist", current_app=model_admin.admin_site.name)
                return HttpResponseRedirect(f"{changelist}?workspace__id__exact={plan.workspace.pk}")
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Add mailboxes in bulk",
        "subtitle": None,
        "opts": model_admin.opts,
        "form": form,
        "plan": plan,
        "error": error,
        "csv_text": form.cleaned_data.get("text", "") if form.is_bound and form.is_valid() else "",
        "columns": onboarding.REQUIRED + onboarding.OPTIONAL,
        "max_rows": onboarding.MAX_ROWS,
        "example": EXAMPLE,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/mailboxes/mailbox/bulk_add.html", context)
