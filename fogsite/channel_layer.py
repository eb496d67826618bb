"""The channel layer: channels-redis, with a receive that ends when its task was cancelled.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives just as
the awaited operation finishes (python/cpython#86296, fixed in 3.12), and
redis-py writes every command through `wait_for` whenever a socket timeout is
set. channels-redis's receive pops in a loop until a message comes. When the
cancel of a closed socket's receive landed on such a write, the loop went on
popping for a consumer that no longer existed: the task never ended, a socket
leaked with every such close, and uvicorn waited for it forever on shutdown.

A pop that comes back empty now checks whether its task has a cancel
outstanding, and raises it. A swallowed cancel ends the receive at the next
empty pop, at most one blocking pop (`brpop_timeout`, 5 s) later.
"""

import asyncio

from channels_redis.core import RedisChannelLayer


class CancellableRedisChannelLayer(RedisChannelLayer):
    async def _brpop_with_clean(self, index, channel, timeout):
        member = await super()._brpop_with_clean(index, channel, timeout)
        task = asyncio.current_task()
        if member is None and task is not None and task.cancelling():
            raise asyncio.CancelledError()
        return member
