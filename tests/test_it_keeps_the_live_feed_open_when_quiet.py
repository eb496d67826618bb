"""The dashboard's websocket stays open through silence (issue 19.1).

redis-py 8 reads with a 5 s socket timeout by default, and channels-redis
waits for a message with a 5 s blocking pop: with nothing to send, the read
timed out first and the server closed the socket (1011) every ~5 s. This
holds a socket open on the real ASGI app and the real Redis channel layer for
longer than several such rounds, then checks the next update still arrives.
"""

import asyncio
import time

from cloud_app.server import TICK_EVERY_SECONDS
from tests.conftest import EDGE_ID, is_tick, make_rows, open_dashboard, update_after_storing

SILENCE_SECONDS = 12  # over twice the 5 s after which the feed used to drop


def test_it_delivers_an_update_after_a_long_silence(publishing_cloud):
    async def scenario():
        socket, _ = await open_dashboard()
        # Nothing is stored for a while: the server sends only the cloud's ticks, and does not close.
        deadline = time.monotonic() + SILENCE_SECONDS
        ticks = 0
        while time.monotonic() < deadline:
            if not await socket.receive_nothing(timeout=0.5, interval=0.1):
                assert is_tick(await socket.receive_json_from(timeout=1))
                ticks += 1
        assert ticks >= SILENCE_SECONDS // TICK_EVERY_SECONDS // 2  # the page hears the cloud is there
        return await update_after_storing(socket, publishing_cloud, make_rows(7, household="after-silence"), 15)

    update = asyncio.run(scenario())
    assert update["type"] == "update"
    assert update["acked"] == 7 and update["edges"] == {EDGE_ID: 7}
