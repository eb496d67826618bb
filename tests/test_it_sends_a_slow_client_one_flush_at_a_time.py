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


def test_it_closes_a_client_that_reads_nothing_and_keeps_no_more_than_an_update_holds(cloud_settings, monkeypatch):
    """A socket whose client reads nothing held its consumer for ever (uvicorn's keep-alive ping waits behind
    the stuck send), and merged every update's window ends into one dict that grew without bound."""
    from cloud_app import consumers
    from cloud_app.server import ENDS_MAX

    monkeypatch.setattr(consumers, "SEND_STALL_SECONDS", 1.0)
    merged = None
    for n in range(4):  # as a drained backlog's updates come: each with ENDS_MAX ends of its own
        merged = consumers.merge(merged, {"acked": ENDS_MAX, "ends": {str(n * ENDS_MAX + i): 1 for i in range(ENDS_MAX)}})
    assert len(merged["ends"]) == ENDS_MAX and merged["acked"] == 4 * ENDS_MAX

    async def scenario():
        client = HeldClient()
        socket = await connected(client)
        client.hold()
        await publish(3)
        closed = await socket.receive_output(timeout=5)  # the close is no websocket.send: it is not held
        assert closed == {"type": "websocket.close", "code": consumers.CLOSE_STALLED}
        await asyncio.sleep(0.2)
        assert flushes() == []
        layer = get_channel_layer()
        assert not await layer.connection(layer.consistent_hash(DASHBOARD_GROUP)).zcard(
            layer._group_key(DASHBOARD_GROUP)), "the socket is still in the group"
        client.release(gone=True)
        await socket.disconnect()

    assert run_watching_the_loop(scenario) == []
