import datetime as dt

import django_filters
from django import forms
from rest_framework import serializers
from rest_framework.relations import MANY_RELATION_KWARGS


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A reference by id, resolved only inside the request's workspace (others look nonexistent)."""

    def __init__(self, model=None, **kwargs):
        self.model = model
        kwargs.setdefault("queryset", model.objects.none()) if not kwargs.get("read_only") else None
        kwargs.setdefault("error_messages", {})
        kwargs["error_messages"].setdefault("does_not_exist", "No such object in this workspace: “{pk_value}”.")
        super().__init__(**kwargs)

    def get_queryset(self):
        workspace = self.context.get("workspace")
        if workspace is None:
            return self.model.objects.none()
        return self.model.objects.for_workspace(workspace)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", pk_value=data.replace("\x00", "\\x00"))
        lookups = self.context.get("lookups")  # one lookup per id across a batch
        if lookups is None or not isinstance(data, str):
            return super().to_internal_value(data)
        key = (self.model._meta.label, data)
        if key not in lookups:
            lookups[key] = super().to_internal_value(data)
        return lookups[key]

    def to_representation(self, value):
        return str(value.pk)

    @classmethod
    def many_init(cls, *args, **kwargs):
        list_kwargs = {"child_relation": cls(*args, **kwargs)}
        list_kwargs.update({key: value for key, value in kwargs.items() if key in MANY_RELATION_KWARGS})
        return StrictManyRelatedField(**list_kwargs)


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 instant, normalised to UTC: an offset the database cannot store (beyond ±16 h)
    or an instant outside years 1–9999 is a validation error, not a database error."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(dt.timezone.utc)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Enter a date and time between years 1 and 9999.", code="invalid")


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class StrictManyRelatedField(serializers.ManyRelatedField):
    """A list of ids; an object (whose keys DRF would otherwise take as the list) is refused."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            self.fail("not_a_list", input_type=type(data).__name__)
        return super().to_internal_value(data)
