"""A dashboard client that does not read: one flush at a time per socket, the rest merged, nothing orphaned.

The flush used to forget its task before its send: while a send to a slow
client waited, every update started another flush, each blocked on the same
socket, and the disconnect cancelled only the newest. The others died later
as "Task exception was never retrieved" (ClientDisconnected, or a send after
the close). Here the consumer runs on the real Redis channel layer; its ASGI
`send` is held the way a full TCP buffer holds uvicorn's.
"""

import asyncio
import gc

from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from cloud_app.consumers import DashboardConsumer
from cloud_app.server import DASHBOARD_GROUP

UPDATES = 12
UPDATE_GAP_SECONDS = 0.05  # over half a second of updates: twice the per-client rate's interval


class HeldClient:
    """Wraps the consumer: once `hold()`, its websocket sends wait until `release()`; `gone` makes them fail as
    uvicorn's do for a client that went away (ClientDisconnected, an OSError)."""

    def __init__(self):
        self.app, self.open, self.gone = DashboardConsumer.as_asgi(), asyncio.Event(), False
        self.open.set()

    def hold(self):
        self.open.clear()

    def release(self, gone=False):
        self.gone = gone
        self.open.set()

    async def __call__(self, scope, receive, send):
        async def held_send(message):
            if message["type"] == "websocket.send":
                await self.open.wait()
                if self.gone:
                    raise OSError("client disconnected")
            await send(message)

        await self.app(scope, receive, held_send)


def flushes():
    return [t for t in asyncio.all_tasks() if "DashboardConsumer._flush" in repr(t.get_coro())]


async def connected(client):
    socket = WebsocketCommunicator(client, "/ws/dashboard/")
    ok, _ = await socket.connect(timeout=10)
    assert ok
    assert (await socket.receive_json_from(timeout=10))["type"] == "summary"
    return socket


async def publish(count):
    layer = get_channel_layer()
    for _ in range(count):
        await layer.group_send(DASHBOARD_GROUP, {"type": "pipeline.update", "acked": 1, "edges": {"e": 1}})
        await asyncio.sleep(UPDATE_GAP_SECONDS)


def run_watching_the_loop(scenario):
    """Run `scenario` and return what the loop's exception handler got (unretrieved task exceptions included)."""
    caught = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: caught.append(context))
        await scenario()
        gc.collect()  # a task that died unretrieved says so when it is collected
        await asyncio.sleep(0.1)

    asyncio.run(main())
    return caught


def test_it_runs_one_flush_at_a_time_and_merges_what_came_meanwhile(cloud_settings):
    async def scenario():
        client = HeldClient()
        socket = await connected(client)
        client.hold()
        await publish(UPDATES)
        assert len(flushes()) == 1  # the one blocked in its send
        client.release()
        acked, messages = 0, 0
        while acked < UPDATES:
            message = await socket.receive_json_from(timeout=5)
            acked, messages = acked + message["acked"], messages + 1
        assert messages <= 3  # the held one, then the rest merged (and at most one that came late)
        await socket.disconnect()
        assert flushes() == []

    assert run_watching_the_loop(scenario) == []


def test_it_cancels_the_flush_of_a_client_that_went_away(cloud_settings):
    async def scenario():
        client = HeldClient()
        socket = await connected(client)
        client.hold()
        await publish(UPDATES)
        assert len(flushes()) == 1
        client.release(gone=True)  # the held send fails, as uvicorn's does for a closed connection
        await publish(2)
        await socket.disconnect()
        assert flushes() == []

    assert run_watching_the_loop(scenario) == []


def test_it_cancels_a_held_flush_on_disconnect(cloud_settings):
    async def scenario():
        client = HeldClient()
        socket = await connected(client)
        client.hold()
        await publish(3)
        await socket.disconnect()  # with the send still held
        assert flushes() == []

    assert run_watching_the_loop(scenario) == []
