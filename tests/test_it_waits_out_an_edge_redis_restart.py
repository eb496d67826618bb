"""The edge Redis (the loops' queue, locks and control) restarting or unreachable for a while does not end
the edge: the supervisor says so once, waits, and carries on; its loops start again once it is back (their
data is in the edge database). A supervisor that died there left the edge down until someone noticed."""

import shutil
import signal
import time
from functools import partial

import pytest

import redis as redis_lib

from edge_app.control import EdgeControl
from tests.conftest import EDGE_LOOPS, start_edge, wait_for


def _holders(env):
    connection = redis_lib.Redis.from_url(env["FOG_EDGE_REDIS_URL"])
    try:
        control = EdgeControl(env["FOG_EDGE_ID"], connection)
        return {loop: getattr(control.holder(loop), "token", None) for loop in EDGE_LOOPS}
    finally:
        connection.close()


@pytest.mark.parametrize("comes_back", ["with its data", "empty"])  # empty: no AOF, or another instance
def test_it_waits_out_a_restart_of_the_edge_redis(edge_env, own_redis, topic, comes_back):
    env = {**edge_env, "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    edge = start_edge(env, topic)
    try:
        before = _holders(env)
        own_redis.down(lambda line: None)
        if comes_back == "empty":
            shutil.rmtree(own_redis.data_dir)
            own_redis.data_dir.mkdir()
        time.sleep(3)  # six of the supervisor's checks, and the loops' own calls, find it gone
        assert edge.poll() is None, "the edge ended while its Redis was away"
        own_redis.up(lambda line: None)

        def running_again():  # every loop held by a new worker's copy of it
            now = _holders(env)
            return all(now[loop] and now[loop] != before[loop] for loop in EDGE_LOOPS)
        assert wait_for(running_again, timeout=60, interval=0.5)
        own_redis.down(lambda line: None)  # and once more: the edge is stopped while it is away
        assert not wait_for(lambda: edge.poll() is not None, timeout=2, interval=0.2)
    finally:
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=60)
    assert edge.returncode == 0, err[-3000:]
    assert err.count("does not answer") == 2 and "the edge waits for it" in err, err[-3000:]
    assert "ended=signal" in out


def _ended_or_taken_again(edge, env, before):
    now = _holders(env)
    return edge.poll() is not None or all(now[loop] and now[loop] != before[loop] for loop in EDGE_LOOPS)


def test_it_waits_out_an_edge_redis_that_goes_away_again_and_again(edge_env, own_redis, topic):
    """Each outage ends every loop's worker (rq can't record its job's end): those are no crash loop of the
    edge's own, and a Redis that went away four times within a minute ended the edge as failed, its workers
    having died more than WORKER_RESTARTS times."""
    env = {**edge_env, "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    edge = start_edge(env, topic)
    started = time.monotonic()
    try:
        for _ in range(4):  # three workers end each time: twelve, past WORKER_RESTARTS
            before = _holders(env)
            own_redis.down(lambda line: None)
            time.sleep(1.5)  # three of the supervisor's checks, and the loops' own calls, find it gone
            own_redis.up(lambda line: None)
            assert wait_for(partial(_ended_or_taken_again, edge, env, before), timeout=30, interval=0.2)
            assert edge.poll() is None, "the edge ended after its Redis came back"
        assert time.monotonic() - started < 60, "the outages were not within one restart window"
    finally:
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=60)
    assert edge.returncode == 0, err[-3000:]
    assert "ended=signal" in out and "giving up" not in out + err, (out + err)[-3000:]
