"""Base classes for workspace-scoped API views: tenancy, audited writes, and the key's workspace."""

from django.db import transaction
from rest_framework import mixins, viewsets

from audit import services as audit
from controlplane.api.schema import ControlPlaneAutoSchema


class WorkspaceScopedViewSet(viewsets.GenericViewSet):
    """Starts every queryset from the key's workspace: another workspace's object is a 404."""

    schema = ControlPlaneAutoSchema()
    lookup_value_regex = r"[^/.\x00]+"  # an id with a NUL byte is no id: 404, never a database error
    queryset_base = None  # a model's manager
    audit_name = None  # e.g. "mailbox"

    @property
    def workspace(self):
        return self.request.user.workspace

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no key
            return self.queryset_base.none()
        return self.queryset_base.for_workspace(self.workspace)

    def get_serializer_context(self):
        ctx = super().get_serializer_context()
        if getattr(self.request, "user", None) is not None and hasattr(self.request.user, "workspace"):
            ctx["workspace"] = self.workspace
        return ctx

    def perform_create(self, serializer):
        with transaction.atomic():
            obj = serializer.save(workspace=self.workspace)
            audit.record(workspace=self.workspace, action=f"{self.audit_name}.created", obj=obj,
                         after=audit.snapshot(obj))

    def perform_update(self, serializer):
        with transaction.atomic():
            instance = serializer.instance
            before = audit.snapshot(type(instance).objects.select_for_update().get(pk=instance.pk))
            obj = serializer.save()
            after = audit.snapshot(obj)
            before, after = audit.diff(before, after)
            if after:
                audit.record(workspace=self.workspace, action=f"{self.audit_name}.updated", obj=obj,
                             before=before, after=after)

    def perform_destroy(self, instance):
        with transaction.atomic():
            audit.record(workspace=self.workspace, action=f"{self.audit_name}.deleted", obj=instance,
                         before=audit.snapshot(instance))
            instance.delete()


class ListCreateRetrieveUpdate(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin):
    http_method_names = ["get", "post", "patch", "head", "options"]
