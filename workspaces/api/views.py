from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from controlplane.api.schema import ControlPlaneAutoSchema
from workspaces import services
from workspaces.models import Workspace


class WorkspaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Workspace
        fields = ["id", "slug", "name", "timezone", "sender_identification", "postal_address", "paused",
                  "paused_reason", "hard_bounce_threshold", "complaint_threshold", "health_min_sends"]
        read_only_fields = fields


class WorkspacePauseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class WorkspaceViewSet(viewsets.ViewSet):
    """The key's own workspace and its kill switch."""

    schema = ControlPlaneAutoSchema()
    write_roles = {"admin"}
    serializer_class = WorkspaceSerializer

    @extend_schema(responses=WorkspaceSerializer)
    def retrieve(self, request):
        return Response(WorkspaceSerializer(request.user.workspace).data)

    @extend_schema(request=WorkspacePauseSerializer, responses=WorkspaceSerializer)
    @action(detail=False, methods=["post"])
    def pause(self, request):
        body = WorkspacePauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        workspace = services.set_paused(workspace=request.user.workspace, paused=True,
                                        reason=body.validated_data["reason"])
        return Response(WorkspaceSerializer(workspace).data)

    @extend_schema(request=None, responses=WorkspaceSerializer)
    @action(detail=False, methods=["post"])
    def resume(self, request):
        workspace = services.set_paused(workspace=request.user.workspace, paused=False)
        return Response(WorkspaceSerializer(workspace).data)
