"""The cloud store's engine: one Redis, or a Redis Cluster when its URL says so.

`FOG_CLOUD_REDIS_URL=redis+cluster://host:port/` (or `rediss+cluster://`) names one node of a cluster;
the client learns the others from it. The store's key layout (cloud_app.store.Keys) is the same on both
engines: every script's keys share one hash tag, so one slot, and a single Redis simply holds every slot.
"""

from urllib.parse import urlsplit

import redis as redis_lib
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # -> the nodes' own scheme


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
    """An asyncio client for the cloud store at `url`."""
    if is_cluster(url):
        return AsyncRedisCluster.from_url(node_url(url), **options)
    return aioredis.Redis.from_url(url, **options)


async def config_of_every_primary(client, pattern):
    """CONFIG GET `pattern` of every node that takes writes: [one dict a node]."""
    if isinstance(client, AsyncRedisCluster):
        replies = await client.config_get(pattern, target_nodes=AsyncRedisCluster.PRIMARIES)
        return list(replies.values()) if isinstance(replies, dict) and all(
            isinstance(v, dict) for v in replies.values()) else [replies]
    return [await client.config_get(pattern)]
