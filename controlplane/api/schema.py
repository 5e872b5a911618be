"""The OpenAPI description of what every operation may answer, errors included.

Every API view uses `ControlPlaneAutoSchema`, which documents the contract's error shape for the
statuses any operation can produce (400, 401, 403, 503; 404 where the path names an object; 415
where a body is read); views add the rest (409, 422) with `extend_schema(responses=...)`.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

ERROR_DESCRIPTIONS = {
    "400": "`validation_error` (with `fields`) or `malformed_json`",
    "401": "`not_authenticated`: no key, or a key that is not valid",
    "403": "`permission_denied`: the key's role may not do this",
    "404": "`not_found`: no such object in this workspace",
    "409": "`idempotency_conflict`: the same Idempotency-Key with a different body",
    "415": "`unsupported_media_type`: send `application/json`",
    "422": "a sending-policy rejection: `suppressed`, `cap_exhausted`, `no_eligible_mailbox`, … or `not_cancellable`",
    "503": "`service_unavailable`: the database is unreachable for a moment; retry",
}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable machine code, e.g. `validation_error`.")
    message = serializers.CharField()
    fields = serializers.DictField(required=False, help_text="Per-field messages (validation errors).")


class ErrorSerializer(serializers.Serializer):
    """`{"error": {"code", "message", "fields"?, ...details}}`."""

    error = ErrorDetailSerializer()


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "workspaces.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>`: a key belongs to one workspace."}


@extend_schema_field({"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
                      "example": "09:00"})
class HourMinuteField(serializers.TimeField):
    """A local wall-clock time, `HH:MM` (input may carry seconds)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("format", "%H:%M")
        kwargs.setdefault("input_formats", ["%H:%M", "%H:%M:%S"])
        super().__init__(**kwargs)


class ControlPlaneAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = ["400", "401", "403", "503"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes.append("415")
        for code in codes:
            responses.setdefault(code, self._error_response(code))
        return responses

    def _error_response(self, code):
        response = self._get_response_for_code(ErrorSerializer, code)
        response["description"] = ERROR_DESCRIPTIONS[code]
        return response


def error_responses(*codes):
    """`extend_schema(responses={...})` entries for statuses an operation adds to the defaults."""
    from drf_spectacular.utils import OpenApiResponse

    return {int(code): OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[str(code)]) for code in codes}
