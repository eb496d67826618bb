"""A cloud of this version keeps its data under sharded keys ({prefix}states:{n}, {prefix}owner:{n}, ...). On a
store that holds only an older cloud's unsharded keys ({prefix}states, {prefix}owner), starting would lose
sight of that data (dedup history, household owners), so runcloud refuses with one line naming those keys."""

import pytest

from cloud_app.engine import connect
from cloud_app.keys import Keys
from tests.conftest import EDGE_ID, EDGE_SECRET, free_port, run_manage

pytestmark = pytest.mark.engines


def runcloud(redis_url, prefix):
    env = {"FOG_CLOUD_REDIS_URL": redis_url, "FOG_CLOUD_KEY_PREFIX": prefix, "FOG_EDGE_SECRETS": f"{EDGE_ID}:{EDGE_SECRET}"}
    return run_manage("runcloud", "--heartbeat-port", str(free_port()), "--data-port", str(free_port()),
                      "--until", "1", env=env, timeout=120)


def test_it_refuses_a_store_holding_only_the_unsharded_keys(redis_url, cloud_prefix, engine):
    client = connect(redis_url)
    try:
        client.hset(f"{cloud_prefix}states", "BY:count", 3)  # what an older cloud left
        client.hset(f"{cloud_prefix}owner", "hh-1", "edge-a")
        refused = runcloud(redis_url, cloud_prefix)
        client.hset(Keys(cloud_prefix).states(0), "BY:count", 1)  # the store has been moved to the new layout
        started = runcloud(redis_url, cloud_prefix)
    finally:
        client.close()
    assert refused.returncode == 1, refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if "unsharded" in line]
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert f"{cloud_prefix}states, {cloud_prefix}owner" in lines[0]
    assert started.returncode == 0, started.stderr[-2000:]
