"""A closed dashboard socket's receive ends, even when Python 3.11 swallowed its cancel.

channels cancels a consumer's channel-layer receive when its socket closes. On
Python 3.11, a cancel that meets the end of one of redis-py's writes is lost
inside `asyncio.wait_for`, and channels-redis then popped for the closed socket
forever, for the other consumers of the process too while updates flowed: the
socket's task never ended, and uvicorn never finished shutting down (CI caught
the web server still running after SIGTERM). The test makes that meeting happen
on purpose, on the real Redis, while another consumer of the same layer gets an
update every quarter second, as the cloud publishes them.
"""

import asyncio
import contextvars
import time
import uuid

from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.utils.module_loading import import_string
from redis.asyncio.connection import Connection

POP_SECONDS = 1  # the layer's blocking pop, shortened so an idle round takes a second
EVERY_SECONDS = 0.25  # the cloud's publishing period (cloud_app.server)
ENDS_WITHIN_S = 4 * POP_SECONDS
CLOSED = contextvars.ContextVar("closed socket's receive", default=False)  # inherited by its writes' tasks
# The cancel lands on the write of the receive's own blocking pop. The tasks channels-redis starts to clean its
# backup queue inherit CLOSED too, but the receive is not waiting on their writes: a cancel there reaches it.
POP = b"BZPOPMIN"


def layer_of(backend, url):
    config = settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "address": url} for host in config["CONFIG"]["hosts"]]
    layer = backend(hosts=hosts, prefix=f"test-{uuid.uuid4().hex[:8]}")
    layer.brpop_timeout = POP_SECONDS
    return layer


async def settle(task, tries=5):
    """Cancel `task` until it ends (a cancel may be swallowed again), so nothing outlives the test."""
    for _ in range(tries):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=POP_SECONDS * 2)
    return task.done()


async def close_one_socket_while_another_listens(layer, monkeypatch):
    """Cancel one receive as its own write ends; returns (it ended in time, what the live one missed)."""
    live_channel, closed_channel = await layer.new_channel(), await layer.new_channel()
    got, sent, stop = [], [], asyncio.Event()

    async def closed_receive():
        CLOSED.set(True)
        return await layer.receive(closed_channel)

    async def listen():
        while True:
            got.append((await layer.receive(live_channel))["n"])

    async def publish():  # stopped by a flag: a cancel can be lost in its own sends too
        while not stop.is_set():
            await layer.send(live_channel, {"type": "update", "n": len(sent)})
            sent.append(len(sent))
            await asyncio.sleep(EVERY_SECONDS)

    closed, listener, publisher = (asyncio.create_task(c()) for c in (closed_receive, listen, publish))
    written, met = Connection._send_packed_command, []

    async def write_then_cancel(connection, command):
        await written(connection, command)
        if CLOSED.get() and not met and not closed.done() and any(POP in chunk for chunk in command):
            met.append(closed.cancel())  # as channels does when the socket closes, as the write ends

    try:
        await asyncio.sleep(0.5)
        monkeypatch.setattr(Connection, "_send_packed_command", write_then_cancel)
        deadline = time.monotonic() + ENDS_WITHIN_S * 3
        while not met and time.monotonic() < deadline:  # the closed receive pops once it holds the lock
            await asyncio.sleep(0.05)
        assert met == [True], "the closed socket's receive never popped from Redis"
        ended = bool((await asyncio.wait({closed}, timeout=ENDS_WITHIN_S))[0])
        stop.set()
        await asyncio.wait({publisher}, timeout=ENDS_WITHIN_S)
        deadline = time.monotonic() + ENDS_WITHIN_S
        while len(got) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return ended, sorted(set(sent) - set(got))
    finally:
        monkeypatch.undo()
        stop.set()
        for task in (publisher, listener, closed):
            assert await settle(task), "a receive outlived the test"
        await layer.flush()


def bounded(scenario, seconds=60):
    """Run `scenario` on a loop of its own, at most `seconds`. Not asyncio.run: at its end it waits for every
    task, and a task of the stock layer that lost its cancel never ends."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(scenario, seconds))
    finally:
        loop.close()


def test_it_ends_a_receive_whose_cancel_met_the_end_of_a_write(channel_redis_url, monkeypatch):
    configured = import_string(settings.CHANNEL_LAYERS["default"]["BACKEND"])
    ended, missed = bounded(close_one_socket_while_another_listens(layer_of(configured, channel_redis_url),
                                                                   monkeypatch))
    assert ended, "the closed socket's receive went on popping after its cancel"
    assert missed == [], "the socket that stayed open missed updates"
    # The same on channels-redis's own layer, so the test is known to make the cancel meet a write: if this
    # fails, the cancel is no longer lost (Python 3.12 fixed wait_for), and fogsite.channel_layer can go.
    stock_ended, _ = bounded(close_one_socket_while_another_listens(layer_of(RedisChannelLayer, channel_redis_url),
                                                                   monkeypatch))
    assert not stock_ended, "channels-redis's own receive ended: the cancel was not lost"
