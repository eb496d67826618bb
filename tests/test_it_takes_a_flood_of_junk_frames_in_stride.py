"""A flood of frames that need no secret to send costs the store a write a round, not a write a frame.

Every junk frame is still answered, counted (in the store about COUNTS_SAVE_SECONDS later) and logged,
but the log says so at most REFUSED_LOG_LINES times a REFUSED_LOG_SECONDS for each edge (or none) and
reason. Both tests run on a Redis of their own: MONITOR and a stopped server would disturb the others.
"""

import threading
import time

import pytest
import redis as redis_lib

from cloud_app.server import COUNTS_SAVE_SECONDS, REFUSED_LOG_LINES
from fogwire import protocol as wire
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, cloud_stats, counted, deliver, make_rows, refusal,
                            wait_for)

JUNK = b"\x00\xffnot a frame at all"
FLOOD = 300


class StoreWrites:
    """The HINCRBY commands Redis runs on keys under `prefix` while in its `with` block (MONITOR)."""

    def __init__(self, redis_url, prefix):
        self.client, self.prefix = redis_lib.Redis.from_url(redis_url), prefix
        self.marker = f"{prefix}end-of-watch"
        self.seen, self.ready = [], threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        with self.client.monitor() as monitor:
            self.ready.set()
            for command in monitor.listen():
                text = command["command"]
                if self.marker in text:
                    return
                if text.upper().startswith("HINCRBY") and self.prefix in text:
                    self.seen.append(text)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.client.get(self.marker)
        self.thread.join(10)
        self.client.close()


@pytest.fixture
def own_cloud(own_redis):
    """A cloud on a Redis of the test's own, and a client of that Redis."""
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    cloud = CloudThread(url, "test:flood:", {EDGE_ID: EDGE_SECRET}).start()
    client = redis_lib.Redis.from_url(url)
    yield cloud, url, client
    cloud.stop()
    client.close()


def _refused_lines(caplog, *words):
    return [r for r in caplog.records if "refused" in r.getMessage() and all(w in r.getMessage() for w in words)]


def test_it_counts_a_flood_of_junk_frames_in_a_write_a_round(own_cloud, caplog):
    cloud, url, client = own_cloud
    with caplog.at_level("WARNING", logger="fog.cloud"), StoreWrites(url, cloud.prefix) as writes:
        began = time.monotonic()
        for i in range(FLOOD):
            assert refusal(cloud.request(JUNK, data=bool(i % 2))) == wire.R_BAD_FRAME  # every one answered
        assert counted(lambda: cloud_stats(client, cloud.prefix), f"refused:{wire.R_BAD_FRAME}", FLOOD,
                       timeout=5 * COUNTS_SAVE_SECONDS)
        took = time.monotonic() - began
    assert 1 <= len(writes.seen) <= took / COUNTS_SAVE_SECONDS + 2, (took, writes.seen)
    assert 1 <= len(_refused_lines(caplog)) <= REFUSED_LOG_LINES
    assert cloud.server.counts[f"refused:{wire.R_BAD_FRAME}"] == FLOOD
    codes, reasons = deliver(cloud, make_rows(3, "after-the-flood"))  # the edges' batches go on
    assert reasons == [""] * 3 and all(len(code) == 5 for code in codes)


def test_it_limits_the_lines_of_a_replayed_frame_without_hiding_them_behind_junk(own_cloud, caplog):
    """A replayed heartbeat is a known edge's frame, but anyone on the path can send it again."""
    cloud, _, _ = own_cloud
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET)
    assert wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    with caplog.at_level("WARNING", logger="fog.cloud"):
        for _ in range(2 * REFUSED_LOG_LINES):  # junk first: its lines are used up
            assert refusal(cloud.request(JUNK, data=False)) == wire.R_BAD_FRAME
        for _ in range(5 * REFUSED_LOG_LINES):
            assert refusal(cloud.request(beat, data=False)) == wire.R_REPLAYED
    assert len(_refused_lines(caplog, "edge ?")) == REFUSED_LOG_LINES
    assert len(_refused_lines(caplog, f"edge {EDGE_ID}", wire.R_REPLAYED)) == REFUSED_LOG_LINES


def test_it_limits_the_lines_of_a_replayed_batch_with_a_refused_tuple(own_cloud, caplog):
    cloud, _, _ = own_cloud
    rows = make_rows(2, "replayed")
    rows[1] = (*rows[1][:4], -3.0, rows[1][5])  # a negative power: refused, whatever the frame
    batch = wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)
    with caplog.at_level("WARNING", logger="fog.cloud"):
        for _ in range(3 * REFUSED_LOG_LINES):
            assert wire.read_reply(cloud.request(batch), batch, EDGE_SECRET, 2)[1] == ["", wire.R_NEGATIVE]
    assert len(_refused_lines(caplog, f"edge {EDGE_ID}", "1 of 2 tuples", wire.R_NEGATIVE)) == REFUSED_LOG_LINES


def test_it_keeps_the_counts_redis_could_not_take_for_a_later_round(own_redis, own_cloud):
    cloud, _, client = own_cloud
    own_redis.down(lambda line: None)
    for _ in range(3):
        assert refusal(cloud.request(JUNK)) == wire.R_BAD_FRAME
    assert counted(lambda: cloud.server.counts, f"refused:{wire.R_BAD_FRAME}", 3)
    time.sleep(2 * COUNTS_SAVE_SECONDS)  # rounds that found Redis away
    assert cloud.server.unsaved[f"refused:{wire.R_BAD_FRAME}"] == 3
    own_redis.up(lambda line: None)
    assert counted(lambda: cloud_stats(client, cloud.prefix), f"refused:{wire.R_BAD_FRAME}", 3,
                   timeout=10 * COUNTS_SAVE_SECONDS)
    assert wait_for(lambda: not cloud.server.unsaved, 5)
