"""The channel layer: channels-redis, with a receive that ends when its task was cancelled.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives just as
the awaited operation finishes (python/cpython#86296, fixed in 3.12), and
redis-py writes every command through `wait_for` whenever a socket timeout is
set. channels-redis's receive pops in a loop until a message comes for its
channel; the receive holding the process's receive lock pops for every
consumer of the process. When the cancel of a closed socket's receive landed on
such a write, that receive went on popping, for the others and for a consumer
that no longer existed: its task never ended, a socket leaked with every such
close, and uvicorn waited for it forever on shutdown.

A receive whose task has a cancel outstanding now raises it before its next pop
(nothing popped yet, so nothing is lost) and after a pop that came back empty.
A swallowed cancel ends the receive at its next round: with the next message
any consumer of the process gets, or after one blocking pop (`brpop_timeout`,
5 s) when none comes.
"""

import asyncio

from channels_redis.core import RedisChannelLayer


def _cancel_outstanding():
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class CancellableRedisChannelLayer(RedisChannelLayer):
    async def _brpop_with_clean(self, index, channel, timeout):
        _cancel_outstanding()
        member = await super()._brpop_with_clean(index, channel, timeout)
        if member is None:
            _cancel_outstanding()
        return member
