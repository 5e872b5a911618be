import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api.views import WorkspaceScopedViewSet
from suppression import services
from suppression.api.serializers import (
    SuppressionBulkResultSerializer, SuppressionBulkSerializer, SuppressionCheckSerializer,
    SuppressionCreateSerializer, SuppressionSerializer,
)
from suppression.models import REASON_CHOICES, Suppression


class SuppressionFilter(django_filters.FilterSet):
    reason = django_filters.ChoiceFilter(choices=REASON_CHOICES)
    value = django_filters.CharFilter(method="filter_value")

    class Meta:
        model = Suppression
        fields = ["reason"]

    def filter_value(self, queryset, name, value):
        try:
            return queryset.filter(value_hash=services.value_hash(services.normalise(value)))
        except services.InvalidValue:
            return queryset.none()


class SuppressionViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin):
    queryset_base = Suppression.objects
    serializer_class = SuppressionSerializer
    filterset_class = SuppressionFilter
    write_roles = {"sequencer", "admin"}
    action_roles = {"destroy": {"admin"}}

    @extend_schema(request=SuppressionCreateSerializer, responses={201: SuppressionSerializer, 200: SuppressionSerializer})
    def create(self, request):
        body = SuppressionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            entry, created = services.suppress(
                workspace=self.workspace, value=body.validated_data["value"], reason=body.validated_data["reason"],
                note=body.validated_data["note"], source="api",
            )
        except services.InvalidValue as exc:
            raise ValidationError({"value": [str(exc)]})
        return Response(SuppressionSerializer(entry).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=SuppressionBulkSerializer, responses=SuppressionBulkResultSerializer)
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        body = SuppressionBulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.bulk_import(
            workspace=self.workspace, values=body.validated_data["values"], reason=body.validated_data["reason"],
            note=body.validated_data["note"], source="api bulk",
        )
        return Response(result.as_dict())

    @extend_schema(parameters=[OpenApiParameter("address", OpenApiTypes.STR, required=True)],
                   responses=SuppressionCheckSerializer)
    @action(detail=False, methods=["get"])
    def check(self, request):
        address = request.query_params.get("address", "")
        if not address:
            raise ValidationError({"address": ["This query parameter is required."]})
        try:
            found = services.matches(self.workspace, address)
        except services.InvalidValue as exc:
            raise ValidationError({"address": [str(exc)]})
        if not found:
            return Response({"suppressed": False})
        entry = found[0]
        return Response({"suppressed": True, "matched": entry.value or "(erased)", "reason": entry.reason,
                         "created_at": SuppressionSerializer(entry).data["created_at"],
                         "entry": services.describe(entry), "matches": [services.describe(e) for e in found]})

    def perform_destroy(self, instance):
        services.remove(entry=instance)
