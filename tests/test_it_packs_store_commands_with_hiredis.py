"""The cloud's asyncio Redis connections pack commands with hiredis (cloud_app.engine): the same bytes as
redis-py's own packing over plain TCP and TLS, and a unix socket keeps its kind of connection too."""

import asyncio

from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from cloud_app.engine import connect_async

# What the batch script is given: ints, floats as repr(), text with non-ASCII households, bytes; and the
# other kinds redis-py accepts.
ARGS = ("EVALSHA", "a" * 40, 3, "fog:t:{3}:edge-1", b"raw\x00bytes", 1_800_000_000_000, repr(231.25), 231.25,
        "Haushalt-Müller-7", "1800000000000|1800000005000|231.25|3|80331|BY|1800000001234|edge-1|7|hh",
        memoryview(b"view"), bytearray(b"array"), float("inf"), -0.0, 2**70)


def test_it_keeps_the_url_s_kind_of_connection():
    for url, kind in (("redis://127.0.0.1:6379/0", Connection), ("rediss://127.0.0.1:6380/0", SSLConnection),
                      ("unix:///tmp/redis.sock?db=0", UnixDomainSocketConnection)):
        client = connect_async(url)
        try:
            used = client.connection_pool.connection_class
            assert issubclass(used, kind) and used is not kind, (url, used)
            assert used.pack_command is not kind.pack_command
        finally:
            asyncio.run(client.aclose())


def test_it_packs_the_same_bytes_as_redis_py():
    for url, kind in (("redis://127.0.0.1:6379/0", Connection), ("rediss://127.0.0.1:6380/0", SSLConnection)):
        client = connect_async(url)
        try:
            ours = client.connection_pool.make_connection()
            for args in (ARGS, ("CONFIG GET", "append*")):  # a command name of two words, too
                assert b"".join(ours.pack_command(*args)) == b"".join(kind().pack_command(*args)), (url, args)
        finally:
            asyncio.run(client.aclose())

