"""Start-up of the cloud node: settings -> Redis, secrets, server; signals -> stop flag."""

import asyncio
import logging
import signal

import redis.asyncio as aioredis
import redis.exceptions
from channels.layers import get_channel_layer
from django.conf import settings

from cloud_app.server import CloudServer
from cloud_app.store import CloudStore
from cloud_app.secrets import edge_secrets_text, parse_edge_secrets

log = logging.getLogger("fog.cloud")


class CloudStartError(Exception):
    """The cloud can't start; the message says why in one line."""


def edge_secrets():
    try:
        text = edge_secrets_text(settings.FOG_EDGE_SECRETS, settings.FOG_EDGE_SECRETS_FILE)
    except OSError as exc:
        raise CloudStartError(f"FOG_EDGE_SECRETS_FILE {settings.FOG_EDGE_SECRETS_FILE}: {exc.strerror}") from None
    pairs, bad = parse_edge_secrets(text)
    if bad:
        raise CloudStartError(f"edge secrets: entries for {', '.join(bad)} are not id:secret pairs")
    if not pairs:
        raise CloudStartError("no edge secrets configured (FOG_EDGE_SECRETS): no edge could deliver")
    return pairs


async def run_cloud(*, bind, heartbeat_port, data_port, workers=8, allow_volatile=False, legacy_edge=None,
                    until=None, redis_url=None, key_prefix=None, publish=True):
    """Serve until SIGINT/SIGTERM (or `until` seconds). Raises CloudStartError for known start-up faults."""
    secrets = edge_secrets()
    client = aioredis.Redis.from_url(redis_url or settings.FOG_CLOUD_REDIS_URL, socket_connect_timeout=5)
    store = CloudStore(client, key_prefix or settings.FOG_CLOUD_KEY_PREFIX,
                       households_per_edge=settings.FOG_CLOUD_HOUSEHOLDS_PER_EDGE)
    try:
        try:
            problem = await store.check_durable()
        except redis.exceptions.ConnectionError as exc:
            raise CloudStartError(f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} is unreachable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            problem = f"its persistence can't be checked (CONFIG GET refused: {exc})"
        if problem and not allow_volatile:
            raise CloudStartError(f"cloud Redis refused: {problem}. Fix its config or pass --allow-volatile.")
        if problem:
            log.warning("running on a volatile Redis (--allow-volatile): %s", problem)
        server = CloudServer(store, secrets, window_seconds=settings.FOG_WINDOW_SECONDS, legacy_edge=legacy_edge,
                             channel_layer=get_channel_layer() if publish else None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)  # the handler only sets the flag
        if until:
            loop.call_later(until, stop.set)
        try:
            await server.serve(f"tcp://{bind}:{heartbeat_port}", f"tcp://{bind}:{data_port}", stop, workers=workers)
        except Exception as exc:  # pynng raises its own types for a taken port
            if "Address in use" in str(exc) or "AddressInUse" in type(exc).__name__:
                raise CloudStartError(f"port {heartbeat_port} or {data_port} on {bind} is already in use") from None
            raise
        return server.counts
    finally:
        await client.aclose()
