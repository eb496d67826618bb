from django.contrib import admin
from django.urls import include, path

from fogsite.metrics import metrics

urlpatterns = [
    path("", include("cloud_app.urls")),
    path("edge/", include("edge_app.urls")),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
