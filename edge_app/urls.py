from django.urls import path

from edge_app import views

urlpatterns = [
    path("health/", views.health, name="edge-health"),
]
