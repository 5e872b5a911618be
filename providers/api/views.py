from controlplane.api.views import ListCreateRetrieveUpdate
from providers import services
from providers.api.serializers import ProviderSerializer
from providers.models import ProviderConnection


class ProviderViewSet(ListCreateRetrieveUpdate):
    queryset_base = ProviderConnection.objects
    serializer_class = ProviderSerializer
    filterset_fields = ["kind"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.create_connection(
            workspace=self.workspace, kind=data["kind"], name=data["name"], settings=data.get("settings"),
            credentials=data.get("credentials"),
        )

    def perform_update(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.update_connection(
            connection=serializer.instance, name=data.get("name"), settings=data.get("settings"),
            credentials=data.get("credentials"),
        )
