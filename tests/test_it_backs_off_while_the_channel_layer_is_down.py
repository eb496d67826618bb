"""The dashboard's websocket while the channel Redis is down: refused before it opens, and the page backs off.

The consumer accepted the socket before joining the group: with the channel
layer down the browser saw it open (the banner said "Live" and the retry
pause went back to one second), then closed, every second for as long as
the outage lasted. It now joins first and accepts only what can deliver; the
page resets its pause only once a message came.
"""

import asyncio
import copy
import time

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from redis.exceptions import RedisError

from cloud_app.consumers import DashboardConsumer
from tests.conftest import free_port
from tests.test_it_shows_the_dashboard_in_a_browser import CHROMIUM, FLAGS, web  # noqa: F401  (the page's server)

CLOSE_AFTER_MS = 100  # the page has seen the socket open by then
WATCH_SECONDS = 4.5  # backing off, the page connects at 0, 1 and 3 s; one a second would be five times


@pytest.fixture
def layer_down(cloud_settings):
    """The channel layer pointed at a port where no Redis listens: a channel Redis that is down."""
    layer = copy.deepcopy(cloud_settings.CHANNEL_LAYERS["default"])
    down = f"redis://127.0.0.1:{free_port()}/0"
    layer["CONFIG"]["hosts"] = [{**host, "address": down} for host in layer["CONFIG"]["hosts"]]
    cloud_settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


def test_it_refuses_the_socket_before_accepting_it(layer_down):
    async def scenario():
        socket = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/dashboard/")
        connected, _ = await socket.connect(timeout=10)
        assert not connected  # refused, never accepted
        with pytest.raises(RedisError):  # channels' own receive from the layer fails too, and ends the app
            await socket.wait(timeout=5)

    asyncio.run(scenario())


def test_it_backs_off_when_a_socket_opens_and_closes_without_a_message(web):  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page()
        opened, unclosed = [], []
        # A server that accepts, then closes before saying anything (what the page saw of a layer that is down).
        page.route_web_socket("**/ws/dashboard/", lambda ws: (opened.append(ws), unclosed.append(ws)))
        page.goto(web)
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            page.wait_for_timeout(CLOSE_AFTER_MS)
            while unclosed:
                unclosed.pop().close()
        assert 2 <= len(opened) <= 3, f"{len(opened)} connections in {WATCH_SECONDS} s: the page does not back off"
        assert "link-down" in page.get_attribute("#link", "class")
        assert "Reconnecting" in page.inner_text("#link")
        browser.close()
