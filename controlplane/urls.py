from django.contrib import admin
from django.urls import include, path, re_path

from controlplane import health
from controlplane.admin import compliance_urls, site_index
from providers.callbacks import provider_callback
from suppression.views import unsubscribe

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("u/<str:token>", unsubscribe, name="unsubscribe"),
    re_path(r"^hooks/(?P<kind>[a-z0-9_]+)/(?P<provider_id>[^/]+)/?$", provider_callback, name="provider-callback"),
    path("api/v1/", include(("controlplane.api.urls", "api"), namespace="api")),
    path("django-rq/", include("django_rq.urls")),
    path("compliance/", include((compliance_urls, "compliance"))),
    # The admin index, except that a reviewer-only user lands on the compliance page.
    path("", site_index),
    path("", admin.site.urls),
]

handler404 = "controlplane.api.errors.handler404"
handler500 = "controlplane.middleware.server_error"  # a database outage is a 503, else errors.handler500
