from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from controlplane.api.views import ListCreateRetrieveUpdate, WorkspaceScopedViewSet
from mailboxes import jobs as mailbox_jobs
from mailboxes.api.serializers import (
    DomainSerializer, MailboxSerializer, PauseSerializer, PoolSerializer, WarmupProfileSerializer,
)
from mailboxes.dns import dkim, service as dns_checks
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from mailboxes.services import caps, identities


class DomainViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin):
    queryset_base = SendingDomain.objects
    serializer_class = DomainSerializer
    audit_name = "domain"
    filterset_fields = ["status", "paused"]

    def perform_create(self, serializer):
        """A new domain gets a DKIM key to publish, and its first check once the records may be there."""
        with transaction.atomic():
            super().perform_create(serializer)
            domain = serializer.instance
            if not domain.dkim_keys.exists():
                dkim.generate_key(domain=domain)
            mailbox_jobs.enqueue_domain_check(domain.pk, "created")

    @extend_schema(
        request=None, responses={200: DomainSerializer, 202: DomainSerializer},
        parameters=[OpenApiParameter("wait", bool, description="true: run the checks now and answer with the "
                                                                 "results (200); otherwise queue them (202).")],
    )
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        """Runs the domain's SPF, DKIM, DMARC, MX and blocklist checks: now with `?wait=true`, else queued."""
        domain = self.get_object()
        if request.query_params.get("wait", "").lower() in ("1", "true", "yes"):
            dns_checks.run_checks(domain=domain, trigger="manual")
            return Response(self.get_serializer(self.get_queryset().get(pk=domain.pk)).data)
        mailbox_jobs.enqueue_domain_check(domain.pk, "manual")
        return Response(self.get_serializer(domain).data, status=status.HTTP_202_ACCEPTED)


class WarmupProfileViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin):
    queryset_base = WarmupProfile.objects
    serializer_class = WarmupProfileSerializer
    audit_name = "warmup_profile"


class PoolViewSet(ListCreateRetrieveUpdate):
    queryset_base = Pool.objects
    serializer_class = PoolSerializer
    audit_name = "pool"

    def get_queryset(self):
        return super().get_queryset().prefetch_related("mailboxes")


class MailboxViewSet(ListCreateRetrieveUpdate):
    queryset_base = Mailbox.objects
    serializer_class = MailboxSerializer
    audit_name = "mailbox"
    filterset_fields = ["status", "provider", "domain"]

    def get_queryset(self):
        return (
            super().get_queryset().select_related("domain", "warmup_profile", "provider").prefetch_related("pools")
        )

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        context = self.get_serializer_context()
        context["usage_map"] = caps.usage_for(page)
        serializer = self.get_serializer_class()(page, many=True, context=context)
        return self.get_paginated_response(serializer.data)

    @extend_schema(request=PauseSerializer, responses=MailboxSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        mailbox = self.get_object()
        body = PauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        mailbox = identities.pause_mailbox(mailbox=mailbox, reason=body.validated_data["reason"])
        return Response(self.get_serializer(self.get_queryset().get(pk=mailbox.pk)).data)

    @extend_schema(request=None, responses=MailboxSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        mailbox = identities.resume_mailbox(mailbox=self.get_object())
        return Response(self.get_serializer(self.get_queryset().get(pk=mailbox.pk)).data)
