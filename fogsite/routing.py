"""Websocket URL routes, gathered from the apps that serve websockets."""

websocket_urlpatterns = []
