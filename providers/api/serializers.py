from rest_framework import serializers

from providers import kinds
from providers.models import KIND_CHOICES, ProviderConnection


class ProviderSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    settings = serializers.JSONField(required=False)
    credentials = serializers.JSONField(write_only=True, required=False,
                                        help_text="Write-only: never returned, never logged.")
    has_credentials = serializers.SerializerMethodField()

    class Meta:
        model = ProviderConnection
        fields = ["id", "kind", "name", "settings", "credentials", "has_credentials", "credentials_updated_at",
                  "created_at"]
        read_only_fields = ["credentials_updated_at", "created_at"]

    def get_has_credentials(self, obj) -> bool:
        return bool(obj.credentials)

    def validate_name(self, value):
        existing = ProviderConnection.objects.for_workspace(self.context["workspace"]).filter(name=value)
        if self.instance is not None:
            existing = existing.exclude(pk=self.instance.pk)
        if existing.exists():
            raise serializers.ValidationError("A provider with this name exists in this workspace.")
        return value

    def validate(self, attrs):
        if self.instance is not None and "kind" in attrs and attrs["kind"] != self.instance.kind:
            raise serializers.ValidationError({"kind": ["A provider's kind cannot change; create a new provider."]})
        kind = attrs.get("kind") or self.instance.kind
        errors = {}
        if "settings" in attrs or self.instance is None:
            errors.update(kinds.validate_settings(kind, attrs.get("settings") or {}))
        if "credentials" in attrs or self.instance is None:
            errors.update(kinds.validate_credentials(kind, attrs.get("credentials") or {}))
        if errors:
            raise serializers.ValidationError(errors)
        return attrs
