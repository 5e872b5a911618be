"""`/webhooks`: endpoints (the secret shown once, on creation or rotation), their delivery logs and dead
letters, replay of a range of events, and disabling and re-enabling."""

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
    rotation_overlap_until = serializers.DateTimeField(
        source="previous_secret_expires_at", read_only=True, allow_null=True,
        help_text="After a rotation: until then deliveries carry a signature with the previous signing key too.")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "event_types", "description", "active", "created_at", "disabled_at", "disabled_reason",
                  "failing_since", "rotation_overlap_until"]
        read_only_fields = ["id", "active", "created_at", "disabled_at", "disabled_reason", "failing_since"]

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


class WebhookSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="The new whsec_…: shown only in this answer.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = WebhookEndpointSerializer.Meta.fields + ["secret"]


class RotateSecretSerializer(serializers.Serializer):
    overlap_seconds = serializers.IntegerField(
        min_value=0, max_value=webhooks.MAX_OVERLAP_SECONDS, required=False, default=webhooks.DEFAULT_OVERLAP_SECONDS,
        help_text="How long deliveries are signed with the old secret too (default 24 hours).")


class DisableSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="Disabled through the API.")


class EnabledSerializer(WebhookEndpointSerializer):
    dead_letters = serializers.IntegerField(read_only=True, help_text="Dead letters waiting for a re-delivery or "
                                                                      "replay.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = WebhookEndpointSerializer.Meta.fields + ["dead_letters"]


class ReplaySerializer(serializers.Serializer):
    events = serializers.IntegerField(help_text="Events of the range the endpoint subscribes to.")
    deliveries = serializers.IntegerField(help_text="New deliveries queued, one per event, in event order.")
    first_event = serializers.CharField(allow_null=True)
    last_event = serializers.CharField(allow_null=True)
    since = serializers.CharField()
    until = serializers.CharField(allow_null=True)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "status", "attempts", "response_status", "latency_ms", "error", "next_attempt_at",
                  "last_attempt_at", "delivered_at", "created_at", "replay"]

    def get_event(self, delivery) -> dict:
        return {"id": delivery.event.id, "type": delivery.event.type}

    def to_representation(self, instance):
        body = super().to_representation(instance)
        for name in ("next_attempt_at", "last_attempt_at", "delivered_at", "created_at"):
            body[name] = _iso(getattr(instance, name))
        if instance.status != "pending":
            body["next_attempt_at"] = None
        return body


# "failed" is what dead letters were called before they had a name of their own.
DELIVERY_FILTERS = ["pending", "succeeded", "dead", "failed"]


def _invalid(exc: webhooks.InvalidRequest):
    return ValidationError({exc.field: [str(exc)]})


def _options(request, serializer_class):
    """A JSON body's options, or the query string's when there is no body."""
    data = request.data
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Send a JSON object."]})
    data = data or request.query_params.dict()
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    unknown = set(data) - set(serializer.fields)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    return serializer.validated_data


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
                   parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=DELIVERY_FILTERS,
                                                description="`dead`: the dead letters (`failed` is the same).")])
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        endpoint = self.get_object()
        queryset = WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event")
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in DELIVERY_FILTERS:
                raise ValidationError({"status": [f"Choose one of: {', '.join(DELIVERY_FILTERS)}."]})
            queryset = queryset.filter(status="dead" if wanted == "failed" else wanted)
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


    @extend_schema(request=None, responses={202: ReplaySerializer}, parameters=[
        OpenApiParameter("since", OpenApiTypes.STR, required=True,
                         description="An ISO 8601 time (naive: UTC) or an event id; the range includes it."),
        OpenApiParameter("until", OpenApiTypes.STR,
                         description="An ISO 8601 time (excluded) or an event id (included); default: now.")])
    @action(detail=True, methods=["post"])
    def replay(self, request, pk=None):
        """Re-delivers every event of the range the endpoint subscribes to, in event order, as new deliveries
        with the same event ids (receivers de-duplicate on `webhook-id`)."""
        endpoint = self.get_object()
        params = {name: request.query_params.get(name) or (request.data.get(name) if isinstance(request.data, dict)
                                                           else None) for name in ("since", "until")}
        try:
            result = webhooks.replay(endpoint=endpoint, since=params["since"], until=params["until"])
        except webhooks.InvalidRequest as exc:
            raise _invalid(exc)
        return Response(result, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RotateSecretSerializer, responses=WebhookSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """A new signing secret, shown once; deliveries carry a signature with each secret during the overlap."""
        endpoint = self.get_object()
        options = _options(request, RotateSecretSerializer)
        secret = webhooks.rotate_secret(endpoint=endpoint, overlap_seconds=options["overlap_seconds"])
        body = WebhookEndpointSerializer(self.get_object()).data
        body["secret"] = secret
        return Response(body)

    @extend_schema(request=DisableSerializer, responses=WebhookEndpointSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        """Stops deliveries; pending ones and those that arrive while disabled are dead-lettered."""
        endpoint = self.get_object()
        options = _options(request, DisableSerializer)
        webhooks.disable_endpoint(endpoint=endpoint, reason=options["reason"])
        return Response(WebhookEndpointSerializer(self.get_object()).data)

    @extend_schema(request=None, responses=EnabledSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        """Delivers again from now on; dead letters wait for a re-delivery or a replay."""
        endpoint = self.get_object()
        dead_letters = webhooks.enable_endpoint(endpoint=endpoint)
        body = WebhookEndpointSerializer(self.get_object()).data
        body["dead_letters"] = dead_letters
        return Response(body)
