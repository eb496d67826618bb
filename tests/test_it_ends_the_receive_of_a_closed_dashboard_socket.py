"""A closed dashboard socket's receive ends, even when Python 3.11 swallowed its cancel.

channels cancels a consumer's channel-layer receive when its socket closes. On
Python 3.11, a cancel that meets the end of one of redis-py's writes is lost
inside `asyncio.wait_for`, and channels-redis then popped for the closed socket
forever: the socket's task never ended, and uvicorn never finished shutting
down (CI caught the web server still running after SIGTERM). The test makes
that meeting happen on purpose, on the real Redis, with the configured layer.
"""

import asyncio
import uuid

from django.conf import settings
from django.utils.module_loading import import_string
from redis.asyncio.connection import Connection

POP_SECONDS = 1  # the layer's blocking pop, shortened so the test waits seconds, not minutes


def configured_layer(url):
    config = settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "address": url} for host in config["CONFIG"]["hosts"]]
    layer = import_string(config["BACKEND"])(hosts=hosts, prefix=f"test-{uuid.uuid4().hex[:8]}")
    layer.brpop_timeout = POP_SECONDS
    return layer


def test_it_ends_a_receive_whose_cancel_met_the_end_of_a_write(channel_redis_url, monkeypatch):
    met = []

    async def scenario():
        layer = configured_layer(channel_redis_url)
        receive = asyncio.create_task(layer.receive(await layer.new_channel()))
        written = Connection._send_packed_command

        async def write_then_cancel(connection, command):
            await written(connection, command)
            if not met and not receive.done():
                met.append(receive.cancel())  # as channels does when the socket closes, as the write ends

        await asyncio.sleep(0.2)  # the receive waits in its first pop; the next write is the next round's
        monkeypatch.setattr(Connection, "_send_packed_command", write_then_cancel)
        done, _ = await asyncio.wait({receive}, timeout=POP_SECONDS * 4)
        if not done:  # a second cancel reaches the pop's read: leave nothing running
            receive.cancel()
            await asyncio.gather(receive, return_exceptions=True)
        await layer.flush()
        return bool(done) and receive.cancelled()

    assert asyncio.run(scenario()), "the receive went on popping after its cancel"
    assert met == [True]  # the cancel did meet a write's end

