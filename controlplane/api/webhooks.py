"""`/webhooks`: endpoints (the secret shown once, on creation) and their delivery logs."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from controlplane import webhooks
from controlplane.api.pagination import CursorPagination
from controlplane.api.views import WorkspaceScopedViewSet
from controlplane.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), required=False,
                                        default=list, help_text="Event types to deliver; empty: every type.")
    url = serializers.CharField(max_length=2000)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "event_types", "description", "active", "created_at"]
        read_only_fields = ["id", "active", "created_at"]

    def validate_url(self, value):
        value = value.strip()
        try:
            webhooks.resolve_target(value)
        except webhooks.UnsafeTarget as exc:
            raise serializers.ValidationError(str(exc))
        return value

    def validate_event_types(self, value):
        return list(dict.fromkeys(value))

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return attrs


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_…: shown only in this answer.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = WebhookEndpointSerializer.Meta.fields + ["secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "status", "attempts", "response_status", "latency_ms", "error", "next_attempt_at",
                  "last_attempt_at", "delivered_at", "created_at"]

    def get_event(self, delivery) -> dict:
        return {"id": delivery.event.id, "type": delivery.event.type}

    def to_representation(self, instance):
        body = super().to_representation(instance)
        for name in ("next_attempt_at", "last_attempt_at", "delivered_at", "created_at"):
            body[name] = _iso(getattr(instance, name))
        if instance.status != "pending":
            body["next_attempt_at"] = None
        return body


class NewestFirst(CursorPagination):
    ordering = "-id"


class WebhookViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.CreateModelMixin,
                     mixins.RetrieveModelMixin, mixins.DestroyModelMixin):
    queryset_base = WebhookEndpoint.objects
    serializer_class = WebhookEndpointSerializer
    pagination_class = NewestFirst
    write_roles = {"sequencer", "admin"}
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self):
        return super().get_queryset().defer("secret")

    @extend_schema(request=WebhookEndpointSerializer, responses={201: WebhookEndpointCreatedSerializer})
    def create(self, request, *args, **kwargs):
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send a JSON object."]})
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint, secret = webhooks.create_endpoint(workspace=self.workspace, url=data["url"],
                                                    event_types=data.get("event_types") or [],
                                                    description=data.get("description", ""))
        body = WebhookEndpointSerializer(endpoint).data
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        webhooks.delete_endpoint(endpoint=instance)

    @extend_schema(responses=WebhookDeliverySerializer(many=True),
                   parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=["pending", "succeeded", "failed"])])
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        endpoint = self.get_object()
        queryset = WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event")
        wanted = request.query_params.get("status")
        if wanted:
            queryset = queryset.filter(status=wanted)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    @extend_schema(request=None, responses=WebhookDeliverySerializer,
                   parameters=[OpenApiParameter("delivery_id", OpenApiTypes.STR, OpenApiParameter.PATH)])
    @action(detail=True, methods=["post"], url_path=r"deliveries/(?P<delivery_id>[^/.\x00]+)/retry")
    def retry(self, request, pk=None, delivery_id=None):
        endpoint = self.get_object()
        delivery = WebhookDelivery.objects.filter(endpoint=endpoint, pk=delivery_id).select_related(
            "event", "endpoint__workspace").first()
        if delivery is None:
            raise NotFound()
        delivery = webhooks.retry_delivery(delivery=delivery)
        return Response(WebhookDeliverySerializer(delivery).data)

