"""The edge's loop locks: one copy per loop and edge, kept through a slow step, taken over after a death."""

import uuid

import redis as redis_lib

from edge_app.loops import EdgeControl


def _control(redis_url):
    return EdgeControl(f"edge-{uuid.uuid4().hex[:8]}", connection=redis_lib.Redis.from_url(redis_url))


def test_it_lets_only_one_copy_hold_a_loop(redis_url):
    control = _control(redis_url)
    assert control.acquire("sender", "1:a", wait_seconds=0)
    assert not control.acquire("sender", "2:b", wait_seconds=0)
    assert control.holder_pid("sender") == 1


def test_it_takes_back_a_lock_that_lapsed_during_a_slow_step(redis_url):
    control = _control(redis_url)
    assert control.acquire("sender", "1:a", wait_seconds=0)
    control.redis.delete(control.prefix + "lock:sender")  # as if its 3 s ran out mid-step
    assert control.renew("sender", "1:a")
    assert control.holder_pid("sender") == 1


def test_it_gives_up_a_loop_another_copy_took_over(redis_url):
    control = _control(redis_url)
    assert control.acquire("sender", "1:a", wait_seconds=0)
    control.redis.delete(control.prefix + "lock:sender")
    assert control.acquire("sender", "2:b", wait_seconds=0)  # the supervisor's replacement
    assert not control.renew("sender", "1:a")
    control.release("sender", "1:a")  # must not free the other copy's lock
    assert control.holder_pid("sender") == 2
