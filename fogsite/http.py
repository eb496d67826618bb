"""Django's ASGI handler with the middleware chain and the view run in one thread hop.

Every middleware Django ships is both sync- and async-capable, so under its
stock ASGI handler each process_request/process_response hook of a
MiddlewareMixin runs through a thread hop of its own, and the view through
more. `bench api` measures this handler against the stock one.
Built in sync mode, the chain runs as it does under WSGI; the whole of
`get_response` (middleware and view) then crosses into a thread once.
Websockets are untouched: Channels routes them past this handler.
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class OneHopASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_one_hop_asgi_application():
    import django

    django.setup(set_prefix=False)
    return OneHopASGIHandler()
