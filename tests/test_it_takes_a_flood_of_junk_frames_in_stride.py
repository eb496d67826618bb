"""A flood of frames that need no secret to send costs the store a write a round, not a write a frame.

Every junk frame is still answered, counted (in the store within COUNTS_SAVE_SECONDS) and logged, but
the log says so at most REFUSED_LOG_LINES times a REFUSED_LOG_SECONDS.
"""

import threading
import time

import redis as redis_lib

from cloud_app.server import COUNTS_SAVE_SECONDS, REFUSED_LOG_LINES
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, cloud_stats, counted, deliver, make_rows, refusal

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


def test_it_counts_a_flood_of_junk_frames_in_a_write_a_round(cloud, redis_url, redis_client, caplog):
    with caplog.at_level("WARNING", logger="fog.cloud"), StoreWrites(redis_url, cloud.prefix) as writes:
        began = time.monotonic()
        for i in range(FLOOD):
            assert refusal(cloud.request(JUNK, data=bool(i % 2))) == wire.R_BAD_FRAME  # every one answered
        assert counted(lambda: cloud_stats(redis_client, cloud.prefix), f"refused:{wire.R_BAD_FRAME}", FLOOD,
                       timeout=5 * COUNTS_SAVE_SECONDS)
        took = time.monotonic() - began
    assert 1 <= len(writes.seen) <= took / COUNTS_SAVE_SECONDS + 2, (took, writes.seen)
    assert 1 <= len([r for r in caplog.records if "refused" in r.getMessage()]) <= REFUSED_LOG_LINES
    assert cloud.server.counts[f"refused:{wire.R_BAD_FRAME}"] == FLOOD

    # A known edge's own refusal is not lost in the flood's lines, and its batches go on.
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET)
    assert wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    caplog.clear()
    with caplog.at_level("WARNING", logger="fog.cloud"):
        assert refusal(cloud.request(beat, data=False)) == wire.R_REPLAYED
    assert any(EDGE_ID in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    codes, reasons = deliver(cloud, make_rows(3, "after-the-flood"))
    assert reasons == [""] * 3 and all(len(code) == 5 for code in codes)


def test_it_keeps_the_counts_redis_could_not_take_for_a_later_round(own_redis):
    prefix = "test:away:"
    cloud = CloudThread(f"redis://127.0.0.1:{own_redis.port}/0", prefix, {EDGE_ID: EDGE_SECRET}).start()
    try:
        own_redis.down(lambda line: None)
        for _ in range(3):
            assert refusal(cloud.request(JUNK)) == wire.R_BAD_FRAME
        assert counted(lambda: cloud.server.counts, f"refused:{wire.R_BAD_FRAME}", 3)
        time.sleep(2 * COUNTS_SAVE_SECONDS)  # rounds that found Redis away
        assert cloud.server.unsaved[f"refused:{wire.R_BAD_FRAME}"] == 3
        own_redis.up(lambda line: None)
        client = redis_lib.Redis.from_url(f"redis://127.0.0.1:{own_redis.port}/0")
        try:
            assert counted(lambda: cloud_stats(client, prefix), f"refused:{wire.R_BAD_FRAME}", 3,
                           timeout=10 * COUNTS_SAVE_SECONDS)
        finally:
            client.close()
    finally:
        cloud.stop()
    assert not cloud.server.unsaved
