"""ASGI entry point: Django for HTTP, Channels for websockets (uvicorn or daphne serves both)."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fogsite.settings")

from fogsite.http import get_one_hop_asgi_application  # noqa: E402

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_one_hop_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from fogsite.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything built so far (modules, settings, URL and middleware objects)
# lives as long as the process. Freezing it keeps the collector's full passes
# from walking it: those passes stalled requests and made the p99 of
# `bench api`.
gc.freeze()
