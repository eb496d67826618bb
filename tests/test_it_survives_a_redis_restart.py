"""Every tuple the cloud acknowledged is still there after Redis is killed and restarts from its AOF."""

import os
import signal

import redis as redis_lib

from cloud_app.reader import CloudReader
from cloud_app.keys import DEFAULT_PREFIX, Keys
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, deliver, make_rows, wait_for


def test_it_keeps_every_acked_tuple_across_a_redis_kill(own_redis):
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    cloud = CloudThread(url, DEFAULT_PREFIX, {EDGE_ID: EDGE_SECRET}).start()
    acked = 0
    try:
        for batch in range(20):
            rows = make_rows(250, start_id=batch * 250, base_ms=1_577_142_000_000 + batch * 250 * 5000)  # new windows
            codes, reasons = deliver(cloud, rows)
            acked += sum(1 for c in codes if c)
    finally:
        cloud.stop()
    os.kill(own_redis.our_pid(), signal.SIGKILL)  # no shutdown save: only the AOF can bring it back
    assert wait_for(lambda: not own_redis.ready(), timeout=5)
    own_redis.pidfile.unlink()
    own_redis.up(lambda line: None)
    client = redis_lib.Redis.from_url(url)
    assert acked == 5000
    assert client.hlen(Keys(DEFAULT_PREFIX).tuples(EDGE_ID)) == acked
    assert sum(count for _, _, count in CloudReader(client, DEFAULT_PREFIX, 1.0).state_sums().values()) == acked
