from rest_framework import serializers


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

    def to_representation(self, value):
        return str(value.pk)
