from rest_framework import serializers

from suppression.models import REASON_CHOICES, Suppression


class SuppressionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Suppression
        fields = ["id", "value", "reason", "source", "note", "created_by", "created_at"]
        read_only_fields = ["id", "source", "created_by", "created_at"]


class SuppressionCreateSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=320, help_text="An address (jane@acme.com) or a domain (@acme.com).")
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


class SuppressionCheckSerializer(serializers.Serializer):
    suppressed = serializers.BooleanField()
    matched = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)
