"""Websocket URL routes, gathered from the apps this host serves (FOG_ROLE): only the cloud has any."""

from django.conf import settings

websocket_urlpatterns = []
if settings.FOG_SERVES_CLOUD:
    from cloud_app.routing import websocket_urlpatterns as cloud_routes

    websocket_urlpatterns += cloud_routes
