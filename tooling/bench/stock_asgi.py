"""fogsite.asgi with Django's stock ASGIHandler where it has OneHopASGIHandler: `bench api`'s baseline.

Everything else (the router, the middleware, gc.freeze, uvicorn's arguments) is the shipped application's.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fogsite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

import fogsite.http  # noqa: E402

fogsite.http.get_one_hop_asgi_application = get_asgi_application  # before fogsite.asgi imports it

from fogsite.asgi import application  # noqa: E402, F401
