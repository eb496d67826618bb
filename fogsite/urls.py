"""The web process's routes, by FOG_ROLE: an edge host serves the admin and the edge's health page,
a cloud host the dashboard and the API; both serve /metrics for their own side (fogsite.metrics)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from fogsite.metrics import metrics

urlpatterns = [path("metrics", metrics, name="metrics")]
if settings.FOG_SERVES_EDGE:
    urlpatterns += [path("edge/", include("edge_app.urls")), path("admin/", admin.site.urls)]
if settings.FOG_SERVES_CLOUD:
    urlpatterns.append(path("", include("cloud_app.urls")))

handler404 = "cloud_app.api.not_found"  # JSON under /api/, as the schema says
handler400 = "cloud_app.api.bad_request"
