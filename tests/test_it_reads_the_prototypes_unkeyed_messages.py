"""`runedge --legacy-input`: the original prototype's Kafka adapter sends `{"node_id": "...", "power_value": W}`
with no key and no time field. Kafka spreads such messages over every partition; the edge takes the record
timestamp as event time, merges the partitions in time order, and stores exactly the windows a keyed
stream would give."""

import json
import time

import pytest
from kafka import KafkaProducer

from cloud_app.keys import Keys
from edge_app.ingest import Ingestor
from edge_app.readings import MalformedReading, parse_message, parse_reading
from edge_app.merge import PartitionMerge
from edge_app.windows import WindowBook
from tests.conftest import child_env, edge_cloud, edge_db, run_manage

T0 = 1_577_142_000_000
NODES, SECONDS = 6, 240
BAD = [b'{"node_id": "n-bad", "power_value": "high"}', b'{"power_value": 10.0}', b"not json"]


def power(node, second):
    return float(100 * node + second % 7)


def test_it_windows_unkeyed_prototype_messages_by_their_record_time(kafka_bootstrap, topic, edge_env, redis_url,
                                                                    cloud_prefix, redis_client):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for second in range(SECONDS):
        for node in range(NODES):
            value = json.dumps({"node_id": f"n-{node}", "power_value": power(node, second)}).encode()
            producer.send(topic, value=value, timestamp_ms=T0 + second * 1000)  # no key, as the prototype sends
        if second % 60 == 30:
            producer.send(topic, value=BAD[second // 60 % len(BAD)], timestamp_ms=T0 + second * 1000)
    producer.flush(60)
    producer.close()

    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    try:
        result = run_manage("runedge", "--burst", "--legacy-input", "--timeout", "120", "--topic", topic, "-v", "0",
                            env=child_env(edge_env), timeout=180)
    finally:
        cloud.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    windows = SECONDS // 5
    assert f"this run: readings={NODES * SECONDS} windows={NODES * windows} late=0 malformed=4 " \
           f"acked={NODES * windows} refused=0;" in result.stdout, result.stdout + result.stderr[-3000:]
    assert "pending=0" in result.stdout.split("lifetime:")[1], result.stdout

    with edge_db(edge_env) as db:
        stored = {(h, ws): (avg, n) for h, ws, avg, n in db.execute(
            "select household, window_start, average_w, readings from edge_app_windowaggregate")}
        partitions = db.execute("select count(*) from edge_app_ingestposition").fetchone()[0]
    expected = {(f"n-{node}", T0 + w * 5000): (sum(power(node, s) for s in range(w * 5, w * 5 + 5)) / 5, 5)
                for node in range(NODES) for w in range(windows)}
    assert stored == expected
    assert partitions == 3  # the messages really were spread over every partition
    assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env["FOG_EDGE_ID"])) == NODES * windows


def test_it_releases_partitions_in_time_order_only_up_to_the_slowest():
    merge = PartitionMerge()
    merge.add(0, [(t, (offset, "p0")) for offset, t in enumerate((1, 5, 9, 20))])
    merge.add(1, [(t, (offset, "p1")) for offset, t in enumerate((2, 3))])
    # Partition 1 may have more to read: nothing past its newest time (3) is safe yet.
    assert merge.release(lagging=[0, 1]) == [(0, (0, "p0")), (1, (0, "p1")), (1, (1, "p1"))]
    merge.add(1, [(10, (2, "p1"))])
    assert merge.release(lagging=[0, 1]) == [(0, (1, "p0")), (0, (2, "p0")), (1, (2, "p1"))]
    assert merge.read_to == {0: 4, 1: 3}
    # Caught up everywhere: the rest goes out.
    assert merge.release(lagging=[]) == [(0, (3, "p0"))]


def test_it_counts_a_prototype_message_in_a_record_without_a_timestamp_as_malformed():
    # A record of Kafka's oldest message format has no timestamp (-1): the prototype's message then has no
    # time at all. It is set aside like any malformed reading, and the merge still orders it.
    with pytest.raises(MalformedReading, match="without a timestamp"):
        parse_reading(b'{"node_id": "a", "power_value": 1}', 1_577_142_000_000, -1)
    merge = PartitionMerge()
    merge.add(0, [(-1, (0, "stampless")), (7, (1, "p0"))])
    merge.add(1, [(5, (0, "p1"))])
    assert merge.release(lagging=[]) == [(0, (0, "stampless")), (1, (0, "p1")), (0, (1, "p0"))]


def test_it_resumes_every_partition_a_window_has_readings_from():
    book = WindowBook(5000, 2000, 60)
    book.add("n", T0, 1.0, 0, 40, 0.0)
    book.add("n", T0 + 1000, 1.0, 2, 17, 0.0)
    book.add("n", T0 + 2000, 1.0, 2, 18, 0.0)
    assert book.resume_offsets({0: 41, 1: 9, 2: 19}) == {0: 40, 1: 9, 2: 17}


def _burst(topic, bootstrap):
    """An ingest of unkeyed input from where the last one stopped to the broker's end, as `runedge --burst
    --legacy-input` runs it; (whether it got there, the ingest)."""
    ingest = Ingestor(edge_id="edge-legacy", topic=topic, bootstrap=bootstrap, window_seconds=5, grace_seconds=2,
                      idle_seconds=600, legacy=True)
    ingest.connect()
    try:
        end, deadline = ingest.end_offsets(), time.monotonic() + 15
        while not ingest.at_end(end) and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=100)
        ingest.finish()
        return ingest.at_end(end), ingest
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_reads_on_after_a_restart_when_a_partition_it_had_read_to_its_end_got_nothing(kafka_client,
                                                                                          kafka_bootstrap, topic):
    """The merge releases readings only up to the slowest partition that may still hold some. After a restart
    it knew nothing of where a partition already read to its end stood, so one that got nothing new held the
    others back for ever (confluent-kafka tells no position before it gives a record)."""
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(partition, node, first):
        for second in range(first, first + 10):
            producer.send(topic, json.dumps({"node_id": node, "power_value": 100.0}).encode(), partition=partition,
                          timestamp_ms=T0 + second * 1000)
        producer.flush()

    send(0, "n-a", 0)
    send(1, "n-b", 0)
    assert _burst(topic, kafka_bootstrap)[0]
    send(0, "n-a", 100)  # partitions 1 and 2 get nothing more
    reached, ingest = _burst(topic, kafka_bootstrap)
    producer.close()
    assert reached, ingest.next_offsets
    assert ingest.totals["readings"] == 10


def test_it_says_which_flag_reads_a_message_read_with_the_wrong_one():
    # A whole topic read with the wrong flag is set aside message by message: each line must say how to mend it.
    now = 1_577_142_000_000
    with pytest.raises(MalformedReading, match="without --legacy-input"):
        parse_message(b'{"readings": [["h", 1577142000000, 1.0]]}', now, legacy_ts=now)
    with pytest.raises(MalformedReading, match="without --legacy-input"):
        parse_reading(b'{"household": "h", "ts": 1577142000000, "power_w": 1.0}', now, now)
    with pytest.raises(MalformedReading, match="with `runedge --legacy-input`"):
        parse_message(b'{"node_id": "a", "power_value": 1}', now)
