"""The one admin base for workspace-owned models: tenancy at the queryset, role checks, audited writes.

Every changelist, change view, action and autocomplete starts from ``get_queryset``, which
keeps only the workspaces where the user holds ``view_perm``; an object outside them answers
exactly like one that does not exist. Each admin names the short permission (see
``workspaces.scoping.PERMISSIONS``) it needs to add, change and delete.
"""

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models, transaction
from django.template.response import TemplateResponse
from django.utils.text import capfirst
from unfold import widgets as theme
from unfold.admin import ModelAdmin

from audit import services as audit
from workspaces.models import Workspace
from workspaces.scoping import workspaces_for_user

NOBODY = "nobody"
SUPERUSERS = "superusers"


def is_workspace_owned(model) -> bool:
    return hasattr(model, "workspace_lookup")


def workspace_id_of(obj):
    """The id of the workspace that owns `obj` (following its model's `workspace_lookup`)."""
    lookup = type(obj).workspace_lookup
    if lookup == "pk":
        return obj.pk
    *path, last = lookup.split("__")
    for part in path:
        obj = getattr(obj, part)
        if obj is None:
            return None
    return getattr(obj, obj._meta.get_field(last).attname)


def scoped(queryset, user, perm="view"):
    """`queryset` restricted to the workspaces where `user` holds `perm`."""
    if perm == NOBODY:
        return queryset.none()
    if user.is_active and user.is_superuser:
        return queryset
    if perm == SUPERUSERS:
        return queryset.none()
    if queryset.model is Workspace:
        return queryset.filter(pk__in=workspaces_for_user(user, perm).values("pk"))
    if hasattr(queryset, "for_user"):
        return queryset.for_user(user, perm)
    lookup = queryset.model.workspace_lookup
    return queryset.filter(**{f"{lookup}__in": workspaces_for_user(user, perm)})


class WorkspaceAccess:
    """The workspaces one request's user holds each permission in, read once per request."""

    def __init__(self, user):
        self.user = user
        self._ids = {}

    @property
    def is_superuser(self):
        return self.user.is_active and self.user.is_superuser

    def ids(self, perm) -> frozenset:
        if perm not in self._ids:
            if perm in (NOBODY, SUPERUSERS):
                self._ids[perm] = frozenset()
            else:
                self._ids[perm] = frozenset(workspaces_for_user(self.user, perm).values_list("pk", flat=True))
        return self._ids[perm]

    def can_anywhere(self, perm) -> bool:
        if perm == NOBODY:
            return False
        return self.is_superuser or bool(self.ids(perm))

    def can_in(self, perm, workspace_id) -> bool:
        if perm == NOBODY:
            return False
        if self.is_superuser:
            return True
        return workspace_id is not None and workspace_id in self.ids(perm)

    def sees_several_workspaces(self) -> bool:
        return self.is_superuser or len(self.ids("view")) > 1


def access(request) -> WorkspaceAccess:
    cached = getattr(request, "_workspace_access", None)
    if cached is None or cached.user is not request.user:
        cached = WorkspaceAccess(request.user)
        request._workspace_access = cached
    return cached


class WorkspaceLabelledChoiceField(forms.ModelChoiceField):
    """Choices name their workspace, for users who see more than one."""

    def label_from_instance(self, obj):
        return f"{obj} · {obj.workspace}"


class WorkspaceLabelledMultipleChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj} · {obj.workspace}"


def scoped_choices(model, request, perm="view"):
    """Choices of `model` for a form field: objects of the workspaces where the user holds `perm`."""
    queryset = scoped(model._default_manager.all(), request.user, perm)
    if model is not Workspace and model.workspace_lookup == "workspace":
        queryset = queryset.select_related("workspace")
    return queryset


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A related-object filter that offers only objects of the user's workspaces."""

    def field_choices(self, field, request, model_admin):
        queryset = scoped(field.related_model._default_manager.all(), request.user, "view")
        ordering = self.field_admin_ordering(field, request, model_admin)
        if ordering:
            queryset = queryset.order_by(*ordering)
        return [(obj.pk, str(obj)) for obj in queryset]


def _theme_classes(widget):
    if isinstance(widget, forms.Textarea):
        return theme.TEXTAREA_CLASSES
    if isinstance(widget, forms.CheckboxInput):
        return theme.CHECKBOX_CLASSES
    if isinstance(widget, forms.Select):
        return theme.SELECT_CLASSES
    if isinstance(widget, forms.FileInput):
        return theme.FILE_CLASSES
    if isinstance(widget, forms.widgets.Input) and widget.input_type != "hidden":
        return theme.INPUT_CLASSES
    return []


def themed(form):
    """Gives the plain Django widgets of `form` the admin theme's look; the theme's own widgets keep theirs."""
    for field in form.fields.values():
        widget = field.widget
        if type(widget).__module__.startswith("unfold."):
            continue
        if isinstance(widget, forms.CheckboxSelectMultiple):
            field.widget = theme.UnfoldAdminCheckboxSelectMultipleWidget(attrs=widget.attrs, choices=widget.choices)
            continue
        classes = " ".join(_theme_classes(widget))
        if classes:
            widget.attrs["class"] = f"{widget.attrs.get('class', '')} {classes}".strip()
    return form


class WorkspaceScopedForm(forms.ModelForm):
    """Checks that every referenced object and every per-workspace name fits the object's workspace."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        themed(self)

    def target_workspace(self):
        if "workspace" in self.fields:
            return self.cleaned_data.get("workspace")
        if not self.instance._state.adding:
            return self.instance.workspace
        return None

    def clean(self):
        cleaned = super().clean()
        workspace = self.target_workspace()
        if workspace is not None and self._meta.model is not Workspace:
            self._check_references(workspace)
            self._check_unique_in_workspace(workspace)
        return cleaned

    def _check_references(self, workspace):
        for name, field in self.fields.items():
            if not isinstance(field, forms.ModelChoiceField) or name not in self.cleaned_data:
                continue
            model = field.queryset.model
            if model is Workspace or not is_workspace_owned(model):
                continue
            value = self.cleaned_data[name]
            if isinstance(field, forms.ModelMultipleChoiceField):
                values = list(value or [])
            else:
                values = [] if value is None else [value]
            foreign = [str(item) for item in values if workspace_id_of(item) != workspace.pk]
            if foreign:
                self.add_error(name, f"{', '.join(foreign)} belong{'s' if len(foreign) == 1 else ''} to another "
                                     f"workspace; choose from {workspace}’s {model._meta.verbose_name_plural}.")

    def _check_unique_in_workspace(self, workspace):
        model = self._meta.model
        for constraint in model._meta.constraints:
            if not isinstance(constraint, models.UniqueConstraint) or constraint.condition is not None:
                continue
            fields = [f for f in constraint.fields if f != "workspace"]
            if "workspace" not in constraint.fields or not fields or not all(f in self.fields for f in fields):
                continue
            if any(f not in self.cleaned_data for f in fields):
                continue
            values = {f: self.cleaned_data[f] for f in fields}
            clash = model._default_manager.filter(workspace=workspace, **values)
            if self.instance.pk is not None and not self.instance._state.adding:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                label = " and ".join(str(model._meta.get_field(f).verbose_name) for f in fields)
                self.add_error(fields[0], f"{workspace} already has a {model._meta.verbose_name} with this {label}.")


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 80}),
                             help_text="Shown wherever the pause is, and kept in the audit log.")


def _is_display(method):
    """A display method (`admin.display`, taking the object), not an action (which takes a request and a queryset)."""
    code = getattr(method, "__code__", None)
    return (code is not None and code.co_argcount == 2 and hasattr(method, "short_description")
            and not hasattr(method, "allowed_permissions"))


def _once_per_object(display, name):
    @functools.wraps(display)
    def wrapped(obj):
        if obj is None or not hasattr(obj, "__dict__"):
            return display(obj)
        shown = obj.__dict__.setdefault("_shown_by_admin", {})
        if name not in shown:
            shown[name] = display(obj)
        return shown[name]

    return wrapped


class WorkspaceScopedAdmin(ModelAdmin):
    """Base of every workspace-owned model's admin.

    Permissions are short names from ``workspaces.scoping.PERMISSIONS``; ``SUPERUSERS``
    allows superusers only and ``NOBODY`` allows no one. ``add_perm`` and ``delete_perm``
    default to ``change_perm``.
    """

    view_perm = "view"
    change_perm = "identities"
    add_perm = None
    delete_perm = None
    audit_name = None
    readonly_on_change = ("workspace",)
    form = WorkspaceScopedForm
    list_per_page = 50

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        # The theme's templates read a read-only field's contents several times per page: each display
        # method runs once per object instead.
        for name in dir(type(self)):
            method = getattr(type(self), name, None)
            if _is_display(method) and name not in (self.actions or ()):
                setattr(self, name, _once_per_object(getattr(self, name), name))

    # Permissions ---------------------------------------------------------------------------

    def perm_for(self, operation):
        value = {"view": self.view_perm, "change": self.change_perm, "add": self.add_perm,
                 "delete": self.delete_perm}[operation]
        return self.change_perm if value is None else value

    def allowed(self, request, perm, obj=None) -> bool:
        if not (request.user.is_active and request.user.is_staff):
            return False
        if obj is None:
            return access(request).can_anywhere(perm)
        return access(request).can_in(perm, workspace_id_of(obj))

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_view_permission(self, request, obj=None):
        return self.allowed(request, self.perm_for("view"), obj)

    def has_add_permission(self, request):
        return self.allowed(request, self.perm_for("add"))

    def has_change_permission(self, request, obj=None):
        return self.allowed(request, self.perm_for("change"), obj)

    def has_delete_permission(self, request, obj=None):
        return self.allowed(request, self.perm_for("delete"), obj)

    def permitted(self, request, queryset, perm):
        """Splits a selection into the objects `perm` allows and the number left out."""
        objects = list(queryset)
        allowed = [obj for obj in objects if self.allowed(request, perm, obj)]
        return allowed, len(objects) - len(allowed)

    # Tenancy ---------------------------------------------------------------------------------

    def get_queryset(self, request):
        return scoped(super().get_queryset(request), request.user, self.perm_for("view"))

    def get_list_display(self, request):
        display = list(super().get_list_display(request))
        if "workspace" in display and not access(request).sees_several_workspaces():
            display.remove("workspace")
        return display

    def get_list_filter(self, request):
        filters = []
        for entry in super().get_list_filter(request):
            if isinstance(entry, str) and "__" not in entry:
                field = self.model._meta.get_field(entry)
                if field.is_relation and (field.related_model is Workspace or is_workspace_owned(field.related_model)):
                    entry = (entry, ScopedRelatedFieldListFilter)
            filters.append(entry)
        return filters

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += [f for f in self.readonly_on_change if f not in fields]
        return fields

    def choice_field_class(self, request, multiple=False):
        if not access(request).sees_several_workspaces():
            return None
        return WorkspaceLabelledMultipleChoiceField if multiple else WorkspaceLabelledChoiceField

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if related is Workspace:
            kwargs["queryset"] = scoped(Workspace.objects.all(), request.user, self.perm_for("add"))
        elif is_workspace_owned(related):
            kwargs["queryset"] = scoped_choices(related, request)
            field_class = self.choice_field_class(request)
            if field_class is not None and db_field.name not in self.get_autocomplete_fields(request):
                kwargs.setdefault("form_class", field_class)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        related = db_field.related_model
        if is_workspace_owned(related) and related is not Workspace:
            kwargs["queryset"] = scoped_choices(related, request)
            field_class = self.choice_field_class(request, multiple=True)
            if field_class is not None and db_field.name not in self.get_autocomplete_fields(request):
                kwargs.setdefault("form_class", field_class)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        if "workspace" not in initial and not request.user.is_superuser:
            choices = access(request).ids(self.perm_for("add"))
            if len(choices) == 1:
                initial["workspace"] = next(iter(choices))
        return initial

    # Audited writes --------------------------------------------------------------------------

    def audit_snapshot(self, obj):
        """The object as the log shows it; timestamps that every save touches are left out."""
        return audit.snapshot(obj, exclude=self.audit_exclude())

    def audit_exclude(self):
        return tuple(f.name for f in self.model._meta.concrete_fields if getattr(f, "auto_now", False))

    def save_model(self, request, obj, form, change):
        if change:
            current = self.model._default_manager.select_for_update().get(pk=obj.pk)
            obj._audit_before = self.audit_snapshot(current)
        obj.save()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        self.record_save(request, form.instance, change)

    def record_save(self, request, obj, change):
        after = self.audit_snapshot(self.model._default_manager.get(pk=obj.pk))
        if not change:
            audit.record(workspace=obj.workspace, action=f"{self.audit_name}.created", obj=obj, after=after)
            return
        before, after = audit.diff(getattr(obj, "_audit_before", None), after)
        if after:
            audit.record(workspace=obj.workspace, action=f"{self.audit_name}.updated", obj=obj,
                         before=before, after=after)

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit.record(workspace=obj.workspace, action=f"{self.audit_name}.deleted", obj=obj,
                         before=self.audit_snapshot(obj))
            obj.delete()

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)

    # Actions ----------------------------------------------------------------------------------

    def act_with_reason(self, request, queryset, *, perm, title, button, apply, done):
        """An action that asks for a reason on an intermediate page, then calls apply(obj, reason).

        Only objects in workspaces where the user holds `perm` are touched.
        """
        return self.act_with_form(request, queryset, perm=perm, title=title, button=button, form_class=ReasonForm,
                                  apply=lambda obj, data: apply(obj, data["reason"]), done=done,
                                  body_class="reason-confirmation")

    def act_with_form(self, request, queryset, *, perm, title, button, form_class, apply, done, form_kwargs=None,
                      check=None, intro=None, body_class="form-confirmation"):
        """An action that asks for a form on a confirmation page, then calls apply(obj, cleaned_data).

        `check(objects)` may return an error that stops the action before the form is shown. Only objects in
        workspaces where the user holds `perm` are touched.
        """
        objects, left_out = self.permitted(request, queryset, perm)
        error = check(objects) if (check and objects) else None
        if error:
            self.message_user(request, error, messages.ERROR)
            return None
        kwargs = form_kwargs(objects) if callable(form_kwargs) else (form_kwargs or {})
        form = form_class(request.POST if "apply" in request.POST else None, **kwargs)
        if form.is_bound and form.is_valid():
            with transaction.atomic():
                for obj in objects:
                    apply(obj, form.cleaned_data)
            self.report(request, objects, left_out, done)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "intro": intro,
            "body_class": body_class,
            "button": button,
            "objects": objects,
            "left_out": left_out,
            "form": form,
            "opts": self.opts,
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/form_confirmation.html", context)

    def record_change(self, obj, before, *, action=None):
        """Audits the difference between `before` (an audit snapshot) and the object as stored now."""
        after = self.audit_snapshot(self.model._default_manager.get(pk=obj.pk))
        before, after = audit.diff(before, after)
        if after:
            audit.record(workspace=obj.workspace, action=action or f"{self.audit_name}.updated", obj=obj,
                         before=before, after=after)

    def act_on_each(self, request, queryset, *, perm, apply, done):
        objects, left_out = self.permitted(request, queryset, perm)
        with transaction.atomic():
            for obj in objects:
                apply(obj)
        self.report(request, objects, left_out, done)

    def report(self, request, objects, left_out, done):
        opts = self.opts
        noun = opts.verbose_name if len(objects) == 1 else opts.verbose_name_plural
        if objects:
            self.message_user(request, f"{capfirst(done)} {len(objects)} {noun}.", messages.SUCCESS)
        if left_out:
            noun = opts.verbose_name if left_out == 1 else opts.verbose_name_plural
            self.message_user(request, f"Left {left_out} {noun} unchanged: your role does not allow it in "
                                       f"{'its' if left_out == 1 else 'their'} workspace.", messages.WARNING)
        if not objects and not left_out:
            self.message_user(request, "No items were changed.", messages.WARNING)


def adopt(target, source):
    """Makes the admin's form instance `target` the row a service created (`source`)."""
    target.__dict__.update(source.__dict__)
    return target
