"""Each kind of bad Kafka message is counted and skipped; the good ones around it all arrive."""

import json

import pytest

from edge_app.models import EdgeStatus, WindowAggregate
from tests.conftest import ingest_to_end, produce, reading

T0 = 1_577_142_000_000

BAD_MESSAGES = {
    "not JSON": b"power=12",
    "not UTF-8": b"\xff\xfe\x00",
    "empty": b"",
    "JSON list": b"[1, 2]",
    "missing household": json.dumps({"ts": T0, "power_w": 1.0}).encode(),
    "household a number": json.dumps({"household": 7, "ts": T0, "power_w": 1.0}).encode(),
    "missing ts": json.dumps({"household": "h", "power_w": 1.0}).encode(),
    "ts a string": json.dumps({"household": "h", "ts": str(T0), "power_w": 1.0}).encode(),
    "ts a float": json.dumps({"household": "h", "ts": T0 + 0.5, "power_w": 1.0}).encode(),
    "ts in seconds": json.dumps({"household": "h", "ts": T0 // 1000, "power_w": 1.0}).encode(),
    "ts far future": json.dumps({"household": "h", "ts": 4_102_444_800_000, "power_w": 1.0}).encode(),
    "power a string": json.dumps({"household": "h", "ts": T0, "power_w": "1.0"}).encode(),
    "power NaN": b'{"household": "h", "ts": 1577142000000, "power_w": NaN}',
    "power Infinity": b'{"household": "h", "ts": 1577142000000, "power_w": Infinity}',
    "power negative": json.dumps({"household": "h", "ts": T0, "power_w": -3.0}).encode(),
    "power missing": json.dumps({"household": "h", "ts": T0}).encode(),
}


@pytest.mark.django_db(transaction=True)
def test_it_counts_and_skips_each_bad_message_and_keeps_every_good_one(kafka_bootstrap, topic):
    messages = []
    for i, bad in enumerate(BAD_MESSAGES.values()):
        messages.append(reading("h", T0 + i * 5000, 100.0))
        messages.append(("h", bad))
        messages.append(reading("h", T0 + i * 5000 + 2000, 200.0))
    produce(kafka_bootstrap, topic, messages)

    ingest = ingest_to_end(kafka_bootstrap, topic)

    assert ingest.totals["malformed"] == len(BAD_MESSAGES)
    assert EdgeStatus.objects.get(edge_id="edge-test").malformed == len(BAD_MESSAGES)
    windows = list(WindowAggregate.objects.order_by("window_start").values_list("window_start", "average_w", "readings"))
    assert windows == [(T0 + i * 5000, 150.0, 2) for i in range(len(BAD_MESSAGES))]
