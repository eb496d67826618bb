"""The cloud store's engine: one Redis, or a Redis Cluster when its URL says so.

`FOG_CLOUD_REDIS_URL=redis+cluster://host:port/` (or `rediss+cluster://`) names one node of a cluster;
the client learns the others from it. The store's key layout (cloud_app.store.Keys) is the same on both
engines: every script's keys share one hash tag, so one slot, and a single Redis simply holds every slot.
"""

from functools import cache
from urllib.parse import urlsplit

import redis as redis_lib
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.utils import HIREDIS_AVAILABLE

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # -> the nodes' own scheme
# What a store call raises when the store fails: redis-py's RedisClusterException (a cluster it can't reach
# or map) is not a RedisError, so a guard that names RedisError alone lets a cluster outage through.
STORE_ERRORS = (RedisError, RedisClusterException)
# A cluster on this host (tooling.localservices starts it for a loopback redis+cluster:// URL) has this many
# masters, on the URL's port and the next ones: what the settings checks count as its nodes.
LOCAL_CLUSTER_MASTERS = 3


def is_cluster(url):
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def node_url(url):
    """A cluster URL as the plain URL of the node it names (a plain URL unchanged)."""
    scheme = urlsplit(url).scheme
    return CLUSTER_SCHEMES[scheme] + url[len(scheme):] if scheme in CLUSTER_SCHEMES else url


def connect(url, **options):
    """A blocking client for the cloud store at `url`."""
    if is_cluster(url):
        return RedisCluster.from_url(node_url(url), **options)
    return redis_lib.Redis.from_url(url, **options)


def connect_async(url, **options):
    """An asyncio client for the cloud store at `url`. On one Redis its connections pack commands with
    hiredis (`_hiredis_packing`); a cluster client builds its nodes' connections itself and keeps
    redis-py's own packing."""
    if is_cluster(url):
        return AsyncRedisCluster.from_url(node_url(url), **options)
    pool = aioredis.ConnectionPool.from_url(url, **options)
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


@cache
def _hiredis_packing(connection_class):
    """`connection_class` (plain, TLS or unix socket) packing each command with hiredis, as redis-py's
    blocking connections do and its asyncio ones do not yet (redis/redis-py#4176). The batch script takes
    about seven arguments a tuple, and packing them in Python was the largest item in runcloud's profile
    at 100,000 households. The same bytes either way; without hiredis the class is left as it is."""
    if not HIREDIS_AVAILABLE:
        return connection_class
    from redis.connection import HiredisRespSerializer  # it names the hiredis module: only when there is one

    import hiredis

    packer = HiredisRespSerializer()

    def pack_command(self, *args):
        # As HiredisRespSerializer.pack, less its pass over every argument for a bytearray or memoryview, which
        # took longer than hiredis's packing itself: none of ours is one (hiredis refuses them, and then that
        # pass is made).
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return packer.pack(*args)

    return type(f"Hiredis{connection_class.__name__}", (connection_class,), {"pack_command": pack_command})


async def config_of_every_primary(client, pattern):
    """CONFIG GET `pattern` of every node that takes writes: [one dict a node]."""
    if isinstance(client, AsyncRedisCluster):
        replies = await client.config_get(pattern, target_nodes=AsyncRedisCluster.PRIMARIES)
        return list(replies.values()) if isinstance(replies, dict) and all(
            isinstance(v, dict) for v in replies.values()) else [replies]
    return [await client.config_get(pattern)]
