"""`/messages` and `/events`: the sequencer's API."""

import datetime as dt
import re

import django_filters
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import events, intake
from controlplane.api.errors import Conflict
from controlplane.api.fields import ScopedRelatedField, UtcIsoDateTimeFilter
from controlplane.api.pagination import CursorPagination
from controlplane.api.schema import ControlPlaneAutoSchema, error_responses
from controlplane.api.views import WorkspaceScopedViewSet
from controlplane.mime import RESERVED_HEADERS
from controlplane.models import EVENT_TYPES, STATUS_CHOICES, Event, Message
from mailboxes.models import Pool

MAX_BATCH = 1000
MAX_SEND_AHEAD = dt.timedelta(days=30)
PAST_TOLERANCE = dt.timedelta(minutes=5)


# A plain ASCII address: a dot-atom local part of letters, digits and `_+-`, and a domain of letter-digit-
# hyphen labels (none with `--`, so no punycode) under a top-level domain of letters. email-validator
# accepts every such address and normalises it to its lower case (tested against it, with generated
# addresses): most addresses are checked by this one expression, and email-validator, about ten times
# slower, checks the rest and words the errors.
_PLAIN_ADDRESS = re.compile(r"([A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*)@"
                            r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{1,63}))")


def plain_address(value: str) -> str | None:
    """`value` normalised if it is a plain address (see _PLAIN_ADDRESS), else None."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if (plain and len(plain[1]) <= 64 and len(value) <= 254 and "--" not in plain[2]
            and plain[3].lower() not in SPECIAL_USE_DOMAIN_NAMES):
        return value.lower()
    return None


def normalise_address(value: str) -> str:
    plain = plain_address(value)
    if plain is not None:
        return plain
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise serializers.ValidationError(str(exc))
    return f"{result.local_part}@{result.domain}".lower() if result.local_part.isascii() else result.normalized


class MessageInputSerializer(serializers.Serializer):
    to = serializers.CharField(max_length=320)
    # `from` is a Python keyword: declared below under its wire name.
    pool = ScopedRelatedField(Pool, required=False, allow_null=True)
    workload = serializers.SlugField(max_length=50, required=False, default="cold")
    subject = serializers.CharField(max_length=998)
    text = serializers.CharField(trim_whitespace=False)
    html = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    headers = serializers.DictField(child=serializers.CharField(max_length=2000, allow_blank=True), required=False)
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    thread_key = serializers.CharField(max_length=200, required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.CharField(max_length=320, required=False, allow_blank=True,
                                               help_text="Pin a mailbox by address (no rotation).")
        return fields

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return super().to_internal_value(data)

    def validate_to(self, value):
        return normalise_address(value.strip())

    def validate_from(self, value):
        if not value:
            return ""
        address = normalise_address(value.strip())
        from mailboxes.models import Mailbox

        lookups = self.context.get("lookups")
        known = lookups.get(("from", address)) if lookups is not None else None
        if known is None:
            known = Mailbox.objects.for_workspace(self.context["workspace"]).filter(address=address).exists()
            if lookups is not None:
                lookups[("from", address)] = known
        if not known:
            raise serializers.ValidationError(f"{address} is not a mailbox of this workspace.")
        return address

    def validate_headers(self, value):
        bad = sorted(name for name in value if name.strip().lower() in RESERVED_HEADERS)
        if bad:
            raise serializers.ValidationError(f"These headers are set by the control plane: {', '.join(bad)}.")
        for name, header_value in value.items():
            if not name or any(c in name for c in ":\r\n ") or any(c in header_value for c in "\r\n"):
                raise serializers.ValidationError(f"“{name}” is not a valid header name or value.")
        return value

    def validate_send_at(self, value):
        if value is None:
            return None
        now = timezone.now()
        if value < now - PAST_TOLERANCE:
            raise serializers.ValidationError("send_at is in the past.")
        if value > now + MAX_SEND_AHEAD:
            raise serializers.ValidationError("send_at is more than 30 days ahead.")
        return value

    def validate_metadata(self, value):
        import json

        if len(json.dumps(value, default=str)) > 16384:
            raise serializers.ValidationError("metadata is larger than 16 KB.")
        return value


class EventSerializer(serializers.Serializer):
    def to_representation(self, instance):
        return events.serialize(instance, message=self.context.get("message"))


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def message_body(message, *, with_events=False) -> dict:
    body = {
        "id": message.id,
        "status": message.status,
        "to": message.to_address,
        "from": message.from_address,
        "mailbox": message.mailbox_id,
        "pool": message.pool_id,
        "workload": message.workload,
        "subject": message.subject,
        "thread_key": message.thread_key,
        "metadata": message.metadata,
        "scheduled_at": _iso(message.scheduled_at),
        "sent_at": _iso(message.sent_at),
        "decision": message.decision,
        "provider_message_id": message.provider_message_id,
        "provider_response": message.provider_response,
        "created_at": _iso(message.created_at),
    }
    if with_events:
        body["message_id_header"] = message.message_id_header
        body["events"] = [events.serialize(e, message=message) for e in message.events.order_by("seq")]
    return body


class MessageSerializer(serializers.Serializer):
    """The message as the API shows it (`message_body`)."""

    id = serializers.CharField()
    status = serializers.ChoiceField(choices=STATUS_CHOICES)
    to = serializers.CharField(help_text="The recipient; empty after erasure.")
    mailbox = serializers.CharField(allow_null=True)
    pool = serializers.CharField(allow_null=True)
    workload = serializers.CharField()
    subject = serializers.CharField()
    thread_key = serializers.CharField()
    metadata = serializers.DictField()
    scheduled_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    decision = serializers.DictField()
    provider_message_id = serializers.CharField()
    provider_response = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.CharField()
        return fields

    def to_representation(self, instance):
        return message_body(instance, with_events=self.context.get("with_events", False))


class MessageDetailSerializer(MessageSerializer):
    message_id_header = serializers.CharField()
    events = serializers.ListField(child=serializers.DictField())

    def to_representation(self, instance):
        return message_body(instance, with_events=True)


class MessageFilter(django_filters.FilterSet):
    to = django_filters.CharFilter(field_name="to_address", lookup_expr="iexact")
    status = django_filters.ChoiceFilter(choices=STATUS_CHOICES)
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Message
        fields = ["to", "status", "since"]

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        sender = self.data.get("from")
        if sender:
            queryset = queryset.filter(from_address__iexact=sender)
        return queryset


class NewestFirst(CursorPagination):
    ordering = "-id"


class _BatchItem(serializers.DictField):
    """A batch's item: a JSON object, taken as it is (MessageInputSerializer validates its fields next),
    without DictField's pass over each of its values."""

    def to_internal_value(self, data):
        return data if type(data) is dict else super().to_internal_value(data)


class BatchSerializer(serializers.Serializer):
    messages = serializers.ListField(child=_BatchItem(), allow_empty=False, max_length=MAX_BATCH)


class MessageViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    queryset_base = Message.objects
    serializer_class = MessageSerializer
    filterset_class = MessageFilter
    write_roles = {"sequencer", "admin"}
    pagination_class = NewestFirst

    def get_serializer_class(self):
        return MessageDetailSerializer if self.action == "retrieve" else MessageSerializer

    def _serialize(self, message):
        return message_body(message)

    def _submit(self, payload, idempotency_key, enqueue_later=None):
        body = MessageInputSerializer(data=payload, context=self.get_serializer_context())
        if not body.is_valid():
            return None, body.errors
        try:
            return intake.submit(workspace=self.workspace, data=_wire(body.validated_data),
                                 serialize=self._serialize, idempotency_key=idempotency_key,
                                 enqueue_later=enqueue_later), None
        except intake.IdempotencyConflict as exc:
            raise Conflict("idempotency_conflict", str(exc))

    @extend_schema(request=MessageInputSerializer, responses={202: MessageSerializer, **error_responses(409, 422)})
    def create(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send a JSON object."]})
        result, errors = self._submit(request.data, request.headers.get("Idempotency-Key", "")[:255])
        if errors:
            raise ValidationError(errors)
        code, body = result
        return Response(body, status=code)

    @extend_schema(request=BatchSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def batch(self, request):
        if isinstance(request.data, dict) and isinstance(request.data.get("messages"), list) \
                and len(request.data["messages"]) > MAX_BATCH:
            raise ValidationError({"messages": [f"At most {MAX_BATCH} messages per batch."]})
        batch = BatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "")[:240]
        results = []
        accepted = []
        try:
            self._batch_items(batch.validated_data["messages"], key, results, accepted)
        finally:
            intake.flush_enqueue(accepted)
        return Response({"results": results}, status=status.HTTP_200_OK)

    def _batch_items(self, items, key, results, accepted):
        """Validates every item, then places all valid ones at once (`intake.submit_many`)."""
        # One serializer validates every item: building its fields once per item would cost more than the send.
        validator = MessageInputSerializer(context={**self.get_serializer_context(), "lookups": {}})
        valid = []
        for index, item in enumerate(items):
            try:
                data = validator.run_validation(item)
            except ValidationError as exc:
                results.append({"error": {"code": "validation_error", "message": "Some fields are invalid.",
                                          "fields": _fields(exc.detail if isinstance(exc.detail, dict)
                                                            else {"non_field_errors": exc.detail})}})
                continue
            results.append(None)
            valid.append((index, (_wire(data), f"{key}#{index}" if key else "")))
        answers = intake.submit_many(workspace=self.workspace, items=[pair for _, pair in valid],
                                     serialize=self._serialize, enqueue_later=accepted)
        for (index, _), answer in zip(valid, answers):
            if isinstance(answer, intake.IdempotencyConflict):
                results[index] = {"error": {"code": "idempotency_conflict", "message": str(answer)}}
            else:
                results[index] = answer[1]

    @extend_schema(request=None, responses={200: MessageSerializer, **error_responses(422)})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        message = intake.cancel(message=self.get_object())
        return Response(message_body(message))


def _fields(errors):
    from controlplane.api.errors import _fields as shape

    return shape(errors)


def _wire(validated):
    return dict(validated)


class EventFeed(APIView):
    """`GET /events?after=&type=`: the canonical event feed, oldest first."""

    schema = ControlPlaneAutoSchema()

    @extend_schema(parameters=[OpenApiParameter("after", OpenApiTypes.STR), OpenApiParameter("type", OpenApiTypes.STR),
                               OpenApiParameter("limit", OpenApiTypes.INT)],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        workspace = request.user.workspace
        queryset = Event.objects.for_workspace(workspace).select_related("message")
        after = request.query_params.get("after")
        if after and "\x00" in after:
            raise ValidationError({"after": ["Unknown event id."]})
        if after:
            seq = Event.objects.for_workspace(workspace).filter(id=after).values_list("seq", flat=True).first()
            if seq is None:
                raise ValidationError({"after": ["Unknown event id."]})
            queryset = queryset.filter(seq__gt=seq)
        kind = request.query_params.get("type")
        if kind:
            types = [t.strip() for t in kind.split(",") if t.strip()]
            unknown = [t for t in types if t not in EVENT_TYPES]
            if unknown:
                raise ValidationError({"type": [f"Unknown event type(s): {', '.join(unknown)}."]})
            queryset = queryset.filter(type__in=types)
        try:
            limit = min(max(int(request.query_params.get("limit", 100)), 1), 1000)
        except ValueError:
            raise ValidationError({"limit": ["Must be a whole number."]})
        rows = list(queryset.order_by("seq")[:limit + 1])
        page, more = rows[:limit], len(rows) > limit
        next_url = None
        if more:
            params = request.query_params.copy()
            params["after"] = page[-1].id
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": [events.serialize(e) for e in page], "next": next_url})
