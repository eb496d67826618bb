"""A dashboard socket that sends what the page never sends is closed with a close code and leaves the group.

Junk text or a binary frame raised inside channels' JSON decoding: the
application ended without its disconnect, the connection dropped without a
close frame, and its channel stayed in the dashboard group for the layer's
group expiry (a day, channels-redis's default), sent every update 4 times a
second. Here the real consumer runs on the real Redis channel layer; the
group is read from Redis as the cloud's publisher sees it.
"""

import asyncio
import copy
import logging
import time

import pytest
import redis as redis_lib
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from cloud_app import consumers
from cloud_app.consumers import CLOSE_INVALID, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, MAX_FRAME_CHARS, DashboardConsumer
from cloud_app.server import DASHBOARD_GROUP
from fogwire.ratelog import RateLimitedLog

JUNK = [  # each frame as the ASGI server hands it over
    ({"text": "not json"}, CLOSE_INVALID),
    ({"text": ""}, CLOSE_INVALID),
    ({"text": "[" * 100_000}, CLOSE_TOO_BIG),
    ({"text": "[" * (MAX_FRAME_CHARS - 1)}, CLOSE_INVALID),  # nested deeper than the JSON parser goes
    ({"bytes": b"\x00\xffjunk"}, CLOSE_UNSUPPORTED),
    ({"bytes": b'{"watch": "x"}'}, CLOSE_UNSUPPORTED),
    ({"bytes": b"x", "text": None}, CLOSE_UNSUPPORTED),
]
FLOOD = 12  # sockets, each with one junk frame
SHORT_EXPIRY = 2  # seconds: renewals every 0.4 s


def members(redis_url):
    """The dashboard group's channels, read where channels-redis keeps them."""
    layer = get_channel_layer()
    client = redis_lib.Redis.from_url(redis_url)
    try:
        return {name.decode() for name in client.zrange(f"{layer.prefix}:group:{DASHBOARD_GROUP}", 0, -1)}
    finally:
        client.close()


async def connected():
    socket = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/dashboard/")
    ok, _ = await socket.connect(timeout=10)
    assert ok
    assert (await socket.receive_json_from(timeout=10))["type"] == "summary"
    return socket


async def next_from_the_cloud(socket):
    """The next message but the web server's own "alive" (sent on a socket idle for ALIVE_EVERY_SECONDS)."""
    while (message := await socket.receive_json_from(timeout=5))["type"] == "alive":
        pass
    return message


def run_watching_the_loop(scenario):
    """Run `scenario`; returns what reached the loop's exception handler."""
    caught = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: caught.append(context))
        await scenario()

    asyncio.run(main())
    return caught


@pytest.mark.parametrize("frame, code", JUNK,
                         ids=["text", "empty", "oversized", "deep", "binary", "binary-json", "binary-text-none"])
def test_it_closes_with_a_code_and_leaves_the_group(cloud_settings, channel_redis_url, caplog, frame, code):
    async def scenario():
        socket = await connected()
        assert len(members(channel_redis_url)) == 1
        await socket.send_input({"type": "websocket.receive", **frame})
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": code}
        assert members(channel_redis_url) == set()  # at once, before the client answers the close
        await socket.disconnect()  # the client's side of the close; the consumer ends without an exception
        await socket.wait(timeout=5)

    with caplog.at_level(logging.WARNING):
        assert run_watching_the_loop(scenario) == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_it_says_so_in_a_few_lines_however_many_sockets_send_junk(cloud_settings, channel_redis_url, caplog,
                                                                  monkeypatch):
    monkeypatch.setattr(consumers, "junk_log", RateLimitedLog(logging.getLogger("fog.cloud"),
                                                              consumers.REFUSED_LOG_LINES, 60))

    async def scenario():
        for n in range(FLOOD):
            socket = await connected()
            await socket.send_input({"type": "websocket.receive", **JUNK[n % len(JUNK)][0]})
            assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"
            await socket.disconnect()
            await socket.wait(timeout=5)
        assert members(channel_redis_url) == set()

    with caplog.at_level(logging.WARNING, logger="fog.cloud"):
        monkeypatch.setattr(logging.getLogger("fog.cloud"), "propagate", True)
        assert run_watching_the_loop(scenario) == []
    lines = [record for record in caplog.records if record.name == "fog.cloud"]
    assert all(record.levelno == logging.WARNING for record in lines)
    assert len(lines) == consumers.REFUSED_LOG_LINES and "closed with" in lines[0].getMessage()


def test_it_keeps_serving_sockets_that_send_what_the_page_sends(cloud_settings, channel_redis_url):
    async def scenario():
        socket = await connected()
        await socket.send_json_to({"watch": "hh-1"})
        await socket.send_json_to({"watch": None})
        await socket.send_json_to(["not", "a", "dict"])  # JSON the consumer has no use for: ignored
        await get_channel_layer().group_send(DASHBOARD_GROUP, {"type": "pipeline.update", "acked": 1})
        assert (await next_from_the_cloud(socket))["type"] == "update"
        assert len(members(channel_redis_url)) == 1
        await socket.disconnect()
        assert members(channel_redis_url) == set()

    assert run_watching_the_loop(scenario) == []


def test_it_sets_a_group_expiry_shorter_than_a_day():
    assert 0 < settings.CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] <= 3600


@pytest.fixture
def short_expiry(cloud_settings):
    layer = copy.deepcopy(cloud_settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"]["group_expiry"] = SHORT_EXPIRY
    cloud_settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


def test_it_keeps_a_live_socket_in_the_group_past_the_expiry(short_expiry, channel_redis_url):
    async def scenario():
        socket = await connected()
        layer = get_channel_layer()
        dead = await layer.new_channel()
        await layer.group_add(DASHBOARD_GROUP, dead)  # a member that died without leaving
        await asyncio.sleep(SHORT_EXPIRY + 1.5)
        await layer.group_send(DASHBOARD_GROUP, {"type": "pipeline.update", "acked": 1})  # drops expired members
        assert (await next_from_the_cloud(socket))["type"] == "update"
        assert len(members(channel_redis_url)) == 1 and dead not in members(channel_redis_url)
        await socket.disconnect()

    started = time.monotonic()
    assert run_watching_the_loop(scenario) == []
    assert time.monotonic() - started < 15
