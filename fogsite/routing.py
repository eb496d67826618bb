"""Websocket URL routes, gathered from the apps that serve websockets."""

from cloud_app.routing import websocket_urlpatterns as cloud_routes

websocket_urlpatterns = [*cloud_routes]
