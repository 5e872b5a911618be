from rest_framework import serializers

from suppression.models import KIND_CHOICES, REASON_CHOICES, Suppression


class SuppressionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Suppression
        fields = ["id", "value", "reason", "source", "note", "created_by", "created_at", "kind", "scope",
                  "source_event", "evidence"]
        read_only_fields = ["id", "source", "created_by", "created_at", "kind", "scope", "source_event", "evidence"]

    scope = serializers.ChoiceField(choices=["global", "workspace"], read_only=True)


class SuppressionCreateSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=320, help_text="An address (jane@acme.com), a domain (@acme.com) or "
                                                            "every subdomain of a domain (@*.acme.com).")
    reason = serializers.ChoiceField(choices=REASON_CHOICES, default="manual")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class SuppressionBulkSerializer(serializers.Serializer):
    values = serializers.ListField(child=serializers.CharField(allow_blank=True, max_length=1000), max_length=100000)
    reason = serializers.ChoiceField(choices=REASON_CHOICES, default="import")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class SuppressionBulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    existing = serializers.IntegerField()
    invalid = serializers.ListField(child=serializers.CharField())


class EvidenceSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["one_click_post", "confirmation_page", "post"])
    at = serializers.DateTimeField()
    ip = serializers.CharField(allow_null=True)
    user_agent = serializers.CharField(allow_blank=True)
    message = serializers.CharField()


class SuppressionEntrySerializer(serializers.Serializer):
    """One entry and why it suppresses (see `suppression.services.describe`)."""

    id = serializers.CharField()
    value = serializers.CharField(help_text="Blank after a data-subject erasure (only the hash is kept).")
    scope = serializers.ChoiceField(choices=["global", "workspace"],
                                    help_text="global: the agency-wide list, applied in every workspace.")
    kind = serializers.ChoiceField(choices=[k for k, _ in KIND_CHOICES])
    reason = serializers.ChoiceField(choices=REASON_CHOICES)
    source = serializers.CharField()
    source_event = serializers.CharField(allow_null=True, help_text="The canonical event that caused it.")
    note = serializers.CharField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    evidence = EvidenceSerializer(allow_null=True, help_text="For an unsubscribe: the request that made it.")


class SuppressionCheckSerializer(serializers.Serializer):
    suppressed = serializers.BooleanField()
    matched = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)
    entry = SuppressionEntrySerializer(required=False, help_text="The entry that decides.")
    matches = SuppressionEntrySerializer(many=True, required=False,
                                         help_text="Every matching entry: agency-wide first, then the workspace's; "
                                                   "the address before its domain before subdomain patterns.")
