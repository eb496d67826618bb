"""Start-up of the cloud node: settings -> Redis, secrets, TLS, server; signals -> stop flag.

What it refuses before a socket is opened, each with one line that says why:
a bind beyond loopback with a development or short edge secret, or without
TLS (unless `insecure_plaintext`); a certificate or CA expired or not yet
valid (nng would listen with it, and every edge's handshake fail without
saying why); legacy v1 beyond loopback (unless `legacy_public`), or under
the id of an authenticated edge; a store that can't be reached,
has no persistence or may evict keys (unless `allow_volatile`), or holds only an older cloud's
unsharded keys.
"""

import asyncio
import logging
import signal

import pynng
import redis.exceptions
from channels.layers import get_channel_layer
from django.conf import settings

from cloud_app.engine import STORE_ERRORS, connect_async
from cloud_app.secrets import read_edge_secrets, weak_secrets
from cloud_app.server import CloudServer
from cloud_app.store import CloudStore
from fogsite.certdates import refusal
from fogsite.env import is_loopback, url_host
from fogwire import tls as wire_tls
from fogwire.stopsignals import stop_signals

log = logging.getLogger("fog.cloud")

# A store call waits at most this long for Redis's answer. A connection dropped half-open on the way (a NAT that
# forgot it, as cloud NATs do with an idle one after minutes) would otherwise hang the call, and every request
# waiting on it, until the kernel gives up a quarter of an hour later. A slow fsync (appendfsync always) stays
# well within it; the call then fails as `store-unavailable`, and the edge sends the batch again.
STORE_SOCKET_TIMEOUT_S = 10.0
# A store connection idle this long is checked (PING) before it is used, so one a NAT forgot meanwhile is
# replaced then, not found dead by the request that needed it.
STORE_HEALTH_CHECK_S = 30
MAX_WORKERS = 1024  # runcloud --workers: data requests served at once, each a pynng context and a task


class CloudStartError(Exception):
    """The cloud can't start; the message says why in one line."""


def _store_failed(exc):
    return CloudStartError(f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} failed: {type(exc).__name__}: {exc}")


def edge_secrets():
    """The edges' secrets, or CloudStartError with the first problem `manage.py check` reports of them."""
    pairs, problems = read_edge_secrets(settings.FOG_EDGE_SECRETS, settings.FOG_EDGE_SECRETS_FILE)
    if problems:
        raise CloudStartError(problems[0].message)
    return pairs


def tls_config():
    """The cloud's TLS config from FOG_CLOUD_TLS_CERT (+ FOG_TLS_CA, FOG_TLS_MUTUAL), or None for plain tcp."""
    if not settings.FOG_CLOUD_TLS_CERT:
        return None
    if out_of_date := refusal("FOG_CLOUD_TLS_CERT", "FOG_TLS_CA"):
        raise CloudStartError(f"TLS: {out_of_date}")
    try:
        return wire_tls.server_config(settings.FOG_CLOUD_TLS_CERT, settings.FOG_TLS_CA or None,
                                      settings.FOG_TLS_MUTUAL)
    except wire_tls.TLSSetupError as exc:
        raise CloudStartError(f"TLS: {exc}") from None


def check_exposure(bind, secrets, tls, *, insecure_plaintext=False, legacy_edge=None, legacy_public=False):
    """Refuse what would expose the cloud; warn about what the operator chose to risk."""
    public = not is_loopback(bind)
    weak = weak_secrets(secrets, settings.DEV_EDGE_SECRET)
    if public and weak:
        raise CloudStartError(f"refusing to listen on {bind} (beyond loopback): weak edge secrets: {', '.join(weak)}; "
                              "give each edge a random secret of its own in FOG_EDGE_SECRETS(_FILE)")
    if public and tls is None and not insecure_plaintext:
        raise CloudStartError(f"refusing to listen on {bind} (beyond loopback) without TLS: set FOG_CLOUD_TLS_CERT "
                              "(manage.py makecerts), or pass --insecure-plaintext to accept clear text")
    if public and tls is None:
        log.warning("--insecure-plaintext: readings cross the network to %s in clear text", bind)
    if legacy_edge is None:
        return
    if legacy_edge in secrets:
        raise CloudStartError(f"--legacy-edge-id {legacy_edge!r} is an authenticated edge's id (FOG_EDGE_SECRETS): "
                              "anonymous v1 clients could take its tuple ids; choose another id")
    if public and not legacy_public:
        raise CloudStartError(f"refusing legacy v1 on {bind} (beyond loopback): v1 has no authentication; "
                              "pass --legacy-v1-public to accept anyone who can reach the port")
    log.warning("legacy v1 is on: ANYONE who can reach %s can store tuples as edge %r without a secret "
                "(the original prototype's protocol has no authentication)", bind, legacy_edge)


def store_client(url):
    """The cloud's asyncio client of its store at `url` (one Redis or a Redis Cluster)."""
    return connect_async(url, socket_connect_timeout=5, socket_timeout=STORE_SOCKET_TIMEOUT_S,
                         health_check_interval=STORE_HEALTH_CHECK_S)


async def run_cloud(*, bind, heartbeat_port, data_port, workers=8, allow_volatile=False, legacy_edge=None,
                    until=None, redis_url=None, key_prefix=None, publish=True, insecure_plaintext=False,
                    legacy_public=False):
    """Serve until SIGINT, SIGTERM or SIGHUP (fogwire.stopsignals), or `until` seconds. Raises CloudStartError for
    known start-up faults."""
    secrets = edge_secrets()
    tls = tls_config()
    check_exposure(bind, secrets, tls, insecure_plaintext=insecure_plaintext, legacy_edge=legacy_edge,
                   legacy_public=legacy_public)
    client = store_client(redis_url or settings.FOG_CLOUD_REDIS_URL)
    store = CloudStore(client, key_prefix or settings.FOG_CLOUD_KEY_PREFIX,
                       households_per_edge=settings.FOG_CLOUD_HOUSEHOLDS_PER_EDGE)
    before = {}  # signal -> its handler before this call's
    try:
        try:
            problem = await store.check_durable()
        except redis.exceptions.ConnectionError as exc:
            raise CloudStartError(f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} is unreachable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            problem = f"its persistence can't be checked (CONFIG GET refused: {exc})"
        except STORE_ERRORS as exc:  # a cluster it can't reach or map
            raise _store_failed(exc) from None
        try:
            old = await store.unsharded_keys()
        except STORE_ERRORS as exc:
            raise _store_failed(exc) from None
        if old:
            raise CloudStartError(
                f"cloud Redis at {settings.FOG_CLOUD_REDIS_URL} holds an older cloud's unsharded keys "
                f"({', '.join(old)}) and none of this version's sharded ones: this cloud would not see that data "
                "(dedup history, household owners). Keep the older cloud on it, or move its data away (or delete "
                "those keys if it may go) before starting this one.")
        if problem and not allow_volatile:
            raise CloudStartError(f"cloud Redis refused: {problem}. Fix its config or pass --allow-volatile.")
        if problem:
            log.warning("running on a volatile Redis (--allow-volatile): %s", problem)
        server = CloudServer(store, secrets, window_seconds=settings.FOG_WINDOW_SECONDS, legacy_edge=legacy_edge,
                             channel_layer=get_channel_layer() if publish else None,
                             max_connections=settings.FOG_CLOUD_MAX_CONNECTIONS, watch_durability=not allow_volatile)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # asyncio puts SIG_DFL back when it removes a handler, not what was there: put that back on the way out
        # (runcloud called in a process that goes on, as a test session, which takes SIGTERM as Ctrl-C).
        for signum in stop_signals():
            before[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, stop.set)  # the handler only sets the flag
        if until:
            loop.call_later(until, stop.set)
        host = url_host(bind)  # tcp://[::1]:63270
        try:
            await server.serve(wire_tls.address(host, heartbeat_port, tls), wire_tls.address(host, data_port, tls),
                               stop, workers=workers, tls=tls)
        except pynng.NNGException as exc:  # only listening raises here: the workers' errors stay in serve()
            if isinstance(exc, pynng.AddressInUse):
                raise CloudStartError(f"port {heartbeat_port} or {data_port} on {bind} is already in use") from None
            raise CloudStartError(f"can't listen on {bind} (ports {heartbeat_port} and {data_port}): {exc}; "
                                  "is it an address of this host?") from None
        return server.counts
    finally:
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
        await client.aclose()
