from django.contrib import admin
from django.urls import include, path

from controlplane import health
from suppression.views import unsubscribe

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("u/<str:token>", unsubscribe, name="unsubscribe"),
    path("api/v1/", include(("controlplane.api.urls", "api"), namespace="api")),
    path("django-rq/", include("django_rq.urls")),
    path("", admin.site.urls),
]

handler404 = "controlplane.api.errors.handler404"
handler500 = "controlplane.api.errors.handler500"
