from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from controlplane.api.views import ListCreateRetrieveUpdate, WorkspaceScopedViewSet
from mailboxes.api.serializers import (
    DomainSerializer, MailboxSerializer, PauseSerializer, PoolSerializer, WarmupProfileSerializer,
)
from mailboxes.models import Mailbox, Pool, SendingDomain, WarmupProfile
from mailboxes.services import caps, identities


class DomainViewSet(WorkspaceScopedViewSet, mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin):
    queryset_base = SendingDomain.objects
    serializer_class = DomainSerializer
    audit_name = "domain"
    filterset_fields = ["status", "paused"]


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
