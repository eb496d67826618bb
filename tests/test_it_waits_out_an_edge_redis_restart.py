"""The edge Redis (the loops' queue, locks and control) restarting or unreachable for a while does not end
the edge: the supervisor says so once, waits, and carries on; its loops start again once it is back (their
data is in the edge database). A supervisor that died there left the edge down until someone noticed."""

import signal
import time

from tests.conftest import start_edge, wait_for


def test_it_waits_out_a_restart_of_the_edge_redis(edge_env, own_redis, topic):
    env = {**edge_env, "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    edge = start_edge(env, topic)
    try:
        own_redis.down(lambda line: None)
        time.sleep(3)  # six of the supervisor's checks, and the loops' own calls, find it gone
        assert edge.poll() is None, "the edge ended while its Redis was away"
        own_redis.up(lambda line: None)
        time.sleep(2)
        assert edge.poll() is None
    finally:
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=60)
    assert edge.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert err.count("does not answer") == 1 and "the edge waits for it" in err, err[-3000:]
    assert "ended=signal" in out


def test_its_supervisor_ends_cleanly_while_the_edge_redis_is_away(edge_env, own_redis, topic):
    env = {**edge_env, "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    edge = start_edge(env, topic)
    try:
        own_redis.down(lambda line: None)
        assert not wait_for(lambda: edge.poll() is not None, timeout=2, interval=0.2)
    finally:
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=60)
    assert edge.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "ended=signal" in out
