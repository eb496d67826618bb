"""The edge's loop locks: one copy per loop and edge, kept through a slow step, taken over after a death,
checked by token in one Lua script each."""

import os
import socket
import subprocess
import sys
import time
import uuid

import redis as redis_lib

from edge_app.control import EdgeControl, Holder


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
    control.redis.delete(control.lock_key("sender"))  # as if its 3 s ran out mid-step
    assert control.renew("sender", "1:a")
    assert control.holder_pid("sender") == 1


def test_it_gives_up_a_loop_another_copy_took_over(redis_url):
    control = _control(redis_url)
    assert control.acquire("sender", "1:a", wait_seconds=0)
    control.redis.delete(control.lock_key("sender"))
    assert control.acquire("sender", "2:b", wait_seconds=0)  # the supervisor's replacement
    assert not control.renew("sender", "1:a")
    control.release("sender", "1:a")  # must not free the other copy's lock
    assert control.holder_pid("sender") == 2


def test_it_takes_over_at_once_from_a_holder_on_this_host_that_is_gone(redis_url):
    control = _control(redis_url)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert control.acquire("ingest", f"{gone.pid}:{socket.gethostname()}:{time.time():.3f}:x", wait_seconds=0)
    mine = Holder.new()
    assert control.acquire("ingest", mine.token, wait_seconds=0)
    assert control.holder("ingest").token == mine.token


def test_it_waits_for_a_live_holder_here_and_any_holder_on_another_host(redis_url):
    control = _control(redis_url)
    assert control.acquire("ingest", f"{os.getpid()}:{socket.gethostname()}:{time.time():.3f}:me", wait_seconds=0)
    assert not control.acquire("ingest", Holder.new().token, wait_seconds=0)
    other = _control(redis_url)
    assert other.acquire("sender", f"1:another-host:{time.time():.3f}:x", wait_seconds=0)
    assert not other.acquire("sender", Holder.new().token, wait_seconds=0)
    assert other.holder("sender").describe().startswith("on another-host (pid 1, since ")


def test_it_tells_a_live_holder_from_a_later_process_under_its_pid_whatever_the_wall_clock_did():
    """The wall clock stepped an hour forward since the record was written (NTP's first sync on a box without a
    real-time clock): the record's process is still this live one, not a stale holder whose lock a second
    runedge may free. A record of another process under the same pid (it started at another tick) is stale."""
    mine = Holder.new()
    assert mine.ticks > 0
    fields = mine.token.split(":")
    stepped = ":".join(fields[:2] + [f"{mine.since - 3600:.3f}"] + fields[3:])
    assert Holder.parse(stepped).alive_here() and not Holder.parse(stepped).stale()
    earlier = ":".join(fields[:5] + [str(mine.ticks - 1)])
    assert Holder.parse(earlier).stale() and not Holder.parse(earlier).alive_here()


def test_it_waits_for_a_holder_on_another_machine_of_the_same_name(redis_url):
    """Cloned images and default names give two hosts one name: a holder there whose pid is dead here (or
    another process's) is still alive there, as its machine id says."""
    from edge_app.control import machine_id

    assert Holder.parse(Holder.new().token).machine == machine_id()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    control = _control(redis_url)
    twin = f"{gone.pid}:{socket.gethostname()}:{time.time():.3f}:x:{'0' * 31}1"
    assert control.acquire("ingest", twin, wait_seconds=0)
    assert not Holder.parse(twin).stale()
    assert not control.acquire("ingest", Holder.new().token, wait_seconds=0)
    here = f"{gone.pid}:{socket.gethostname()}:{time.time():.3f}:y:{machine_id()}"  # this machine: gone
    assert control.acquire("sender", here, wait_seconds=0)
    assert control.acquire("sender", Holder.new().token, wait_seconds=0)


def test_it_keeps_its_lock_longer_than_the_longest_step():
    from django.conf import settings

    from edge_app.control import lock_ttl_ms
    from edge_app.sender import ACK_TIMEOUT_MS

    db_wait_ms = settings.DATABASES["default"].get("OPTIONS", {}).get("timeout", 0) * 1000
    for in_flight in (1, 4, 16):
        assert lock_ttl_ms(in_flight) > max(in_flight * ACK_TIMEOUT_MS, db_wait_ms)
