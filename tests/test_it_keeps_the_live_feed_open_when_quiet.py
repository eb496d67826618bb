"""The dashboard's websocket stays open through silence (issue 19.1).

redis-py 8 reads with a 5 s socket timeout by default, and channels-redis
waits for a message with a 5 s blocking pop: with nothing to send, the read
timed out first and the server closed the socket (1011) every ~5 s. This
holds a socket open on the real ASGI app and the real Redis channel layer for
longer than several such rounds, then checks the next update still arrives.
"""

import asyncio

from tests.conftest import EDGE_ID, make_rows, open_dashboard, update_after_storing

SILENCE_SECONDS = 12  # over twice the 5 s after which the feed used to drop


def test_it_delivers_an_update_after_a_long_silence(publishing_cloud):
    async def scenario():
        socket, _ = await open_dashboard()
        # Nothing is published for a while; the server must neither send nor close.
        assert await socket.receive_nothing(timeout=SILENCE_SECONDS, interval=0.5)
        return await update_after_storing(socket, publishing_cloud, make_rows(7, household="after-silence"), 15)

    update = asyncio.run(scenario())
    assert update["type"] == "update"
    assert update["acked"] == 7 and update["edges"] == {EDGE_ID: 7}
