import datetime as dt
import re

from django.db import transaction
from rest_framework import serializers

from controlplane.api.fields import ScopedRelatedField
from controlplane.api.schema import HourMinuteField
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile, validate_ramp
from mailboxes.services import caps
from providers.models import ProviderConnection
from workspaces.models import validate_timezone

HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
CHECK_NAMES = ["spf", "dkim", "dmarc", "mx", "blocklists"]


class DomainSerializer(serializers.ModelSerializer):
    checks = serializers.SerializerMethodField()
    records_to_publish = serializers.SerializerMethodField()

    class Meta:
        model = SendingDomain
        fields = ["id", "name", "status", "paused", "paused_reason", "checked_at", "checks",
                  "records_to_publish", "created_at"]
        read_only_fields = ["status", "paused", "paused_reason", "checked_at", "created_at"]

    def validate_name(self, value):
        name = value.strip().lower().rstrip(".")
        if not HOSTNAME_RE.match(name):
            raise serializers.ValidationError(f"“{value}” is not a domain name (e.g. mail.acme.com).")
        workspace = self.context["workspace"]
        existing = SendingDomain.objects.for_workspace(workspace).filter(name=name)
        if self.instance is not None:
            existing = existing.exclude(pk=self.instance.pk)
        if existing.exists():
            raise serializers.ValidationError(f"{name} is already a sending domain of this workspace.")
        return name

    def get_checks(self, obj) -> dict:
        return {
            name: obj.checks.get(name) or {"status": "unchecked", "message": "Not checked yet.", "records": []}
            for name in CHECK_NAMES
        }

    def get_records_to_publish(self, obj) -> list:
        return obj.records_to_publish()


class WarmupProfileSerializer(serializers.ModelSerializer):
    schedule = serializers.ListField(child=serializers.IntegerField(min_value=0), required=False, allow_null=True,
                                     max_length=366)

    class Meta:
        model = WarmupProfile
        fields = ["id", "name", "start", "step", "max", "schedule", "created_at"]
        read_only_fields = ["created_at"]

    def validate_name(self, value):
        existing = WarmupProfile.objects.for_workspace(self.context["workspace"]).filter(name=value)
        if self.instance is not None:
            existing = existing.exclude(pk=self.instance.pk)
        if existing.exists():
            raise serializers.ValidationError("A warm-up profile with this name exists.")
        return value

    def validate(self, attrs):
        merged = {f: attrs.get(f, getattr(self.instance, f, None)) for f in ("start", "step", "max", "schedule")}
        errors = validate_ramp(merged["start"], merged["step"], merged["max"], merged["schedule"] or None)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class SendWindowSerializer(serializers.Serializer):
    days = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=7), min_length=1,
                                 max_length=7, help_text="ISO weekdays, 1 = Monday … 7 = Sunday.")
    start = HourMinuteField()
    end = HourMinuteField()
    timezone = serializers.CharField(validators=[validate_timezone])

    def validate(self, attrs):
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"end": ["Must be after start (windows do not span midnight)."]})
        attrs["days"] = sorted(set(attrs["days"]))
        return attrs


class UsageSerializer(serializers.Serializer):
    today = serializers.IntegerField()
    this_week = serializers.IntegerField()
    effective_cap_today = serializers.IntegerField()
    remaining_today = serializers.IntegerField()
    remaining_this_week = serializers.IntegerField()


class MailboxSerializer(serializers.ModelSerializer):
    provider = ScopedRelatedField(ProviderConnection)
    warmup_profile = ScopedRelatedField(WarmupProfile, required=False, allow_null=True)
    pools = ScopedRelatedField(Pool, many=True, required=False)
    send_window = SendWindowSerializer(required=False)
    usage = serializers.SerializerMethodField()
    domain = serializers.CharField(source="domain.name", read_only=True)
    provider_limits = serializers.SerializerMethodField(
        help_text="The provider's documented limits and any cap of this mailbox above them.")

    class Meta:
        model = Mailbox
        fields = ["id", "address", "display_name", "domain", "provider", "daily_cap", "weekly_cap", "hourly_cap",
                  "per_minute_cap", "provider_limits", "min_interval_seconds", "jitter_seconds", "send_window", "warmup_profile", "warmup_started_on",
                  "priority", "weight", "pools", "status", "paused_reason", "usage", "created_at"]
        read_only_fields = ["status", "paused_reason", "created_at"]

    def get_usage(self, obj) -> UsageSerializer:
        usage_map = self.context.get("usage_map")
        data = usage_map[obj.pk] if usage_map and obj.pk in usage_map else caps.usage(obj)
        return {k: data[k] for k in UsageSerializer().fields}

    def get_provider_limits(self, obj) -> dict:
        from providers import limits

        found = limits.for_connection(obj.provider)
        return {"limits": found.as_dict() if found else {}, "source": found.source if found else "",
                "warnings": limits.excess(obj)}

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["send_window"] = instance.send_window
        return data

    def validate_address(self, value):
        address = value.strip().lower()
        workspace = self.context["workspace"]
        domain_name = address.rsplit("@", 1)[1]
        domain = SendingDomain.objects.for_workspace(workspace).filter(name=domain_name).first()
        if domain is None:
            raise serializers.ValidationError(
                f"{domain_name} is not a sending domain of this workspace; add the domain first."
            )
        existing = Mailbox.objects.for_workspace(workspace).filter(address=address)
        if self.instance is not None:
            existing = existing.exclude(pk=self.instance.pk)
        if existing.exists():
            raise serializers.ValidationError(f"{address} is already a mailbox of this workspace.")
        self._domain = domain
        return address

    def validate(self, attrs):
        daily = attrs.get("daily_cap", getattr(self.instance, "daily_cap", Mailbox._meta.get_field("daily_cap").default))
        weekly = attrs.get("weekly_cap", getattr(self.instance, "weekly_cap", Mailbox._meta.get_field("weekly_cap").default))
        if weekly < daily:
            raise serializers.ValidationError({"weekly_cap": [f"Must be at least the daily cap ({daily})."]})
        if self.instance is None and attrs.get("provider") is not None:
            from providers import limits

            attrs.update(limits.defaults_for(attrs["provider"], attrs))
        if attrs.get("warmup_profile") and not (attrs.get("warmup_started_on") or getattr(self.instance, "warmup_started_on", None)):
            attrs["warmup_started_on"] = dt.date.today()
        return attrs

    def _apply(self, instance, attrs):
        window = attrs.pop("send_window", None)
        if window:
            instance.send_window_days = window["days"]
            instance.send_window_start = window["start"]
            instance.send_window_end = window["end"]
            instance.send_window_timezone = window["timezone"]
        if "address" in attrs:
            instance.domain = self._domain
        for key, value in attrs.items():
            setattr(instance, key, value)

    @transaction.atomic
    def create(self, validated_data):
        pools = validated_data.pop("pools", None)
        instance = Mailbox(workspace=validated_data.pop("workspace"))
        self._apply(instance, validated_data)
        instance.save()
        if pools is not None:
            instance.pools.set(pools)
        return instance

    @transaction.atomic
    def update(self, instance, validated_data):
        pools = validated_data.pop("pools", None)
        self._apply(instance, validated_data)
        instance.save()
        if pools is not None:
            instance.pools.set(pools)
        return instance


class PoolSerializer(serializers.ModelSerializer):
    mailboxes = ScopedRelatedField(Mailbox, many=True, required=False)
    workloads = serializers.ListField(child=serializers.SlugField(max_length=50), required=False)

    class Meta:
        model = Pool
        fields = ["id", "name", "strategy", "workloads", "mailboxes", "created_at"]
        read_only_fields = ["created_at"]

    def validate_name(self, value):
        existing = Pool.objects.for_workspace(self.context["workspace"]).filter(name=value)
        if self.instance is not None:
            existing = existing.exclude(pk=self.instance.pk)
        if existing.exists():
            raise serializers.ValidationError("A pool with this name exists.")
        return value

    def validate_workloads(self, value):
        return sorted(set(value))


class PauseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
