import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError

from audit import export
from audit.models import AuditEvent
from controlplane.api.fields import UtcIsoDateTimeFilter
from controlplane.api.pagination import CursorPagination
from controlplane.api.views import WorkspaceScopedViewSet


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "seq", "occurred_at", "actor", "action", "object_type", "object_id", "object_repr",
                  "before", "after", "request_id", "ip", "prev_hash", "hash"]

    def get_actor(self, obj) -> dict:
        return {"type": obj.actor_type, "id": obj.actor_id, "label": obj.actor_label}


class AuditFilter(django_filters.FilterSet):
    since = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    action = django_filters.CharFilter(field_name="action")
    actor = django_filters.CharFilter(method="filter_actor")

    class Meta:
        model = AuditEvent
        fields = ["since", "until", "action", "actor"]

    def filter_actor(self, queryset, name, value):
        return export._actor_filter(queryset, value)


class AuditPagination(CursorPagination):
    ordering = "seq"


class AuditViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin):
    queryset_base = AuditEvent.objects
    serializer_class = AuditEventSerializer
    filterset_class = AuditFilter
    pagination_class = AuditPagination
    read_roles = {"reviewer", "admin"}

    @extend_schema(
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["jsonl", "csv"]),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("action", OpenApiTypes.STR),
            OpenApiParameter("actor", OpenApiTypes.STR),
        ],
        responses={(200, "application/jsonl"): OpenApiTypes.BINARY, (200, "text/csv"): OpenApiTypes.BINARY},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filterset_class=None)
    def export(self, request):
        unknown = sorted(set(request.query_params) - {"format", "since", "until", "action", "actor"})
        if unknown:
            raise ValidationError({name: ["Unknown filter."] for name in unknown})
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise ValidationError({"format": ["Must be jsonl or csv."]})
        filters = AuditFilter(request.query_params, queryset=AuditEvent.objects.none())
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        params = {k: filters.form.cleaned_data.get(k) for k in ("since", "until", "action", "actor")}
        if params["since"] and params["until"] and params["since"] >= params["until"]:
            raise ValidationError({"until": ["Must be after since."]})
        return export.streamed_response(workspace=self.workspace, fmt=fmt, filters=params, via="api")
