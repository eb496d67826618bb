"""The whole bad-input corpus against one live pipeline, then a normal run: every case refused
clearly, nothing stored from it, and every good window delivered once."""

import json

import pynng
import pytest

from cloud_app.postal import locate
from cloud_app.keys import SHARDS, Keys
from edge_app.link import Heartbeat
from edge_app.models import Status, WindowAggregate
from edge_app.sender import Sender
from fogsite.reconcile import reconcile
from simulation.sources import DataError, read_csv
from tests import corpus
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, deliver, ingest_to_end, produce, reading, refusal,
                            wait_for, write_gem_csv)

T0 = corpus.T0


@pytest.mark.django_db(transaction=True)
def test_it_refuses_every_bad_input_then_delivers_a_normal_run(kafka_client, kafka_bootstrap, topic, redis_url, cloud_prefix,
                                                               redis_client, tmp_path, client, cloud_settings):
    from zoneinfo import ZoneInfo

    keys = Keys(cloud_prefix)
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET, "edge-second": EDGE_SECRET},
                        legacy_edge="legacy").start()
    try:
        for name, (frame, reason) in corpus.FRAMES.items():
            reply = cloud.request(frame, timeout_ms=20000)
            if frame[:3] == b"FOG":
                assert refusal(reply) == reason, name
            else:  # with legacy v1 on, what is not a FOG frame is read as a v1 request
                assert reply.startswith(b"ERROR: "), name
        for name, (frame, reason) in corpus.HEARTBEATS.items():
            assert refusal(cloud.request(frame, data=False)) == reason, name
        bad_rows = [row for row, _ in corpus.V2_TUPLES.values()]
        bad_rows = [(1_000_000 + i,) + row[1:] for i, row in enumerate(bad_rows)]
        codes, reasons = deliver(cloud, bad_rows)
        assert reasons == [reason for _, reason in corpus.V2_TUPLES.values()] and set(codes) == {""}
        with pynng.Req0(dial=cloud.data_addr, recv_timeout=3000) as legacy:
            for name, (request, reply) in corpus.LEGACY_V1.items():
                legacy.send(request)
                answer = legacy.recv()
                assert answer.startswith(reply) and len(answer) <= 200, name  # input is never echoed at length
        assert not redis_client.exists(keys.tuples(EDGE_ID))  # nothing of all that was stored
        assert not redis_client.exists(keys.edge(EDGE_ID))  # no refused heartbeat was recorded
        assert not redis_client.exists(keys.tuples("legacy"))
        assert not any(redis_client.exists(keys.states(shard)) for shard in range(SHARDS))

        for name, (first, second, reasons) in corpus.STORE_REFUSALS.items():
            first = [(2_000_000 + i,) + row[1:] for i, row in enumerate(first)]
            assert deliver(cloud, first, edge="edge-second")[1] == [""] * len(first), name
            assert deliver(cloud, second)[1] == reasons, name
        assert not redis_client.exists(keys.tuples(EDGE_ID))

        for query, status in corpus.API_QUERIES.items():
            assert client.get(query).status_code == status, query

        for name, (line, message) in corpus.CSV_LINES.items():
            path = write_gem_csv(tmp_path / f"{len(name)}-{name.replace(' ', '_')}.csv",
                                 [("2019-12-24 00:00:01", 100), ("2019-12-24 00:00:03", 100)])
            path.write_text(path.read_text() + line + "\n")
            with pytest.raises(DataError, match=rf"{path.name}:5: .*{message}"):
                read_csv(path, ZoneInfo("Europe/Berlin"))

        # The normal run: good readings around every bad Kafka message, through ingest, sender and cloud.
        messages = []
        for i, bad in enumerate(corpus.KAFKA_MESSAGES.values()):
            messages += [reading(f"house-{i % 3}", T0 + i * 5000, 100.0 + i), ("house-x", bad),
                         reading(f"house-{i % 3}", T0 + i * 5000 + 2500, 300.0 + i)]
        # And every bad reading of a batch between two good ones in the same batch.
        for i, bad in enumerate(corpus.BATCH_READINGS.values(), start=len(corpus.KAFKA_MESSAGES)):
            good = [[f"house-{i % 3}", T0 + i * 5000, 100.0 + i], [f"house-{i % 3}", T0 + i * 5000 + 2500, 300.0 + i]]
            messages.append((f"house-{i % 3}", json.dumps({"readings": [good[0], bad, good[1]]}).encode()))
        produce(kafka_bootstrap, topic, messages)
        ingest = ingest_to_end(kafka_bootstrap, topic, edge_id=EDGE_ID)
        windows = len(corpus.KAFKA_MESSAGES) + len(corpus.BATCH_READINGS)
        assert ingest.totals["malformed"] == windows
        assert WindowAggregate.objects.count() == windows

        beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=300)
        sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.data_addr)
        try:
            assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
            sender._link_checked = -1e9
            while sender.handle_one_round():
                pass
        finally:
            beat.close()
            sender.close()
    finally:
        cloud.stop()

    assert WindowAggregate.objects.exclude(status=Status.ACKED).count() == 0
    for tuple_ in WindowAggregate.objects.all():
        assert tuple_.average_w == 200.0 + (tuple_.window_start - T0) // 5000  # (100 + i + 300 + i) / 2
        assert tuple_.postal_code == locate(tuple_.household)[0]
    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert report.ok(strict=True) and report.cloud_tuples == windows
