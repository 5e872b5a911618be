from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from audit.api.views import AuditViewSet
from controlplane.api.errors import handler404
from controlplane.api.messages import EventFeed, MessageViewSet
from controlplane.api.recipients import RecipientEraseView, RecipientView
from controlplane.api.webhooks import WebhookViewSet
from mailboxes.api.views import DomainViewSet, MailboxViewSet, PoolViewSet, WarmupProfileViewSet
from providers.api.views import ProviderViewSet
from suppression.api.views import SuppressionViewSet
from workspaces.api.views import WorkspaceViewSet


@csrf_exempt  # an unknown API path answers 404 for every method, never the CSRF page
def not_found(request, *args, **kwargs):
    return handler404(request)


router = SimpleRouter()
router.trailing_slash = "/?"  # accept /domains and /domains/
router.register("domains", DomainViewSet, basename="domain")
router.register("providers", ProviderViewSet, basename="provider")
router.register("mailboxes", MailboxViewSet, basename="mailbox")
router.register("pools", PoolViewSet, basename="pool")
router.register("warmup-profiles", WarmupProfileViewSet, basename="warmup-profile")
router.register("suppressions", SuppressionViewSet, basename="suppression")
router.register("audit", AuditViewSet, basename="audit")
router.register("messages", MessageViewSet, basename="message")
router.register("webhooks", WebhookViewSet, basename="webhook")

workspace = WorkspaceViewSet.as_view
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema", authentication_classes=[],
                                                 permission_classes=[AllowAny]), name="docs"),
    path("events", EventFeed.as_view(), name="events"),
    re_path(r"^recipients/(?P<address>[^/]+)/erase/?$", RecipientEraseView.as_view(), name="recipient-erase"),
    re_path(r"^recipients/(?P<address>[^/]+)/?$", RecipientView.as_view(), name="recipient"),
    path("workspace", workspace({"get": "retrieve"}), name="workspace"),
    path("workspace/pause", workspace({"post": "pause"}), name="workspace-pause"),
    path("workspace/resume", workspace({"post": "resume"}), name="workspace-resume"),
    *router.urls,
    re_path(r"^.*$", not_found),
]
